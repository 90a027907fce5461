"""benchmarks/char_gpt.py: trains utils.models.gpt on a text file and reports figures that make sense."""

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "char_gpt.py"
spec = importlib.util.spec_from_file_location("char_gpt", SCRIPT)
char_gpt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(char_gpt)

TINY = ["--steps", "80", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
        "--batch-size", "8", "--eval-batches", "4", "--lr", "1e-2", "--device", "cpu"]


def test_learns_a_tiny_text(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. " * 100, encoding="utf-8")
    result = char_gpt.main(["--text", str(text), *TINY])
    vocabulary = len(set(text.read_text()))
    assert result["steps"] == 80 and result["tokens_per_second"] > 0
    assert result["val_loss"] < 0.5 * math.log(vocabulary), "a repeated sentence should be learned well below chance"
    assert capsys.readouterr().out.strip().startswith("{"), "the result line is JSON on stdout"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        char_gpt.main(["--text", str(tmp_path / "missing.txt"), *TINY])
