"""The course's command line: `python -m utils.course {stamp,release,run,times,list,grade,plan}` (or `course ...`).

    stamp [--check] [NB ...]     write the shared badge + Colab setup block into notebooks
    release [--out DIR]          the student release: solutions become stubs, self-checks move to utils/
    run NB ... | --all           execute notebooks headless at a preset, print wall times
    times [--check]              copy benchmarks/times.json into module READMEs and notebooks
    list                         every notebook with its title
    grade SUBMISSIONS/           run students' notebooks in a sandbox; a gradebook (utils/grading.py)
    plan [--weeks 12]            the cohort plan docs/cohort_plan.md from the measured times (utils/cohort.py)

`--root DIR`, given before the command, points it at another checkout (tests use a temporary one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from utils import notebooks as nbs
from utils import stored_checks, student
from utils.notebook_runs import print_table, record_times, run_notebooks
from utils.runtime import PRESETS, repo_root, setting

TIMES_FILE = Path("benchmarks") / "times.json"
RELEASE_MARKER = ".student-release"  # marks a folder `release` wrote, so a later release may replace it


# --- stamp, release, list ------------------------------------------------------------------------


def stamp(root: Path, paths: list[Path], check: bool = False) -> list[str]:
    """Stamp badge and setup block into `paths`; returns the notebooks that were (or would be) changed."""
    url, changed = nbs.repository_url(), []
    for path in paths:
        name = nbs.relative_name(path, root)
        nb = nbs.stamp_notebook(nbs.read_notebook(path), name, url)
        text = nbs.notebook_text(nb)
        if path.read_text(encoding="utf-8") != text:
            changed.append(name)
            if not check:
                nbs.write_if_changed(path, text)
    return changed


def _edited_notebooks(out: Path) -> list[str]:
    """The notebooks of the release in `out` that changed since `release` wrote them (a student's work)."""
    try:
        written = json.loads((out / RELEASE_MARKER).read_text(encoding="utf-8")).get("notebooks", {})
    except json.JSONDecodeError:  # a marker from before the fingerprints: nothing to compare with
        return []
    return sorted(name for name, digest in written.items() if (out / name).is_file()
                  and hashlib.sha256((out / name).read_bytes()).hexdigest() != digest)


def release(root: Path, out: Path, colab_url: str | None = None) -> tuple[int, int]:
    """Build the student release in `out`; returns (notebooks, exercises stubbed).

    Every notebook with its solutions stubbed and its self-checks moved to utils/self_checks/, the module
    READMEs, `utils`, the install files, and a README and Makefile written for students
    (utils/templates/student/). Its badges and Colab installs point at the branch nbs.STUDENT_BRANCH of the
    repository `colab_url` (default: pyproject's), where a workflow publishes it. A release whose notebooks a
    student has edited is never replaced.
    """
    if out.resolve() == root.resolve():
        raise ValueError(f"--out {out} is the course itself: its notebooks would be replaced by stubs.")
    url = colab_url or nbs.repository_url()
    nbs.github_slug(url)  # a clear error for a bad URL before anything is written
    if out.is_dir() and any(out.iterdir()):
        if not (out / RELEASE_MARKER).is_file():
            raise ValueError(f"--out {out} is a folder that is not a student release; choose a new or empty one.")
        if edited := _edited_notebooks(out):
            raise ValueError(f"{out} holds your work: {', '.join(edited)} changed since the release was written. "
                             "Copy your notebooks elsewhere (or release to another --out), then run it again.")
        shutil.rmtree(out)  # an older release: replaced whole, so no stale notebook or file survives
    notebooks, exercises, written = nbs.find_notebooks(root), 0, {}
    for path in notebooks:
        name = nbs.relative_name(path, root)
        copy, checks = student.student_notebook(nbs.read_notebook(path), name, url)
        written[name] = nbs.notebook_text(copy)
        nbs.write_if_changed(out / name, written[name])
        if checks:
            stored = out / "utils" / stored_checks.CHECKS_DIR / f"{name.removesuffix('.ipynb')}.py"
            nbs.write_if_changed(stored, stored_checks.checks_file(name.removesuffix(".ipynb"), checks))
        exercises += len(checks)
    student.copy_course_files(root, out)
    student.write_student_files(root, out, url)
    marker = {"note": "Written by `python -m utils.course release`; the next release replaces this folder "
                      "unless a notebook changed since (its SHA-256 is below).",
              "notebooks": {n: hashlib.sha256(t.encode()).hexdigest() for n, t in written.items()}}
    (out / RELEASE_MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    return len(notebooks), exercises


# --- times ---------------------------------------------------------------------------------------


def update_times(root: Path, times_file: Path, check: bool = False) -> list[str]:
    """Copy `times_file` into module READMEs and notebook Run-time lines; returns what changed."""
    if not times_file.is_file():  # writing "not measured" everywhere would wipe the published times
        raise ValueError(f"no recorded times at {times_file}: record some first with "
                         "`python -m utils.course run --all --record`.")
    times = json.loads(times_file.read_text(encoding="utf-8"))
    changed = []
    for readme in nbs.module_readmes(root):
        old = readme.read_text(encoding="utf-8")
        new = nbs.update_readme(old, times, readme.parent.name)
        if new != old:
            changed.append(nbs.relative_name(readme, root))
            if not check:
                readme.write_text(new, encoding="utf-8")
    for path in nbs.find_notebooks(root):
        name = nbs.relative_name(path, root)
        nb = nbs.read_notebook(path)
        text = nbs.runtime_text(times.get(name, {}))
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = nbs.RUNTIME_LINE.sub(lambda m: f"{m[1]} {text}", cell.source)
        new = nbs.notebook_text(nb)
        if new != path.read_text(encoding="utf-8"):
            changed.append(name)
            if not check:
                nbs.write_if_changed(path, new)
    return changed


# --- the command line ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m utils.course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None, help="course checkout (default: this one)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{stamp,release,run,times,list,grade,plan}")
    p = sub.add_parser("stamp", help="write the Colab badge and setup block into notebooks")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if any notebook is stale")
    p.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook")
    p = sub.add_parser("release", help="the student release: solutions stubbed, ready for `make lab`")
    p.add_argument("--out", type=Path, default=None, help="default: build/student")
    p.add_argument("--colab-url", default=None, metavar="URL",
                   help=f"GitHub repository the release is published to, on branch {nbs.STUDENT_BRANCH}: "
                        "its badges and Colab installs point there (default: pyproject's Repository)")
    p = sub.add_parser("run", help="execute notebooks headless and time them")
    p.add_argument("notebooks", nargs="*", type=Path)
    p.add_argument("--all", action="store_true", help="every notebook of the course")
    p.add_argument("--preset", choices=PRESETS, default=setting("COURSE_PRESET").lower() or "smoke",
                   help="default: COURSE_PRESET from the environment or .env, else smoke")
    p.add_argument("--out", type=Path, default=None, help="default: build/executed/<preset>")
    p.add_argument("--record", action="store_true", help="save the times in benchmarks/times.json")
    p.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (default 600)")
    p.add_argument("--times-file", type=Path, default=None, help="default: benchmarks/times.json")
    p = sub.add_parser("times", help="write recorded times into READMEs and notebooks")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if anything is stale")
    p.add_argument("--times-file", type=Path, default=None, help="default: benchmarks/times.json")
    sub.add_parser("list", help="every notebook with its title")
    p = sub.add_parser("grade", help="run submitted notebooks in a sandbox and write a gradebook")
    p.add_argument("submissions", type=Path, help="a folder: SUBMISSIONS/<student>/<course notebook file>")
    p.add_argument("--out", type=Path, default=None, help="default: build/grades")
    p.add_argument("--preset", choices=PRESETS, default="smoke", help="default: smoke")
    p.add_argument("--time-limit", type=float, default=600, help="seconds per notebook (default 600)")
    p.add_argument("--memory-gib", type=float, default=8, help="memory per kernel (default 8)")
    p.add_argument("--cache", type=Path, default=None, help="a read-only COURSE_CACHE (docs/instructors.md)")
    p.add_argument("--no-sandbox", action="store_true", help="run as yourself, with network: trusted notebooks only")
    p = sub.add_parser("plan", help="the cohort plan: pacing, prerequisites graph, GPU needs")
    p.add_argument("--weeks", type=int, default=12, help="course length in weeks (default 12)")
    p.add_argument("--out", type=Path, default=None, help="default: docs/cohort_plan.md")
    return parser


def _notebook_paths(root: Path, given: list[Path]) -> list[Path]:
    """The notebooks named on the command line (checked to exist), or every notebook."""
    missing = [str(p) for p in given if not p.is_file()]
    if missing:
        raise ValueError(f"no such notebook: {', '.join(missing)}")
    return [p.resolve() for p in given] if given else nbs.find_notebooks(root)


def _cmd_stamp(args: argparse.Namespace, root: Path) -> int:
    paths = _notebook_paths(root, args.notebooks)
    changed = stamp(root, paths, check=args.check)
    for name in changed:
        print(f"{'out of date' if args.check else 'stamped'}: {name}")
    if args.check and changed:
        print("run `python -m utils.course stamp` to update them.")
        return 1
    print(f"{len(paths) - len(changed)} of {len(paths)} notebooks were already up to date.")
    return 0


def _cmd_run(args: argparse.Namespace, root: Path) -> int:
    if args.all == bool(args.notebooks):
        raise ValueError("give notebook paths or --all (not both, not neither).")
    paths = nbs.find_notebooks(root) if args.all else _notebook_paths(root, args.notebooks)
    results = run_notebooks(root, paths, args.preset, args.out, args.timeout)
    print_table(results)
    if args.record:
        times_file = args.times_file or root / TIMES_FILE
        record_times(results, times_file)
        print(f"recorded in {times_file}; `python -m utils.course times` copies them into the READMEs.")
    return 0 if all(r.ok for r in results) else 1


def _cmd_times(args: argparse.Namespace, root: Path) -> int:
    changed = update_times(root, args.times_file or root / TIMES_FILE, check=args.check)
    for name in changed:
        print(f"{'out of date' if args.check else 'updated'}: {name}")
    if args.check and changed:
        print("run `python -m utils.course times` to update them.")
        return 1
    return 0


def _cmd_release(args: argparse.Namespace, root: Path) -> int:
    out = args.out or root / "build" / "student"
    notebooks, exercises = release(root, out, args.colab_url)
    print(f"released {notebooks} notebooks ({exercises} exercises stubbed) to {out}")
    print(f"a student opens it with `make lab` in {out} (its README.md says more).")
    return 0


def _cmd_list(args: argparse.Namespace, root: Path) -> int:
    paths = nbs.find_notebooks(root)
    width = max([len(nbs.relative_name(p, root)) for p in paths] + [0])
    for path in paths:
        print(f"{nbs.relative_name(path, root):<{width}}  {nbs.notebook_title(nbs.read_notebook(path))}")
    return 0


def _cmd_grade(args: argparse.Namespace, root: Path) -> int:
    from utils.grading import grade

    out = args.out or root / "build" / "grades"
    results = grade(root, args.submissions, out, preset=args.preset, time_limit=args.time_limit,
                    memory_gib=args.memory_gib, cache=args.cache, use_sandbox=not args.no_sandbox)
    print(f"graded {len(results)} notebooks: {out / 'gradebook.csv'}, summary.md, summary.png")
    return 0


def _cmd_plan(args: argparse.Namespace, root: Path) -> int:
    from utils.cohort import write_plan

    out = args.out or root / "docs" / "cohort_plan.md"
    write_plan(root, out, args.weeks)
    print(f"wrote the {args.weeks}-week cohort plan to {out}")
    return 0


COMMANDS = {"stamp": _cmd_stamp, "release": _cmd_release, "run": _cmd_run, "times": _cmd_times,
            "list": _cmd_list, "grade": _cmd_grade, "plan": _cmd_plan}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m utils.course` and of the `course` script; returns the exit code."""
    args = _parser().parse_args(argv)
    root = (args.root or repo_root()).resolve()
    try:
        return COMMANDS[args.command](args, root)
    except ValueError as err:  # our own clear messages: print them without a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
