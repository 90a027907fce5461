"""The cohort plan (utils/cohort.py, `python -m utils.course plan`): weeks, prerequisites, GPU needs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from utils import cohort
from utils.course import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def entries() -> list[cohort.Entry]:
    return cohort.course_entries(ROOT)


@pytest.mark.parametrize("weeks", [10, 12])
def test_every_notebook_comes_once_in_order_and_after_its_prerequisites(entries, weeks):
    plan = cohort.pace(entries, weeks)
    assert len(plan) == weeks and all(plan)  # no empty week
    assert [e.name for week in plan for e in week] == [e.name for e in entries]
    week_of = {e.name: w for w, chosen in enumerate(plan) for e in chosen}
    assert all(week_of[p] <= week_of[e.name] for e in entries for p in e.prerequisites)
    hours = [sum(e.hours for e in week) for week in plan]
    assert max(hours) < 2 * sum(hours) / weeks  # balanced: no week twice the average


def test_prerequisites_are_read_from_the_notebooks_and_forward_links_are_not(entries):
    by_number = {e.number: e for e in entries}
    assert by_number["00.00"].prerequisites == []  # "none — ... [01 · Python for ML] covers what you need"
    assert "01_deep_learning/02_pytorch_fundamentals.ipynb" in by_number["01.03"].prerequisites
    graph = cohort.mermaid_graph(entries)
    assert graph.startswith("```mermaid\nflowchart LR") and "n01_02 --> n01_03" in graph
    assert sum(len(e.prerequisites) for e in entries) == graph.count(" --> ")


def test_the_gpu_rule_reads_the_code_and_the_measured_laptop_time():
    moves = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("model = model.to(device)")])
    stays = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("device = get_device()")])
    assert cohort.gpu_at_full(moves, 120.0) == "yes"
    assert cohort.gpu_at_full(moves, 20.0) == "helps"
    assert cohort.gpu_at_full(moves, None) == "not measured"
    assert cohort.gpu_at_full(stays, 500.0) == "no"


@pytest.mark.parametrize("weeks", [0, 1000, 2.5, True])
def test_a_bad_number_of_weeks_is_refused(entries, weeks):
    with pytest.raises(ValueError, match="--weeks must be a whole number"):
        cohort.pace(entries, weeks)


def test_the_plan_command_writes_a_pacing_table_and_states_its_estimates(tmp_path, capsys):
    out = tmp_path / "plan.md"
    assert main(["plan", "--weeks", "10", "--out", str(out)]) == 0
    text = out.read_text()
    assert "estimates, not measurements" in text and cohort.LEARNER_RULE in text
    assert sum(line.startswith(f"| {w} | ") for w in range(1, 11) for line in text.splitlines()) >= 10
    assert "| 11 | " not in text.split("## Every notebook")[0]
    assert "```mermaid" in text and "GPU at full" in text
    assert "10-week cohort plan" in capsys.readouterr().out
