"""benchmarks/per_sample_grads.py: every method computes the same DP gradient, and the table is relative to SGD."""

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "per_sample_grads.py"
spec = importlib.util.spec_from_file_location("per_sample_grads_benchmark", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_loop_grads_are_per_sample():
    x, y = torch.randn(5, bench.D_IN), torch.randint(0, 10, (5,))
    from utils.privacy import per_sample_grads

    for a, b in zip(bench.loop_grads(bench.mlp(8), x, y).values(), per_sample_grads(bench.mlp(8), x, y).values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_short_run_checks_and_times_each_method(capsys: pytest.CaptureFixture[str]):
    rows = bench.main(["--widths", "8", "--batches", "6", "--repeats", "2"])
    assert [r["method"] for r in rows] == list(bench.METHODS) and all(r["ms_per_step"] > 0 for r in rows)
    assert capsys.readouterr().out.strip().splitlines()[-4].startswith("| 8 | 6 | sgd |")


def test_markdown_divides_by_plain_sgd_and_unknown_methods_fail():
    rows = [dict(method="sgd", width=4, batch=2, ms_per_step=2.0), dict(method="vmap", width=4, batch=2, ms_per_step=5.0)]
    assert bench.markdown(rows).splitlines()[-1] == "| 4 | 2 | vmap | 5.00 | 2.5 |"
    with pytest.raises(ValueError, match="sgd, loop, vmap, opacus"):
        bench.step_fn("jax", 4, torch.zeros(2, bench.D_IN), torch.zeros(2, dtype=torch.long))
