"""The gradebook of `python -m utils.course grade`: a CSV, a summary table and a plot per exercise.

    gradebook.csv   one row per student, notebook and exercise: status, passed (1/0), how the run ended
    summary.md      per notebook and exercise: how many students passed; then per student their score
    summary.png     the share of students who passed each exercise
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from utils.grading import STATUSES, Graded

COLUMNS = ("student", "notebook", "exercise", "status", "passed", "run_ended", "seconds", "flags")


def gradebook_rows(results: list[Graded]) -> list[dict]:
    """One row per student, notebook and exercise (one row with exercise 0 for an unknown notebook)."""
    rows = []
    for r in results:
        common = {"student": r.student, "notebook": r.notebook, "run_ended": r.ended,
                  "seconds": f"{r.seconds:.1f}", "flags": "; ".join(r.flags)}
        statuses = r.exercises or ["missing"]
        for number, status in enumerate(statuses, start=1 if r.exercises else 0):
            rows.append({**common, "exercise": number, "status": status, "passed": int(status == "passed")})
    return rows


def exercise_table(results: list[Graded]) -> dict[tuple[str, int], list[int]]:
    """{(notebook, exercise): [passed, submitted]} over the known notebooks."""
    table: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for r in results:
        for number, status in enumerate(r.exercises, start=1):
            table[(r.notebook, number)][0] += status == "passed"
            table[(r.notebook, number)][1] += 1
    return dict(sorted(table.items()))


def summary_markdown(results: list[Graded]) -> str:
    """The two tables of summary.md: per exercise, then per student and notebook."""
    lines = ["# Gradebook summary", "", "| notebook | exercise | passed | of | share |", "|---|---|---|---|---|"]
    for (notebook, number), (passed, total) in exercise_table(results).items():
        lines.append(f"| {notebook} | {number} | {passed} | {total} | {passed / total:.0%} |")
    lines += ["", "| student | notebook | score | statuses | run | seconds |", "|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r.student, r.notebook)):
        counts = ", ".join(f"{r.exercises.count(s)} {s}" for s in STATUSES if r.exercises.count(s))
        lines.append(f"| {r.student} | {r.notebook} | {r.score}/{len(r.exercises)} | {counts or '—'} "
                     f"| {r.ended} | {r.seconds:.0f} |")
    flagged = [(r.student, r.notebook, flag) for r in results for flag in r.flags]
    if flagged:
        lines += ["", "Answers that redefine a check (read them before trusting the score):", ""]
        lines += [f"- {student}, {notebook}: {flag}" for student, notebook, flag in flagged]
    return "\n".join(lines) + "\n"


def plot_summary(results: list[Graded], path: Path) -> None:
    """A horizontal bar per exercise: the share of its submissions that passed."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window: the grader may run on a server
    import matplotlib.pyplot as plt

    table = exercise_table(results)
    labels = [f"{notebook.split('/')[-1].removesuffix('.ipynb')} · ex {number}" for notebook, number in table]
    shares = [passed / total for passed, total in table.values()]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(labels) + 1.2))
    ax.barh(labels[::-1], shares[::-1], color="tab:green")
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of submissions whose self-check passed")
    ax.set_title(f"{len({r.student for r in results})} students, {len(results)} notebooks")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: list[Graded], out: Path) -> None:
    """Write gradebook.csv, summary.md and summary.png (when any exercise was graded) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gradebook.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(gradebook_rows(results))
    (out / "summary.md").write_text(summary_markdown(results), encoding="utf-8")
    if exercise_table(results):
        plot_summary(results, out / "summary.png")
