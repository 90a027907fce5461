"""utils.distributed: the launcher command lines, running a launcher (output, failure, timeout) without leaving a
process behind, the workers' environment, and importing a script without running its main block."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from utils import distributed
from utils.distributed import (
    accelerate_command,
    load_script,
    run_launcher,
    torchrun_command,
    worker_environment,
)
from utils.servers import free_port


def _gone(pid: int, wait: float = 10.0) -> bool:
    """True once `pid` no longer runs (a zombie waiting for its parent counts as gone)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def test_torchrun_command_is_one_machine_on_loopback(tmp_path):
    command = torchrun_command(tmp_path / "train.py", nproc=2, port=29999, args=["--steps", 3])
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in command and "--nnodes=1" in command
    assert "--master_addr=127.0.0.1" in command and "--master_port=29999" in command
    assert command[-3:] == [str(tmp_path / "train.py"), "--steps", "3"]


def test_accelerate_command_starts_processes_with_torchrun(tmp_path):
    command = accelerate_command(tmp_path / "train.py", nproc=3, port=29998)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in command and "--num_processes=3" in command  # --multi_gpu: accelerate's torchrun path
    assert "--main_process_ip=127.0.0.1" in command and command[-1] == str(tmp_path / "train.py")


@pytest.mark.parametrize("nproc", [0, -1, 2.0, "2"])
def test_bad_process_counts_are_refused(nproc, tmp_path):
    with pytest.raises(ValueError, match="nproc"):
        torchrun_command(tmp_path / "x.py", nproc=nproc, port=1)
    with pytest.raises(ValueError, match="nproc"):
        accelerate_command(tmp_path / "x.py", nproc=nproc, port=1)


def test_worker_environment_sets_threads_loopback_and_utils(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    env = worker_environment(threads=1)
    course_root = str(Path(distributed.__file__).resolve().parents[1])
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["GLOO_SOCKET_IFNAME"] in ("lo", "lo0")
    assert env["PYTHONPATH"].split(os.pathsep) == [course_root, "/somewhere"]
    with pytest.raises(ValueError, match="threads"):
        worker_environment(threads=0)


def test_run_launcher_runs_torchrun_workers_that_all_reduce(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent("""
        import os
        import torch, torch.distributed as dist
        dist.init_process_group("gloo")
        t = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(t)
        print(f"rank {dist.get_rank()} of {dist.get_world_size()}: sum {t.item():.0f}, "
              f"threads {os.environ['OMP_NUM_THREADS']}", flush=True)
        dist.destroy_process_group()
    """))
    output = run_launcher(torchrun_command(script, nproc=2, port=free_port()), timeout=120)
    assert "rank 0 of 2: sum 3, threads 1" in output and "rank 1 of 2: sum 3, threads 1" in output


def test_run_launcher_reports_a_failing_script(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("print('about to fail', flush=True)\nraise SystemExit(3)\n")
    with pytest.raises(RuntimeError, match=r"code 3(.|\n)*about to fail"):
        run_launcher([sys.executable, str(script)], timeout=60)


def test_run_launcher_timeout_stops_the_whole_process_group(tmp_path):
    """A launcher that hangs, with a child of its own (as torchrun has workers): both are stopped."""
    pid_file = tmp_path / "child.pid"
    script = tmp_path / "hangs.py"
    script.write_text(textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(120)
    """))
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="ran past 3 s"):
        run_launcher([sys.executable, str(script)], timeout=3)
    assert time.monotonic() - start < 30
    assert pid_file.exists(), "the child had not started: the test proves nothing"
    assert _gone(int(pid_file.read_text())), "the launcher's child survived the timeout"


def test_run_launcher_refuses_a_non_positive_timeout():
    with pytest.raises(ValueError, match="timeout"):
        run_launcher([sys.executable, "-c", "pass"], timeout=0)


def test_load_script_imports_without_running_main(tmp_path):
    script = tmp_path / "lesson_mod.py"
    script.write_text("def double(x):\n    return 2 * x\n\nif __name__ == '__main__':\n    raise SystemExit('ran')\n")
    module = load_script(script)
    assert module.double(21) == 42 and module.__name__ == "lesson_mod"
    with pytest.raises(ValueError, match=".py"):
        load_script(tmp_path / "missing.py")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=".py"):
        load_script(tmp_path / "notes.txt")
