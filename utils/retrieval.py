"""Search and its evaluation: BM25, rankings, reciprocal rank fusion, chunking, recall@k / MRR / nDCG@k.

Introduced in 03_llm_apps/04_embeddings_and_semantic_search.ipynb, where every piece is written by hand and
checked against a library: `BM25` scores equal rank_bm25's `BM25Okapi` (same tokens, k1, b and epsilon), the
metrics equal ir_measures (trec_eval) and sklearn's `ndcg_score`. Used again by 03.06 (RAG). Pure Python and
NumPy; nothing happens at import time.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Collection, Hashable, Sequence

import numpy as np

TOKEN = re.compile(r"\w+")
"""A token is a run of letters, digits or underscores: `__init__`, `3`, `casefold`; punctuation is dropped."""


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens of `text` (the regular expression TOKEN): the units BM25 counts."""
    return TOKEN.findall(text.lower())


# ------------------------------------------------------------------------------------------------- BM25


def bm25_idf(doc_freq: dict[str, int], n_docs: int, epsilon: float | None = 0.25) -> dict[str, float]:
    """Robertson–Spärck Jones IDF, log((N - n + 0.5) / (n + 0.5)), per term; negative values floored.

    A term in more than half of the documents gets a negative RSJ IDF. With `epsilon` (rank_bm25's rule) those
    terms get epsilon × the mean IDF of the whole vocabulary instead; `epsilon=None` keeps the textbook values.
    """
    if n_docs < 1 or any(not 1 <= n <= n_docs for n in doc_freq.values()):
        raise ValueError(f"need n_docs >= 1 and 1 <= doc_freq <= n_docs; got n_docs={n_docs}.")
    idf = {term: math.log(n_docs - n + 0.5) - math.log(n + 0.5) for term, n in doc_freq.items()}
    if epsilon is not None and idf:
        floor = epsilon * sum(idf.values()) / len(idf)  # the mean is taken over the raw values, negatives included
        idf = {term: (floor if value < 0 else value) for term, value in idf.items()}
    return idf


class BM25:
    """Okapi BM25 over tokenised documents; `scores(query)` is rank_bm25's `BM25Okapi.get_scores`."""

    def __init__(self, docs: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75,
                 epsilon: float | None = 0.25) -> None:
        if not docs or k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs at least one document, k1 >= 0 and 0 <= b <= 1; got {len(docs)} "
                             f"documents, k1={k1}, b={b}.")
        self.k1, self.b = k1, b
        self.doc_len = np.array([len(doc) for doc in docs], dtype=float)  # (N,)
        self.avgdl = float(self.doc_len.mean())
        # An inverted index: term -> (ids of the documents holding it, its count in each).
        postings: dict[str, tuple[list[int], list[int]]] = {}
        for i, doc in enumerate(docs):
            for term, tf in Counter(doc).items():
                ids, tfs = postings.setdefault(term, ([], []))
                ids.append(i)
                tfs.append(tf)
        self.postings = {t: (np.array(ids), np.array(tfs, dtype=float)) for t, (ids, tfs) in postings.items()}
        self.idf = bm25_idf({t: len(ids) for t, (ids, _) in postings.items()}, len(docs), epsilon)

    def scores(self, query: Sequence[str]) -> np.ndarray:
        """(N,) BM25 score of every document: sum over query tokens of idf · tf(k1+1) / (tf + k1(1-b+b·dl/avgdl))."""
        scores = np.zeros(len(self.doc_len))
        for term in query:  # a repeated query token counts again, as in rank_bm25
            if term not in self.postings:
                continue  # a term no document holds adds nothing
            ids, tf = self.postings[term]
            norm = self.k1 * (1 - self.b + self.b * self.doc_len[ids] / self.avgdl)  # length normalisation
            scores[ids] += self.idf[term] * tf * (self.k1 + 1) / (tf + norm)
        return scores


# --------------------------------------------------------------------------------------------- rankings


def rank(scores: Sequence[float]) -> np.ndarray:
    """Indices of `scores`, best first; equal scores keep index order (a stable sort), so rankings repeat."""
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")


