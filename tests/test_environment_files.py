"""The install files agree: requirements.txt, environment.yml, pyproject.toml, Makefile, CI."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)")


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = PIN.match(line.strip())
        if match:
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def requirements() -> dict[str, str]:
    return _pins((ROOT / "requirements.txt").read_text().splitlines())


def test_every_requirement_is_pinned_exactly():
    lines = [l.strip() for l in (ROOT / "requirements.txt").read_text().splitlines()]
    loose = [l for l in lines if l and not l.startswith("#") and not PIN.match(l)]
    assert not loose, f"unpinned requirements (use name==version): {loose}"
    assert {"torch", "transformers", "nbval", "pytest", "jupyterlab"} <= set(requirements())


def test_environment_yml_installs_the_same_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_pins, req_pins = _pins(pip_section), requirements()
    only_req = {k: v for k, v in req_pins.items() if conda_pins.get(k) != v}
    only_env = {k: v for k, v in conda_pins.items() if req_pins.get(k) != v}
    assert not only_req and not only_env, (
        f"requirements.txt and environment.yml disagree.\n  requirements.txt only: {only_req}\n"
        f"  environment.yml only: {only_env}")
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.split("=")[-1] in ("3.11", "3.12")


def test_pyproject_states_python_and_keeps_torch_out_of_the_colab_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11,<3.13"
    colab = " ".join(project["optional-dependencies"]["colab"])
    assert "torch" not in colab, "the Colab extra must never reinstall Colab's torch"
    assert project["urls"]["Repository"].startswith("https://github.com/")


def test_colab_extra_versions_are_compatible_with_the_pins():
    # The extra uses lower bounds; every bound must be satisfied by our own pins.
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = requirements()
    for spec in project["optional-dependencies"]["colab"]:
        req = Requirement(spec)
        pinned = pins.get(req.name.lower().replace("_", "-"))
        assert pinned, f"{req.name} is in the colab extra but not pinned in requirements.txt"
        assert req.specifier.contains(pinned), f"{spec} excludes our pin {req.name}=={pinned}"


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make test$", ci, flags=re.MULTILINE), ".ci/run must call `make test`"
    assert "make test" in readme and "make lab" in readme


def test_makefile_builds_the_venv_once_and_offline_tests():
    makefile = (ROOT / "Makefile").read_text()
    assert "$(INSTALLED): requirements.txt pyproject.toml" in makefile, "the venv must be rebuilt only on change"
    for flag in ("COURSE_PRESET=smoke", "HF_HUB_OFFLINE=1", "OMP_NUM_THREADS=1", "pytest tests 0[0-5]_*/"):
        assert flag in makefile, f"make test is missing {flag}"
    assert "ServerApp.ip=127.0.0.1" in makefile, "JupyterLab must listen on loopback only"


def test_secrets_are_ignored_and_the_example_holds_no_value():
    assert re.search(r"^\.env$", (ROOT / ".gitignore").read_text(), flags=re.MULTILINE)
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert line.split("=", 1)[1].strip() == "", f".env.example must not hold a value: {line}"
