"""00.06 · Probability and statistics: the Monte-Carlo spread of the experiment exercise follows sd/√n.

The notebook's definitions are imported without running it (utils.notebooks.notebook_definitions).
"""

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "00_prerequisites" / "06_probability_and_statistics.ipynb"


@pytest.fixture(scope="module")
def nb():
    ns = notebook_definitions(NOTEBOOK, solutions=True)
    ns.setdefault("p_params", (0.0, 1.0))  # section 6's p = N(0, 1) and q = N(1, 1.5²)
    ns.setdefault("q_params", (1.0, 1.5))
    return ns


@pytest.mark.parametrize("n", [50, 400, 3_000])
def test_mc_kl_spread_is_sd_over_root_n(nb, n):
    x = np.random.default_rng(0).normal(*nb["p_params"], 1_000_000)
    sd = np.std(stats.norm.logpdf(x, *nb["p_params"]) - stats.norm.logpdf(x, *nb["q_params"]))
    # 200 repeats: the measured spread is itself uncertain by about 1/√400 = 5 %; allow 20 %.
    assert nb["mc_kl_spread"](n) == pytest.approx(sd / np.sqrt(n), rel=0.2)