def rrf(rankings: Sequence[Sequence[Hashable]], k: int = 60) -> list[Hashable]:
    """Reciprocal rank fusion: order items by sum over rankings of 1 / (k + rank), rank counted from 1."""
    if k < 0 or not rankings:
        raise ValueError(f"rrf needs at least one ranking and k >= 0; got {len(rankings)} rankings, k={k}.")
    fused: dict[Hashable, float] = {}
    for ranking in rankings:
        for position, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + position)
    return sorted(fused, key=lambda item: -fused[item])  # sorted() is stable: ties keep first-seen order


def first_occurrences(items: Sequence[Hashable]) -> list[Hashable]:
    """Each item once, where it first appears: a ranking of chunks' documents becomes a document ranking."""
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------------------------- chunking


def chunk_fixed(text: str, size: int) -> list[str]:
    """Consecutive windows of `size` characters; the last may be shorter."""
    return chunk_overlap(text, size, 0)


def chunk_overlap(text: str, size: int, overlap: int) -> list[str]:
    """Windows of `size` characters, each starting `size - overlap` after the previous one."""
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size; got size={size}, overlap={overlap}.")
    if not text:
        return []
    stride = size - overlap
    starts = range(0, max(len(text) - overlap, 1), stride)  # no window lies wholly inside the previous one
    return [text[i:i + size] for i in starts]


SENTENCE_END = re.compile(r"\n\s*\n|(?<=[.!?:])\s+(?=[A-Z\"*(])")
"""Where a sentence may end: a blank line, or . ! ? : followed by a space and a capital, quote, * or (."""


def chunk_sentences(text: str, size: int) -> list[str]:
    """Whole sentences packed greedily into chunks of at most `size` characters (a longer sentence is cut)."""
    if size < 1:
        raise ValueError(f"size must be >= 1; got {size}.")
    chunks, current = [], ""
    for sentence in (" ".join(s.split()) for s in SENTENCE_END.split(text)):
        if not sentence:
            continue
        if current and len(current) + 1 + len(sentence) <= size:
            current += " " + sentence
            continue
        if current:
            chunks.append(current)
        pieces = chunk_fixed(sentence, size)  # a sentence longer than a chunk is cut into windows
        chunks += pieces[:-1]
        current = pieces[-1]
    return chunks + [current] if current else chunks


# -------------------------------------------------------------------------------------------- metrics


def _check(relevant: Collection[Hashable], k: int | None = None) -> None:
    if not relevant:
        raise ValueError("relevant is empty: a query needs at least one relevant item to be evaluated.")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1; got {k}.")


def recall_at_k(ranking: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """Share of the relevant items found in the first k of `ranking`."""
    _check(relevant, k)
    return len(set(ranking[:k]) & set(relevant)) / len(set(relevant))


def reciprocal_rank(ranking: Sequence[Hashable], relevant: Collection[Hashable]) -> float:
    """1 / position of the first relevant item (counted from 1); 0 if none is ranked."""
    _check(relevant)
    relevant = set(relevant)
    return next((1.0 / i for i, item in enumerate(ranking, start=1) if item in relevant), 0.0)


def ndcg_at_k(ranking: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """Binary nDCG@k: DCG = sum over the first k positions i of rel_i / log2(i + 1), divided by the ideal DCG."""
    _check(relevant, k)
    relevant = set(relevant)
    dcg = sum(1 / math.log2(i + 1) for i, item in enumerate(ranking[:k], start=1) if item in relevant)
    ideal = sum(1 / math.log2(i + 1) for i in range(1, min(len(relevant), k) + 1))
    return dcg / ideal


def bootstrap_ci(values: Sequence[float], n_resamples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` and its percentile bootstrap interval, resampling the values."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or len(values) == 0 or n_resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need a non-empty 1-D sequence, n_resamples >= 1 and 0 < level < 1; got shape "
                         f"{values.shape}, n_resamples={n_resamples}, level={level}.")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(n_resamples, len(values)))  # (B, n) query indices
    means = values[picks].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(values.mean()), float(low), float(high)
