"""Start a local HTTP server in a subprocess, wait until it answers, and always stop it again.

Notebooks and tests start the course's servers (the LLM server, the chatbot app) with `background_server`.
It binds nothing itself: the server command gets a free port on 127.0.0.1, and the context manager
  1. starts it in its own process group, its output going to a log file (a full pipe would block it);
  2. polls a health URL until it answers 200, failing fast — with the log's tail — if the process dies;
  3. on exit sends SIGTERM (a clean shutdown), then SIGKILL after a grace period, and waits until the
     port is free again, so nothing is left running or listening.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

HOST = "127.0.0.1"  # loopback only: the course never serves beyond this machine


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:`port` and it could be bound."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def non_loopback_address() -> str | None:
    """This machine's own address on its default route (for tests that a server is NOT reachable there).

    A UDP "connect" sends no packet; it only makes the OS choose the interface. None without a network.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            address = socket.gethostbyname(socket.gethostname())
    return None if address.startswith("127.") else address


def _log_tail(log: Path, lines: int = 30) -> str:
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def _wait_healthy(process: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    """Poll `url` until it answers 200; raise with the server's log if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was ready. "
                               f"Its last output:\n{_log_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"the server did not answer {url} within {timeout:.0f} s. Its last output:\n"
                       f"{_log_tail(log)}")


def stop_process(process: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds, and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):  # children that outlived their parent
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def background_server(argv: list[str], port: int, health_path: str = "/health", *,
                      env: dict[str, str] | None = None, timeout: float = 180) -> Iterator[subprocess.Popen]:
    """Run `argv` (a server that will listen on 127.0.0.1:`port`) until the `with` block ends."""
    if not health_path.startswith("/"):
        raise ValueError(f"health_path must start with '/'; got {health_path!r}.")
    with tempfile.TemporaryDirectory(prefix="course-server-") as folder:
        log = Path(folder) / "server.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            _wait_healthy(process, f"http://{HOST}:{port}{health_path}", log, timeout)
            yield process
        finally:
            stop_process(process)
            deadline = time.monotonic() + 10
            while not port_is_free(port) and time.monotonic() < deadline:
                time.sleep(0.1)


def keep_open(manager: contextlib.AbstractContextManager[T]) -> tuple[T, Callable[[], None]]:
    """Enter `manager` now; return (its value, stop). For notebooks, whose cells cannot share a `with` block.

    stop() exits the manager once (later calls do nothing); it also runs when Python exits, so a kernel
    that is restarted or shut down never leaves the server behind.
    """
    value, done = manager.__enter__(), []

    def stop() -> None:
        if not done:
            done.append(True)
            atexit.unregister(stop)
            manager.__exit__(None, None, None)

    atexit.register(stop)
    return value, stop


def exit_when_orphaned(interval: float = 1.0) -> None:
    """SIGTERM this process (a clean shutdown) once the process that started it is gone.

    A server a notebook started must not outlive the kernel: a kernel killed before it could stop its server
    leaves the server re-parented (its parent pid changes), and this watch then shuts it down within `interval`.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="exit-when-orphaned", daemon=True).start()
