"""Launch a script on several local processes with `torchrun` or `accelerate launch`, and always clean up.

Introduced in 05_frontier/08_distributed_training.ipynb. A notebook cannot be a torch.distributed worker itself:
every rank is its own process, started by a launcher. This module builds the launcher's command line (one
machine, rendezvous on 127.0.0.1, a free port) and runs it the way the course runs every child process:
  1. in its own process group, so that the launcher AND the workers it forks can be stopped together;
  2. with a timeout: when it passes (or the cell is interrupted) the whole group gets SIGTERM, then SIGKILL;
  3. with one thread per worker (`OMP_NUM_THREADS=1`: two processes × two threads on two cores thrash), the
     gloo backend bound to the loopback interface, and `utils` importable by the workers.
`load_script` imports the same script into the notebook, so the notebook and the workers share one definition.

Known limit (torch 2.14): the rendezvous store that torchrun starts (a TCPStore on the master port) listens on every
interface while a run lasts, whatever `--master_addr` says (pytorch/pytorch#173909); gloo's own connections stay on
the loopback interface. On a shared network, run behind a firewall or on a machine without open ports.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import types
from collections.abc import Sequence
from pathlib import Path

from utils.servers import HOST

LOOPBACK_INTERFACE = "lo0" if sys.platform == "darwin" else "lo"  # gloo's sockets stay on this machine


def _check_processes(nproc: int) -> None:
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive int (processes on this machine); got {nproc!r}")


def torchrun_command(script: Path | str, nproc: int, port: int, args: Sequence[str] = ()) -> list[str]:
    """The `torchrun --nproc_per_node nproc` command for one machine (the same as `python -m torch.distributed.run`)."""
    _check_processes(nproc)
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
            f"--master_addr={HOST}", f"--master_port={port}", str(script), *map(str, args)]


def accelerate_command(script: Path | str, nproc: int, port: int, args: Sequence[str] = ()) -> list[str]:
    """The `accelerate launch` command for `nproc` processes on one machine.

    `--multi_gpu` is accelerate's name for "start one process per device with torchrun"; on a CPU-only machine the
    script must create `Accelerator(cpu=True)`, which then joins them with gloo (accelerate 1.15; with `--cpu` alone
    it would start a single process, as multi-process CPU there means mpirun).
    """
    _check_processes(nproc)
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", f"--num_processes={nproc}",
            "--num_machines=1", f"--main_process_ip={HOST}", f"--main_process_port={port}",
            "--mixed_precision=no", "--dynamo_backend=no", str(script), *map(str, args)]


def worker_environment(threads: int = 1) -> dict[str, str]:
    """This process's environment plus what the workers need: threads per process, loopback gloo, `utils`."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1; got {threads!r}")
    course_root = str(Path(__file__).resolve().parents[1])  # the folder that holds the `utils` package
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": LOOPBACK_INTERFACE,
            "PYTHONPATH": course_root + (os.pathsep + path if path else "")}


def _stop_group(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM to the launcher's whole process group, SIGKILL after `grace` seconds if anything is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return  # the group is gone already
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_launcher(command: Sequence[str], timeout: float, *, threads: int = 1, cwd: Path | str | None = None) -> str:
    """Run a launcher command to the end and return its output (stdout and stderr, interleaved).

    Raises RuntimeError with the output's tail if it fails, TimeoutError if it runs past `timeout` seconds;
    in both cases, and on an interrupt, no process of the group is left running.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive seconds; got {timeout!r}")
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                               env=worker_environment(threads), start_new_session=True)  # its own process group
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(process)
        output, _ = process.communicate()
        raise TimeoutError(f"the launcher ran past {timeout} s and was stopped. Its last output:\n"
                           f"{_tail(output)}") from None
    except BaseException:  # KeyboardInterrupt (the notebook's stop button) and anything else: stop them all
        _stop_group(process)
        raise
    finally:
        _stop_group(process)  # workers that outlived a finished launcher, if any
    if process.returncode != 0:
        raise RuntimeError(f"the launcher exited with code {process.returncode}. Its last output:\n{_tail(output)}")
    return output


def _tail(text: str | None, lines: int = 40) -> str:
    return "\n".join((text or "").splitlines()[-lines:]) or "(no output)"


def load_script(path: Path | str, name: str | None = None) -> types.ModuleType:
    """Import a Python file as a module (without running its `if __name__ == "__main__":` block)."""
    path = Path(path)
    if path.suffix != ".py" or not path.is_file():
        raise ValueError(f"path must be an existing .py file; got {str(path)!r}")
    name = name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    spec.loader.exec_module(module)
    return module
