"""The README's two commands: `make lab` serves JupyterLab on loopback, and a second run installs nothing.

These run only inside the course's own .venv (which `make test` creates), because they call `make`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_COURSE_VENV = Path(sys.prefix).resolve() == (ROOT / ".venv").resolve()
pytestmark = pytest.mark.skipif(not IN_COURSE_VENV, reason="needs the .venv that `make test` builds")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_second_install_has_nothing_to_do():
    # `make -q` asks whether the target is up to date without running anything: exit 0 means yes.
    result = subprocess.run(["make", "-q", "install"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, "make install would reinstall although nothing changed"


def test_make_lab_serves_jupyterlab_on_loopback_with_the_course_kernel(tmp_path):
    port, token = _free_port(), "course-test-token"
    args = f"--no-browser --ServerApp.port={port} --IdentityProvider.token={token}"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    lab = subprocess.Popen(["make", "lab", f"LAB_ARGS={args}"], cwd=ROOT, env=env, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline, last_error = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/api/kernelspecs?token={token}", timeout=5) as r:
                    specs = r.read().decode()
                break
            except OSError as error:
                last_error = error
                assert lab.poll() is None, f"make lab exited early:\n{lab.stdout.read()}"
                time.sleep(1)
        else:
            pytest.fail(f"JupyterLab did not answer on {base} within 90 s: {last_error}")
        assert "genai-course" in specs, "the course kernel is not registered"
        with urllib.request.urlopen(f"{base}/lab?token={token}", timeout=10) as r:
            assert r.status == 200 and "JupyterLab" in r.read().decode()
        # Loopback only: the server must not listen on other addresses.
        with socket.socket() as s:
            s.settimeout(2)
            outside = socket.gethostbyname(socket.gethostname())
            if not outside.startswith("127."):
                assert s.connect_ex((outside, port)) != 0, "JupyterLab listens beyond 127.0.0.1"
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
