"""utils.notebooks.notebook_definitions: a notebook's functions and classes, without running it."""

import nbformat
import pytest

from utils.notebooks import notebook_definitions


def _notebook(tmp_path, *cells):
    nb = nbformat.v4.new_notebook()
    for source, tags in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


def test_runs_definitions_only(tmp_path):
    path = _notebook(
        tmp_path,
        ("import math\nfrom dataclasses import dataclass\nprint('setup ran')\nSEED = seed_everything(0)", ["setup"]),
        ("@dataclass(frozen=True)\nclass Config:\n    n: int\ncfg = Config(3)\nraise RuntimeError('training')",
         ["parameters"]),
        ("%matplotlib inline\ndef double(x):\n    return 2 * x\nTABLE = {'double': double}\nPAD, BOS = 0, 1\nZ = X @ W", []),
        ("def late(n=cfg.n):\n    return n", []),
        ("# Hint: ...\ndef exercise():\n    return 1", ["solution"]),
    )
    ns = notebook_definitions(path)
    assert (ns["PAD"], ns["BOS"]) == (0, 1), "tuple constants count too"
    assert ns["double"](4) == 8 and ns["TABLE"]["double"] is ns["double"]
    assert ns["Config"](5).n == 5 and ns["math"].pi > 3
    assert "cfg" not in ns and "SEED" not in ns, "assignments that compute (calls) must not run"
    assert "exercise" not in ns, "solution cells are left out by default"
    assert set(ns["__skipped__"]) == {"late", "Z = X @ W"}, ns["__skipped__"]
    assert notebook_definitions(path, solutions=True)["exercise"]() == 1


def test_syntax_errors_are_reported(tmp_path):
    with pytest.raises(SyntaxError):
        notebook_definitions(_notebook(tmp_path, ("def broken(:\n    pass", [])))
