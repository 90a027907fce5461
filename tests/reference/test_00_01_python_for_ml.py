"""00.01 · Python for ML: the batch generators keep their promise on many sizes and seeds.

The notebook checks one awkward size; these checks guard the code on random sizes, seeds and batch sizes
(moved out of the notebook by issue 18, item 18). The definitions are imported without running it.
"""

import math
import random
from pathlib import Path

import numpy as np
import pytest

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "00_prerequisites" / "01_python_for_ml.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


def test_one_shuffled_pass_gives_every_index_once_in_full_batches(nb):
    rng = random.Random(0)
    for seed in range(200):
        n, batch_size = rng.randint(1, 200), rng.randint(1, 64)
        idx = list(nb["batch_indices"](n, batch_size, shuffle=True, seed=seed))
        assert sorted(i for batch in idx for i in batch) == list(range(n)), (n, batch_size, seed)
        assert len(idx) == math.ceil(n / batch_size)
        assert all(len(b) == batch_size for b in idx[:-1]) and 1 <= len(idx[-1]) <= batch_size


def test_batches_pair_each_row_with_its_target_in_the_sampled_order(nb):
    rows = [[float(i), float(-i)] for i in range(23)]
    targets = [i % 3 for i in range(23)]
    ds = nb["TabularDatasetV3"](rows, targets, ["a", "b", "c"])
    for shuffle in (False, True):
        order = [i for b in nb["batch_indices"](23, 5, shuffle, seed=3) for i in b]
        got = [(x, t) for xs, ts in nb["batches"](ds, 5, shuffle=shuffle, seed=3) for x, t in zip(xs, ts)]
        assert got == [(rows[i], targets[i]) for i in order]


def test_a_bad_batch_size_is_refused_at_the_first_next(nb):
    lazy = nb["batch_indices"](10, 0)
    with pytest.raises(ValueError, match="batch_size must be at least 1; got 0"):
        next(lazy)


def test_the_standard_scaler_solution_matches_numpy(nb):
    rows = np.random.default_rng(0).normal(3.0, 2.0, size=(30, 4)).tolist()
    z = nb["StandardScaler"]().fit(rows).transform(rows)
    x = np.array(rows)
    assert np.allclose(z, (x - x.mean(0)) / x.std(0), rtol=1e-12, atol=1e-12)
