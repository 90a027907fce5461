"""The GitHub workflows (.github/workflows/) are valid and do what the README says.

Nothing here can run GitHub itself. What can be checked offline is checked: each workflow against GitHub's
workflow schema with check-jsonschema (a real workflow linter, pinned in requirements.txt, whose copy of the
schema ships inside it), a broken workflow is shown to fail that check, actions are pinned by version, and the
jobs run the commands the README names. actionlint, where it is installed, checks them too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))


def lint(path: Path) -> subprocess.CompletedProcess:
    """check-jsonschema against GitHub's workflow schema; returncode 0 when valid."""
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def load(name: str) -> dict:
    # PyYAML reads the key `on:` as True (YAML 1.1); give it its name back.
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    return {("on" if key is True else key): value for key, value in data.items()}


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_there_are_the_two_workflows():
    assert [p.name for p in FILES] == ["publish.yml", "test.yml"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_workflow_passes_the_workflow_linter(path):
    done = lint(path)
    assert done.returncode == 0, f"{path.name} is not a valid workflow:\n{done.stdout}{done.stderr}"
    if shutil.which("actionlint"):  # the stricter linter, where someone installed it
        done = subprocess.run(["actionlint", str(path)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("old, new", [
    ("  push:\n  pull_request:\n", "  pushed:\n"),  # no such event
    ("run: bash .ci/run", "rnu: bash .ci/run"),  # a misspelt step key
    ("contents: read", "contents: maybe"),  # no such permission level
    ("timeout-minutes: 120", "timeout-minutes: two hours"),
    ("      options: --cap-add", "      option: --cap-add"),  # a misspelt container key
], ids=["unknown-event", "misspelt-step-key", "bad-permission", "timeout-not-a-number", "misspelt-key"])
def test_the_linter_fails_a_broken_workflow(tmp_path, old, new):
    text = (WORKFLOWS / "test.yml").read_text(encoding="utf-8")
    assert old in text
    bad = tmp_path / "broken.yml"
    bad.write_text(text.replace(old, new), encoding="utf-8")
    assert lint(bad).returncode != 0


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_version(path):
    uses = [step["uses"] for step in steps(load(path.name)) if "uses" in step]
    assert uses
    loose = [u for u in uses if not re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})", u)]
    assert not loose, f"actions not pinned by version: {loose}"


def test_every_push_runs_make_test_as_ci_does():
    workflow = load("test.yml")
    assert set(workflow["on"]) == {"push", "pull_request"}
    assert "branches" not in (workflow["on"]["push"] or {})  # every branch
    assert [s["run"] for s in steps(workflow) if "run" in s] == ["bash .ci/run"]
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_main_publishes_the_site_and_the_student_edition():
    workflow = load("publish.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    jobs = workflow["jobs"]
    runs = {name: "\n".join(s.get("run", "") for s in job.get("steps", [])) for name, job in jobs.items()}
    uses = {name: [s.get("uses", "") for s in job.get("steps", [])] for name, job in jobs.items()}
    assert "make -j2 site" in runs["site"] and any(u.startswith("actions/upload-pages-artifact@") for u in uses["site"])
    assert any(u.startswith("actions/deploy-pages@") for u in uses["deploy-site"])
    assert jobs["deploy-site"]["permissions"] == {"pages": "write", "id-token": "write"}
    assert "python -m utils.course release --out build/student" in runs["student"]
    assert "git push --quiet origin student" in runs["student"]
    assert workflow["permissions"] == {"contents": "read"}  # write access only where a job needs it
    assert jobs["student"]["permissions"] == {"contents": "write"}


def test_the_readme_says_the_workflows_cannot_run_here():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ".github/workflows/" in text and "cannot be run outside GitHub" in text
