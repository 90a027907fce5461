"""benchmarks/distributed_ddp.py: its Markdown table and one short run (1 and 2 torchrun processes)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "distributed_ddp.py"
spec = importlib.util.spec_from_file_location("distributed_ddp_benchmark", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_markdown_reports_the_speed_up_against_one_process():
    rows = [dict(width=128, parameters=26_122, batch=256, nproc=2, ms_one=4.0, ms_ddp=5.0, launch_one_s=6.0,
                 launch_ddp_s=9.5)]
    table = bench.markdown(rows).splitlines()
    assert len(table) == 3 and "ideal 2×" in table[0]
    assert "| 0.80× |" in table[2] and "| 6.0 · 9.5 |" in table[2] and "| 26,122 |" in table[2]


@pytest.mark.slow
def test_a_short_run_measures_one_and_two_processes(capsys: pytest.CaptureFixture[str]):
    rows = bench.main(["--widths", "16", "--batch", "8", "--steps", "3", "--warmup", "1"])
    assert len(rows) == 1 and rows[0]["ms_one"] > 0 and rows[0]["ms_ddp"] > 0
    assert rows[0]["launch_ddp_s"] > 0 and rows[0]["parameters"] == 16 * 64 + 16 + 16 * 16 + 16 + 160 + 10
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[0])["width"] == 16 and lines[-1].startswith("| 16 |")
