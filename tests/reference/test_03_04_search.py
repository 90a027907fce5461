"""03.04's from-scratch search pieces against the libraries (rank_bm25, ir_measures / trec_eval, scikit-learn),
and against their promoted copies in utils/retrieval.py — on random inputs and on the real help topics."""

from __future__ import annotations

import ir_measures
import numpy as np
import pytest
from ir_measures import RR, R, Success, nDCG
from pydoc_data.topics import topics
from rank_bm25 import BM25Okapi
from sklearn.metrics import ndcg_score
from sklearn.metrics.pairwise import cosine_similarity

from utils import retrieval
from utils.notebooks import notebook_definitions
from utils.runtime import repo_root

NOTEBOOK = repo_root() / "03_llm_apps" / "04_embeddings_and_semantic_search.ipynb"
VOCAB = "the a is of to in class method value list return error key name".split() + [f"w{i}" for i in range(40)]


@pytest.fixture(scope="module")
def nb():
    namespace = notebook_definitions(NOTEBOOK, solutions=True)
    promoted = ("tokenize", "bm25_idf", "BM25", "rank", "rrf", "first_occurrences", "recall_at_k", "reciprocal_rank",
                "ndcg_at_k", "bootstrap_ci", "chunk_fixed", "chunk_overlap", "chunk_sentences", "success_at_k",
                "rerank", "cosine")
    missing = [name for name in promoted if name not in namespace]
    assert not missing, f"the notebook no longer defines {missing} (skipped: {namespace['__skipped__']})"
    return namespace


def corpus(rng: np.random.Generator, n_docs: int) -> list[list[str]]:
    """Zipf-like documents that all contain "the", so some RSJ IDFs are negative and the floor is used."""
    p = 1 / np.arange(1, len(VOCAB) + 1)
    return [["the", *rng.choice(VOCAB, size=int(rng.integers(0, 30)), p=p / p.sum())] for _ in range(n_docs)]


def rankings_and_labels(rng: np.random.Generator, n_queries: int, n_docs: int):
    rankings = [[f"d{i}" for i in rng.permutation(n_docs)] for _ in range(n_queries)]
    relevant = [{f"d{i}" for i in rng.choice(n_docs, int(rng.integers(1, 4)), replace=False)}
                for _ in range(n_queries)]
    return rankings, relevant


# ---------------------------------------------------------------------------------------- against libraries


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("k1", "b", "epsilon"), [(1.5, 0.75, 0.25), (2.0, 0.0, 0.1), (0.5, 1.0, 1.0)])
def test_bm25_equals_rank_bm25_on_random_corpora(nb, seed, k1, b, epsilon):
    rng = np.random.default_rng(seed)
    docs = corpus(rng, int(rng.integers(2, 25)))
    ours, theirs = nb["BM25"](docs, k1=k1, b=b, epsilon=epsilon), BM25Okapi(docs, k1=k1, b=b, epsilon=epsilon)
    for query in (["the", "w1", "class"], ["the", "the", "never-seen"], list(rng.choice(VOCAB, 6))):
        np.testing.assert_allclose(ours.scores(query), theirs.get_scores(query), rtol=0, atol=1e-9)


def test_bm25_equals_rank_bm25_on_the_help_topics(nb):
    docs = [nb["tokenize"](text) for _, text in sorted(topics.items())]
    ours, theirs = nb["BM25"](docs), BM25Okapi(docs)
    for question in ("How do I catch several exceptions in one except clause?", "what does nonlocal do",
                     "Why is float('nan') == float('nan') False?"):
        tokens = nb["tokenize"](question)
        np.testing.assert_allclose(ours.scores(tokens), theirs.get_scores(tokens), rtol=0, atol=1e-6)


def test_textbook_idf_is_negative_where_the_floor_applies(nb):
    freq = {"rare": 1, "mid": 3, "common": 9}
    textbook, floored = nb["bm25_idf"](freq, 10, epsilon=None), nb["bm25_idf"](freq, 10)
    assert textbook["common"] < 0 < floored["common"] == pytest.approx(0.25 * sum(textbook.values()) / 3)
    assert floored["rare"] == textbook["rare"] and floored["mid"] == textbook["mid"]


@pytest.mark.parametrize("seed", range(3))
def test_metrics_equal_trec_eval(nb, seed):
    rng = np.random.default_rng(seed)
    rankings, relevant = rankings_and_labels(rng, 25, int(rng.integers(4, 30)))
    qrels = {str(q): {d: 1 for d in rel} for q, rel in enumerate(relevant)}
    run = {str(q): {d: float(len(r) - i) for i, d in enumerate(r)} for q, r in enumerate(rankings)}
    measures = [R @ 1, R @ 5, RR, nDCG @ 10, Success @ 2]
    theirs = {(m.query_id, str(m.measure)): m.value for m in ir_measures.iter_calc(measures, qrels, run)}
    for q, (ranking, rel) in enumerate(zip(rankings, relevant)):
        ours = [nb["recall_at_k"](ranking, rel, 1), nb["recall_at_k"](ranking, rel, 5),
                nb["reciprocal_rank"](ranking, rel), nb["ndcg_at_k"](ranking, rel, 10),
                nb["success_at_k"](ranking, rel, 2)]
        expected = [theirs[(str(q), str(m))] for m in measures]
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)


