"""utils.retrieval against the libraries (rank_bm25, ir_measures / trec_eval, scikit-learn), its chunkers'
invariants, and the labelled query set it is evaluated with (utils/data_files/python_docs_queries.json)."""

from __future__ import annotations

import sys

import ir_measures
import numpy as np
import pytest
from ir_measures import RR, R, Success, nDCG
from pydoc_data.topics import topics
from rank_bm25 import BM25Okapi
from sklearn.metrics import ndcg_score

from utils import retrieval as rt
from utils.data import dataset_info, load

WORDS = "the a of to is in object class method value list dict return error key name".split()


def random_corpus(rng: np.random.Generator, n_docs: int) -> list[list[str]]:
    """Documents of Zipf-like words, each starting with "the": a term in every document (negative RSJ IDF)."""
    vocab = WORDS + [f"w{i}" for i in range(60)]
    p = 1 / np.arange(1, len(vocab) + 1)
    return [["the"] + list(rng.choice(vocab, size=int(rng.integers(0, 40)), p=p / p.sum()))
            for _ in range(n_docs)]


# ------------------------------------------------------------------------------------------------- BM25


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("k1", "b", "epsilon"), [(1.5, 0.75, 0.25), (1.2, 0.3, 0.5), (0.9, 1.0, 0.0)])
def test_bm25_equals_rank_bm25(seed, k1, b, epsilon):
    rng = np.random.default_rng(seed)
    docs = random_corpus(rng, int(rng.integers(3, 30)))
    ours, theirs = rt.BM25(docs, k1=k1, b=b, epsilon=epsilon), BM25Okapi(docs, k1=k1, b=b, epsilon=epsilon)
    assert rt.bm25_idf({"the": len(docs)}, len(docs), epsilon=None)["the"] < 0  # the floor is exercised
    for query in (["the", "class", "w3"], ["the", "the", "unseen"], list(rng.choice(WORDS, 5)), []):
        np.testing.assert_allclose(ours.scores(query), theirs.get_scores(query), rtol=0, atol=1e-9)


def test_bm25_on_the_real_corpus_equals_rank_bm25():
    docs = [rt.tokenize(text) for text in topics.values()]
    ours, theirs = rt.BM25(docs), BM25Okapi(docs)
    for query in load("python_docs_queries", split="test")[:40]:
        tokens = rt.tokenize(query["query"])
        np.testing.assert_allclose(ours.scores(tokens), theirs.get_scores(tokens), rtol=0, atol=1e-6)


def test_textbook_idf_is_negative_for_common_terms_and_the_floor_replaces_it():
    idf = rt.bm25_idf({"rare": 1, "half": 5, "common": 9}, 10, epsilon=None)
    assert idf["rare"] > 0 and idf["half"] == pytest.approx(0) and idf["common"] < 0
    floored = rt.bm25_idf({"rare": 1, "half": 5, "common": 9}, 10, epsilon=0.5)
    assert floored["common"] == pytest.approx(0.5 * sum(idf.values()) / 3) and floored["rare"] == idf["rare"]


def test_bm25_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k1=-1"):
        rt.BM25([["a"]], k1=-1)
    with pytest.raises(ValueError, match="b=2"):
        rt.BM25([["a"]], b=2)
    with pytest.raises(ValueError, match="doc_freq"):
        rt.bm25_idf({"a": 3}, 2)


def test_tokenize_keeps_identifiers_and_drops_punctuation():
    assert rt.tokenize('Call "__init__()" on x[0], then str.casefold!') == [
        "call", "__init__", "on", "x", "0", "then", "str", "casefold"]


# ------------------------------------------------------------------------------------------- metrics


def random_queries(rng: np.random.Generator, n_queries: int, n_docs: int):
    """Rankings of n_docs documents (full permutations) and non-empty relevant sets, as ids 'd0'..."""
    rankings = [[f"d{i}" for i in rng.permutation(n_docs)] for _ in range(n_queries)]
    relevant = [{f"d{i}" for i in rng.choice(n_docs, int(rng.integers(1, 4)), replace=False)}
                for _ in range(n_queries)]
    return rankings, relevant


