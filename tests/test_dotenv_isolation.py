"""The test suite is immune to a developer's own .env (tests/conftest.py), kernels it starts included."""

from __future__ import annotations

import os
import subprocess
import sys

from utils import runtime


def test_the_suite_reads_no_dotenv_in_this_process_or_its_children():
    assert os.environ.get("COURSE_DOTENV") == os.devnull
    assert runtime.dotenv_path() == runtime.Path(os.devnull) and not runtime.dotenv_path().is_file()
    # A notebook kernel or subprocess inherits the setting, so it ignores the repo's .env as well.
    code = "from utils import runtime; print(runtime.dotenv_path().is_file(), runtime.setting('COURSE_OFFLINE'))"
    env = {k: v for k, v in os.environ.items() if k != "COURSE_OFFLINE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["False"]