def test_ndcg_equals_sklearn(nb):
    rng = np.random.default_rng(11)
    rankings, relevant = rankings_and_labels(rng, 20, 30)
    for ranking, rel in zip(rankings, relevant):
        docs = sorted(ranking)
        y_true = [[d in rel for d in docs]]
        y_score = [[len(ranking) - ranking.index(d) for d in docs]]
        for k in (1, 5, 10):
            assert nb["ndcg_at_k"](ranking, rel, k) == pytest.approx(ndcg_score(y_true, y_score, k=k), abs=1e-9)


def test_cosine_equals_sklearn(nb):
    rng = np.random.default_rng(2)
    for _ in range(10):
        u, v = rng.normal(size=8) * rng.uniform(0.1, 10), rng.normal(size=8)
        assert nb["cosine"](u, v) == pytest.approx(cosine_similarity([u], [v])[0, 0], abs=1e-12)


def test_rrf_and_rerank_keep_what_must_hold(nb):
    rng = np.random.default_rng(3)
    for _ in range(20):
        ranking = rng.permutation(12).tolist()
        assert nb["rrf"]([ranking]) == ranking == nb["rrf"]([ranking, ranking])
        first, second = rng.normal(size=12).round(1), rng.normal(size=12).round(1)
        depth = int(rng.integers(1, 13))
        reranked = nb["rerank"](first, second, depth)
        order = nb["rank"](first).tolist()
        assert sorted(reranked[:depth]) == sorted(order[:depth]) and reranked[depth:] == order[depth:]
        assert all(second[a] >= second[b] for a, b in zip(reranked[:depth], reranked[1:depth]))
    assert nb["rrf"]([["a", "b", "c"], ["b", "c", "a"]]) == ["b", "a", "c"]


# -------------------------------------------------------------------------- the notebook equals utils.retrieval


@pytest.mark.parametrize("seed", range(3))
def test_the_notebook_and_utils_retrieval_agree(nb, seed):
    rng = np.random.default_rng(seed)
    docs = corpus(rng, 15)
    text = " ".join(" ".join(doc) for doc in docs) + ". Next sentence? Yes!\n\nA paragraph: More text here."
    assert nb["tokenize"](text + " __init__ x[0]") == retrieval.tokenize(text + " __init__ x[0]")
    freq = {f"t{i}": int(rng.integers(1, 11)) for i in range(20)}
    for epsilon in (None, 0.25):
        assert nb["bm25_idf"](freq, 10, epsilon) == retrieval.bm25_idf(freq, 10, epsilon)
    query = list(rng.choice(VOCAB, 5))
    np.testing.assert_array_equal(nb["BM25"](docs, b=0.3).scores(query), retrieval.BM25(docs, b=0.3).scores(query))
    scores = rng.normal(size=30).round(1)
    assert nb["rank"](scores).tolist() == retrieval.rank(scores).tolist()
    rankings = [rng.permutation(10).tolist() for _ in range(3)]
    assert nb["rrf"](rankings) == retrieval.rrf(rankings) and nb["rrf"](rankings, k=0) == retrieval.rrf(rankings, k=0)
    owners = rng.integers(0, 5, size=20).tolist()
    assert nb["first_occurrences"](owners) == retrieval.first_occurrences(owners)
    ranking, relevant = [f"d{i}" for i in rng.permutation(12)], {"d1", "d5"}
    for k in (1, 3, 10):
        assert nb["recall_at_k"](ranking, relevant, k) == retrieval.recall_at_k(ranking, relevant, k)
        assert nb["ndcg_at_k"](ranking, relevant, k) == retrieval.ndcg_at_k(ranking, relevant, k)
    assert nb["reciprocal_rank"](ranking, relevant) == retrieval.reciprocal_rank(ranking, relevant)
    values = rng.random(50)
    assert nb["bootstrap_ci"](values, 300, seed=seed) == retrieval.bootstrap_ci(values, 300, seed=seed)
    for size in (7, 60, 500):
        assert nb["chunk_fixed"](text, size) == retrieval.chunk_fixed(text, size)
        assert nb["chunk_overlap"](text, size, size // 3) == retrieval.chunk_overlap(text, size, size // 3)
        assert nb["chunk_sentences"](text, size) == retrieval.chunk_sentences(text, size)
    assert nb["chunk_sentences"](topics["try"], 600) == retrieval.chunk_sentences(topics["try"], 600)
