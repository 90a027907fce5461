"""benchmarks/quantization.py: its Markdown table and one short run on the real packaged model."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quantization.py"
spec = importlib.util.spec_from_file_location("quantization_benchmark", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_markdown_reports_the_change_against_the_first_row():
    rows = [dict(format="a", bits_per_weight=32, block_weights_mb=424.7, perplexity=10.0, tokens_per_s=20.0),
            dict(format="b", bits_per_weight=4.5, block_weights_mb=59.7, perplexity=12.5, tokens_per_s=9.0)]
    table = bench.markdown(rows).splitlines()
    assert len(table) == 4 and "+0.0 %" in table[2] and "+25.0 %" in table[3] and "| 60 MB |" in table[3]


@pytest.mark.slow
def test_a_short_run_measures_each_row(capsys: pytest.CaptureFixture[str]):
    rows = bench.main(["--tokens", "128", "--window", "64", "--new-tokens", "2", "--methods", "fp32", "q3_g32"])
    assert [r["method"] for r in rows] == ["fp32", "q3_g32"]
    assert rows[0]["bits_per_weight"] == 32 and rows[1]["bits_per_weight"] == pytest.approx(3.594, abs=1e-3)
    assert rows[1]["perplexity"] > rows[0]["perplexity"] > 1 and all(r["tokens_per_s"] > 0 for r in rows)
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-5])["method"] == "q3_g32" and lines[-1].startswith("| 3-bit")