@pytest.mark.parametrize("seed", range(3))
def test_metrics_equal_ir_measures(seed):
    rng = np.random.default_rng(seed)
    rankings, relevant = random_queries(rng, 30, int(rng.integers(5, 40)))
    qrels = {str(q): {d: 1 for d in rel} for q, rel in enumerate(relevant)}
    # trec_eval sorts by score, so the score must encode our order: strictly decreasing with the position.
    run = {str(q): {d: float(len(r) - i) for i, d in enumerate(r)} for q, r in enumerate(rankings)}
    measures = [R @ 1, R @ 5, RR, nDCG @ 10, Success @ 3]
    theirs = {(m.query_id, str(m.measure)): m.value for m in ir_measures.iter_calc(measures, qrels, run)}
    for q, (ranking, rel) in enumerate(zip(rankings, relevant)):
        ours = {R @ 1: rt.recall_at_k(ranking, rel, 1), R @ 5: rt.recall_at_k(ranking, rel, 5),
                RR: rt.reciprocal_rank(ranking, rel), nDCG @ 10: rt.ndcg_at_k(ranking, rel, 10),
                Success @ 3: float(rt.recall_at_k(ranking, rel, 3) > 0)}
        for measure, value in ours.items():
            assert value == pytest.approx(theirs[(str(q), str(measure))], abs=1e-9), (q, measure)


def test_ndcg_equals_sklearn():
    rng = np.random.default_rng(7)
    rankings, relevant = random_queries(rng, 20, 25)
    for ranking, rel in zip(rankings, relevant):
        order = {d: i for i, d in enumerate(ranking)}
        docs = sorted(order)
        y_true = np.array([[d in rel for d in docs]], dtype=float)
        y_score = np.array([[len(ranking) - order[d] for d in docs]], dtype=float)
        for k in (1, 3, 10):
            assert rt.ndcg_at_k(ranking, rel, k) == pytest.approx(ndcg_score(y_true, y_score, k=k), abs=1e-9)


def test_metrics_on_a_ranking_worked_by_hand():
    ranking, relevant = ["a", "b", "c", "d"], {"b", "d"}
    assert rt.recall_at_k(ranking, relevant, 1) == 0 and rt.recall_at_k(ranking, relevant, 2) == 0.5
    assert rt.reciprocal_rank(ranking, relevant) == 0.5
    assert rt.ndcg_at_k(ranking, relevant, 10) == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / (1 + 1 / np.log2(3)))
    assert rt.reciprocal_rank(["a"], {"z"}) == 0
    with pytest.raises(ValueError, match="relevant is empty"):
        rt.recall_at_k(ranking, set(), 3)
    with pytest.raises(ValueError, match="k must be >= 1; got 0"):
        rt.ndcg_at_k(ranking, relevant, 0)


def test_rank_is_stable_and_rrf_keeps_a_single_ranking():
    assert rt.rank([0.5, 2.0, 0.5, 3.0]).tolist() == [3, 1, 0, 2]  # the tie 0.5 keeps index order
    rng = np.random.default_rng(0)
    for _ in range(20):
        ranking = list(rng.permutation(15))
        assert rt.rrf([ranking]) == ranking and rt.rrf([ranking, ranking], k=0) == ranking


def test_rrf_worked_by_hand():
    # a: 1/61 + 1/63, b: 1/62 + 1/61, c: 1/63 + 1/62 -> b > a > c
    assert rt.rrf([["a", "b", "c"], ["b", "c", "a"]]) == ["b", "a", "c"]
    assert rt.rrf([["a"], ["b", "a"]], k=0) == ["a", "b"]  # 1 + 1/2 beats 1; a ranking may be partial
    with pytest.raises(ValueError, match="k >= 0"):
        rt.rrf([["a"]], k=-1)


def test_first_occurrences_turns_chunk_owners_into_a_document_ranking():
    assert rt.first_occurrences([3, 1, 3, 0, 1, 2]) == [3, 1, 0, 2]


def test_bootstrap_ci_brackets_the_mean_and_repeats():
    values = np.random.default_rng(1).random(200)
    mean, low, high = rt.bootstrap_ci(values, n_resamples=500, seed=3)
    assert low < mean < high and mean == pytest.approx(values.mean())
    assert (mean, low, high) == rt.bootstrap_ci(values, n_resamples=500, seed=3)
    # The interval shrinks like 1/sqrt(n): the standard error of a mean of uniforms is 0.289/sqrt(n).
    assert high - low == pytest.approx(2 * 1.96 * values.std() / np.sqrt(len(values)), rel=0.2)
    with pytest.raises(ValueError, match="level=1.5"):
        rt.bootstrap_ci(values, level=1.5)


