"""The cohort plan: `python -m utils.course plan --weeks 12` writes docs/cohort_plan.md for instructors.

From the course itself: the notebooks in course order, each one's **Prerequisites** line (the links to earlier
notebooks), its exercises, its words, and the run times measured in benchmarks/times.json. Learner hours are an
ESTIMATE by the rule in LEARNER_RULE, never a measurement; the weeks then take consecutive notebooks, so every
prerequisite comes no later than the notebook that needs it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from utils import notebooks as nbs

WORDS_PER_MINUTE = 100  # careful reading of technical prose with equations: half of ordinary reading speed
MINUTES_PER_CODE_CELL = 2  # read it, run it, look at what it printed
MINUTES_PER_EXERCISE = 30
RUNS_PER_LEARNER = 2  # a learner runs a notebook about twice at `laptop`: once through, once after edits
GPU_LAPTOP_SECONDS = 60  # a notebook that already trains this long at `laptop` wants a GPU at `full`
LEARNER_RULE = (f"reading: markdown words / {WORDS_PER_MINUTE} per minute; {MINUTES_PER_CODE_CELL} min per code "
                f"cell; {MINUTES_PER_EXERCISE} min per exercise; {RUNS_PER_LEARNER} × the measured `laptop` run "
                "time (the `smoke` time where `laptop` is not measured yet)")
GPU_RULE = (f"**yes** when the notebook moves models or tensors to the device of `get_device()` "
            f"(`.to(device)`, `device=device`) and its measured `laptop` run already takes ≥ {GPU_LAPTOP_SECONDS} s "
            "(`full` trains several times longer: on a CPU, an hour or more); **helps** when it moves work to the "
            f"device but runs in under {GPU_LAPTOP_SECONDS} s at `laptop`; **no** when it moves nothing there. "
            "A rule read from the code, to be replaced by measured `full` times when they exist")
LINK = re.compile(r"\]\(([^)\s]+\.ipynb)\)")
TO_DEVICE = re.compile(r"\.to\(\s*device\b|\bdevice\s*=\s*(?:str\()?device\b")


@dataclass
class Entry:
    """One notebook as the plan sees it."""

    name: str  # e.g. 01_deep_learning/02_pytorch_fundamentals.ipynb
    number: str  # e.g. 01.02
    title: str
    prerequisites: list[str]  # names of earlier notebooks
    exercises: int
    hours: float  # estimated learner hours (LEARNER_RULE)
    smoke: float | None  # measured seconds
    laptop: float | None
    gpu: str  # yes / helps / no (GPU_RULE)


def prerequisites(nb, path: Path, root: Path) -> list[str]:
    """The earlier notebooks linked in the paragraph that starts with **Prerequisites**.

    A link to a later notebook there is a pointer ("01 covers what you need"), not a prerequisite.
    """
    for cell in nb.cells:
        if cell.cell_type == "markdown" and "**Prerequisites**" in cell.source:
            paragraph = cell.source.split("**Prerequisites**", 1)[1].split("\n\n", 1)[0]
            links = [(path.parent / link).resolve() for link in LINK.findall(paragraph)]
            names = {nbs.relative_name(p, root) for p in links if p.is_file()}
            return sorted(n for n in names if n < nbs.relative_name(path, root))  # course order is name order
    return []


def learner_hours(nb, run_seconds: float | None) -> float:
    """The estimate of LEARNER_RULE, in hours."""
    words = sum(len(c.source.split()) for c in nb.cells if c.cell_type == "markdown")
    code = sum(c.cell_type == "code" for c in nb.cells)
    exercises = sum("solution" in nbs.cell_tags(c) for c in nb.cells)
    minutes = (words / WORDS_PER_MINUTE + MINUTES_PER_CODE_CELL * code + MINUTES_PER_EXERCISE * exercises
               + RUNS_PER_LEARNER * (run_seconds or 0) / 60)
    return minutes / 60


def gpu_at_full(nb, laptop_seconds: float | None) -> str:
    """yes / helps / no, by GPU_RULE."""
    if not any(c.cell_type == "code" and TO_DEVICE.search(c.source) for c in nb.cells):
        return "no"
    if laptop_seconds is None:
        return "not measured"
    return "yes" if laptop_seconds >= GPU_LAPTOP_SECONDS else "helps"


def course_entries(root: Path) -> list[Entry]:
    """Every notebook of the course at `root`, in course order."""
    times_file = root / "benchmarks" / "times.json"
    times = json.loads(times_file.read_text(encoding="utf-8")) if times_file.is_file() else {}
    entries = []
    for path in nbs.find_notebooks(root):
        name, nb = nbs.relative_name(path, root), nbs.read_notebook(path)
        measured = {preset: times.get(name, {}).get(preset, {}).get("seconds") for preset in ("smoke", "laptop")}
        entries.append(Entry(
            name, f"{path.parent.name[:2]}.{path.name[:2]}", nbs.notebook_title(nb).split(" · ", 1)[-1],
            prerequisites(nb, path, root),
            sum("solution" in nbs.cell_tags(c) for c in nb.cells),
            learner_hours(nb, measured["laptop"] or measured["smoke"]), measured["smoke"], measured["laptop"],
            gpu_at_full(nb, measured["laptop"])))
    return entries


def pace(entries: list[Entry], weeks: int) -> list[list[Entry]]:
    """Consecutive notebooks per week, balanced by estimated hours: each goes to the week its midpoint falls in."""
    if isinstance(weeks, bool) or not isinstance(weeks, int) or not 1 <= weeks <= len(entries):
        raise ValueError(f"--weeks must be a whole number from 1 to {len(entries)} (one notebook a week at "
                         f"least); got {weeks!r}.")
    total, done, plan = sum(e.hours for e in entries), 0.0, [[] for _ in range(weeks)]
    for entry in entries:
        week = min(int((done + entry.hours / 2) / total * weeks), weeks - 1)
        plan[week].append(entry)
        done += entry.hours
    return plan


def _time(seconds: float | None) -> str:
    return nbs.format_seconds(seconds) or "not measured"


def _node(entry: Entry) -> str:
    return "n" + entry.number.replace(".", "_")


def mermaid_graph(entries: list[Entry]) -> str:
    """The prerequisites as a Mermaid flowchart (GitHub and the course site draw it), one box per module."""
    by_name, lines = {e.name: e for e in entries}, ["```mermaid", "flowchart LR"]
    for module in sorted({e.name.split("/")[0] for e in entries}):
        lines.append(f'  subgraph m{module[:2]} ["{module}"]')
        lines += [f'    {_node(e)}["{e.number} {e.title.replace(chr(34), "#quot;")}"]'
                  for e in entries if e.name.startswith(module + "/")]
        lines.append("  end")
    lines += [f"  {_node(by_name[p])} --> {_node(e)}" for e in entries for p in e.prerequisites if p in by_name]
    return "\n".join(lines + ["```"])


def plan_markdown(entries: list[Entry], weeks: int) -> str:
    """docs/cohort_plan.md: the weeks, every notebook with its needs, the prerequisites graph."""
    plan = pace(entries, weeks)
    week_of = {e.name: w for w, chosen in enumerate(plan, start=1) for e in chosen}
    late = [f"{e.number} needs {p}" for e in entries for p in e.prerequisites if week_of.get(p, 0) > week_of[e.name]]
    total = sum(e.hours for e in entries)
    lines = [f"# A {weeks}-week cohort plan", "",
             f"Written by `python -m utils.course plan --weeks {weeks}` from the notebooks and "
             "`benchmarks/times.json`; run it again after the course or its times change (any number of weeks).", "",
             f"**Learner hours are estimates, not measurements.** The rule: {LEARNER_RULE}. "
             f"For the whole course that gives about {total:.0f} hours, {total / weeks:.1f} a week. "
             "Run times are measured on 2 CPU cores (`smoke`, `laptop`); `full` is not measured yet.", "",
             f"**GPU at full** — {GPU_RULE}. At `smoke` and `laptop` every notebook runs on a CPU.", "",
             "| week | notebooks | est. learner hours | measured laptop run time | GPU at full |",
             "|---|---|---|---|---|"]
    for week, chosen in enumerate(plan, start=1):
        gpus = [e.number for e in chosen if e.gpu == "yes"]
        laptop, unmeasured = sum(e.laptop or 0 for e in chosen), sum(e.laptop is None for e in chosen)
        laptop_text = _time(laptop) + (f" + {unmeasured} not measured" if unmeasured else "")
        lines.append(f"| {week} | {', '.join(f'{e.number} {e.title}' for e in chosen) or '—'} "
                     f"| {sum(e.hours for e in chosen):.1f} | {laptop_text} | {', '.join(gpus) or 'no'} |")
    lines += ["", "## Every notebook", "",
              "| notebook | week | prerequisites | exercises | est. hours | smoke | laptop | GPU at full |",
              "|---|---|---|---|---|---|---|---|"]
    number = {e.name: e.number for e in entries}
    for e in entries:
        needs = ", ".join(number.get(p, p) for p in e.prerequisites) or "none"
        lines.append(f"| [{e.number} {e.title}](../{e.name}) | {week_of[e.name]} | {needs} | {e.exercises} "
                     f"| {e.hours:.1f} | {_time(e.smoke)} | {_time(e.laptop)} | {e.gpu} |")
    lines += ["", "## Prerequisites", "",
              "An arrow runs from a notebook to one that names it in its **Prerequisites** line.", "",
              mermaid_graph(entries)]
    if late:
        lines += ["", f"Warning: a prerequisite comes in a later week: {'; '.join(late)}."]
    return "\n".join(lines) + "\n"


def write_plan(root: Path, out: Path, weeks: int) -> None:
    """Write the cohort plan for `weeks` weeks to `out`."""
    text = plan_markdown(course_entries(root), weeks)
    out.parent.mkdir(parents=True, exist_ok=True)
    nbs.write_if_changed(out, text)
