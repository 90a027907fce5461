"""Time every course notebook at one preset: `python benchmarks/run_notebooks.py --preset smoke [--record]`.

A thin wrapper around `python -m utils.course run --all`: the same function runs the notebooks, so a
benchmark and a `make run` measure the same thing. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.course import TIMES_FILE
from utils.notebook_runs import print_table, record_times, run_notebooks
from utils.notebooks import find_notebooks
from utils.runtime import PRESETS, repo_root


def main(argv: list[str] | None = None) -> int:
    """Run every notebook at `--preset`, print the table, `--record` the times; exit 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=PRESETS, default="smoke")
    parser.add_argument("--record", action="store_true", help=f"save the times in {TIMES_FILE}")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    parser.add_argument("--out", type=Path, default=None, help="executed copies (default build/executed/<preset>)")
    args = parser.parse_args(argv)

    root = repo_root()
    results = run_notebooks(root, find_notebooks(root), args.preset, args.out, args.timeout)
    print_table(results)
    print(f"total: {sum(r.seconds for r in results):.1f} s for {len(results)} notebooks")
    if args.record:
        record_times(results, root / TIMES_FILE)
        print(f"recorded in {TIMES_FILE}; now run `make times` to update the READMEs and notebooks.")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