# -------------------------------------------------------------------------------------------- chunkers


TEXT = topics["try"]


@pytest.mark.parametrize("size", [1, 50, 333, 10_000])
def test_fixed_chunks_tile_the_text(size):
    chunks = rt.chunk_fixed(TEXT, size)
    assert "".join(chunks) == TEXT and all(len(c) == size for c in chunks[:-1])


@pytest.mark.parametrize(("size", "overlap"), [(100, 25), (333, 100), (50, 49)])
def test_overlapping_chunks_cover_the_text_and_share_their_overlap(size, overlap):
    chunks = rt.chunk_overlap(TEXT, size, overlap)
    stride = size - overlap
    assert all(chunks[i] == TEXT[i * stride:i * stride + size] for i in range(len(chunks)))
    assert chunks[-1].endswith(TEXT[-overlap:]) and len(chunks[-1]) > overlap  # the end is covered, once
    assert all(a[stride:] == b[:overlap] for a, b in zip(chunks, chunks[1:]))
    with pytest.raises(ValueError, match="overlap=100"):
        rt.chunk_overlap(TEXT, 100, 100)
    assert rt.chunk_overlap("", 10, 2) == []


@pytest.mark.parametrize("size", [80, 300, 1000])
def test_sentence_chunks_keep_every_word_in_order_and_respect_the_size(size):
    chunks = rt.chunk_sentences(TEXT, size)
    assert all(0 < len(c) <= size for c in chunks)
    assert "".join("".join(chunks).split()) == "".join(TEXT.split())  # every character, in order
    # Packing: two neighbours could not have been merged into one chunk.
    assert all(len(a) + 1 + len(b) > size for a, b in zip(chunks, chunks[1:]))


def test_sentence_chunks_end_at_sentence_ends_when_sentences_fit():
    text = "One short sentence. Another one here! A third? Yes.\n\nA new paragraph."
    assert rt.chunk_sentences(text, 40) == ["One short sentence. Another one here!",
                                            "A third? Yes. A new paragraph."]
    assert rt.chunk_sentences(text, 20) == ["One short sentence.", "Another one here!", "A third? Yes.",
                                            "A new paragraph."]
    # The joining space counts: 5 + 1 + 5 characters fit in 11, not in 10.
    assert rt.chunk_sentences("Aaaa. Bbbb.", 10) == ["Aaaa.", "Bbbb."]
    assert rt.chunk_sentences("Aaaa. Bbbb.", 11) == ["Aaaa. Bbbb."]


# ---------------------------------------------------------------------------------------- the query set


QUERIES = load("python_docs_queries", split="test")


def test_the_query_set_is_registered_bundled_and_large_enough():
    info = dataset_info("python_docs_queries")
    assert info.kind == "bundled" and "CC BY 4.0" in info.licence and "PSF" in info.licence
    assert len(QUERIES) >= 80
    assert len({q["id"] for q in QUERIES}) == len(QUERIES) == len({q["query"] for q in QUERIES})
    assert all(set(q) == {"id", "query", "relevant", "evidence"} for q in QUERIES)


def test_every_label_is_a_topic_and_every_quote_is_real():
    normalised = {key: " ".join(text.split()) for key, text in topics.items()}
    for q in QUERIES:
        assert q["relevant"] and set(q["relevant"]) <= set(topics), q["id"]
        for quote in q["evidence"]:
            assert any(" ".join(quote.split()) in normalised[t] for t in q["relevant"]), (q["id"], quote)


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the labels were made from Python 3.11's topics")
def test_the_labels_are_exactly_the_topics_that_hold_an_evidence_quote():
    normalised = {key: " ".join(text.split()) for key, text in topics.items()}
    for q in QUERIES:
        holding = {t for quote in q["evidence"] for t, text in normalised.items() if " ".join(quote.split()) in text}
        assert set(q["relevant"]) == holding, q["id"]
