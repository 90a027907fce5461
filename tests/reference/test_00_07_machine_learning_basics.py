"""00.07 · Machine-learning basics: k-fold CV from scratch == scikit-learn for every model of the notebook.

The notebook checks the folds and two models' fold scores; this file checks the rest, on odd sizes too.
The notebook's definitions are imported without running it (utils.notebooks.notebook_definitions).
"""

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "00_prerequisites" / "07_machine_learning_basics.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


@pytest.mark.parametrize(("n", "k"), [(10, 2), (11, 3), (455, 5), (7, 7), (100, 9)])
def test_kfold_indices_equal_sklearn_kfold(nb, n, k):
    ours = nb["kfold_indices"](n, k)
    theirs = list(KFold(k).split(np.zeros(n)))
    assert len(ours) == k
    for (train, val), (sk_train, sk_val) in zip(ours, theirs):
        assert np.array_equal(train, sk_train) and np.array_equal(val, sk_val)


@pytest.mark.parametrize("model", [
    DecisionTreeClassifier(max_depth=2, random_state=0),
    DecisionTreeClassifier(random_state=0),
    RandomForestClassifier(n_estimators=10, random_state=0),
    GradientBoostingClassifier(n_estimators=10, random_state=0),
    make_pipeline(StandardScaler(), LogisticRegression(C=0.1)),
], ids=["shallow tree", "deep tree", "forest", "boosting", "logistic"])
def test_cross_val_accuracy_equals_cross_val_score(nb, model):
    data = load_breast_cancer()
    order = np.random.default_rng(1).permutation(len(data.target))[:301]  # an odd size: folds of unequal length
    X, y = data.data[order], data.target[order]
    ours = nb["cross_val_accuracy"](model, X, y, 4)
    assert np.array_equal(ours, cross_val_score(model, X, y, cv=KFold(4)))
