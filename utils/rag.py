"""Search over the course's help topics: chunks and an index (placeholder: replaced by 03.06's module at merge).

This file only keeps 03.09 (agents) running until 03_llm_apps/06_rag.ipynb lands with the real module. It has
03.06's agreed interface (`Chunk`, `Hit`, `docs_chunks`, `DocsIndex.search`, `docs_index`) implemented the
simplest way: BM25 from utils.retrieval over fixed-size overlapping chunks of pydoc's help topics. 03.06's
version adds MiniLM embeddings in a Chroma collection and fuses both rankings with RRF; here every mode is BM25.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from utils.retrieval import BM25, chunk_overlap, rank, tokenize

MODES = ("hybrid", "dense", "bm25")


@dataclass(frozen=True)
class Chunk:
    """A piece of one help topic: id "<topic>#<n>", the topic's name, and the text."""
    id: str
    topic: str
    text: str


@dataclass(frozen=True)
class Hit:
    """A chunk found by a search, with its score (higher is better)."""
    chunk: Chunk
    score: float


def docs_chunks(chunk_chars: int = 800, overlap: int = 100, max_topic_chars: int | None = None) -> list[Chunk]:
    """Every help topic (pydoc_data.topics, sorted by name) cut into overlapping chunks of `chunk_chars`."""
    from pydoc_data.topics import topics

    if max_topic_chars is not None and max_topic_chars < 1:
        raise ValueError(f"max_topic_chars must be None or >= 1; got {max_topic_chars}.")
    chunks = []
    for topic in sorted(topics):
        text = topics[topic].strip()[:max_topic_chars]
        chunks += [Chunk(f"{topic}#{i}", topic, piece)
                   for i, piece in enumerate(chunk_overlap(text, chunk_chars, overlap))]
    return chunks


class DocsIndex:
    """An index over chunks; `search(query, k)` returns the best `k` hits (placeholder: BM25 for every mode)."""

    def __init__(self, chunks: list[Chunk], *, path: str | None = None, embedder=None) -> None:
        if not chunks:
            raise ValueError("DocsIndex needs at least one chunk; got none.")
        self.chunks = list(chunks)
        # The topic's name goes in with the text: a question about "for" should find the topic "for".
        self.bm25 = BM25([tokenize(f"{c.topic} {c.text}") for c in self.chunks])

    def search(self, query: str, k: int = 4, mode: str = "hybrid") -> list[Hit]:
        """The `k` best chunks for `query`, best first."""
        if mode not in MODES or k < 1:
            raise ValueError(f"mode must be one of {MODES} and k >= 1; got mode={mode!r}, k={k}.")
        scores = self.bm25.scores(tokenize(query))
        return [Hit(self.chunks[i], float(scores[i])) for i in rank(scores)[:k]]


@functools.lru_cache(maxsize=3)
def docs_index(preset: str | None = None) -> DocsIndex:
    """The course's index of the help topics (the same for every preset in this placeholder), built once."""
    return DocsIndex(docs_chunks())
