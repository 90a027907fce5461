"""Retrieval-augmented generation over Python's help topics: chunks, a hybrid index, prompts, citations, checks.

Introduced in 03_llm_apps/06_retrieval_augmented_generation.ipynb, where each piece is written and measured;
03.09 (agents) uses the same index as a retrieval tool:

    from utils.rag import docs_index
    index = docs_index()                                 # sized by the preset, cached
    for hit in index.search("How do I leave a loop early?", k=4):
        print(hit.chunk.id, round(hit.score, 3), hit.chunk.text[:80])

A chunk id is `topic#n` (the n-th chunk of the pydoc topic, from 0), as in 03.04. The index keeps MiniLM
vectors in a Chroma collection (never Chroma's default embedding function, which downloads a model) and a
BM25 index (utils.retrieval), and fuses the two rankings with reciprocal rank fusion. Nothing happens at
import time; chromadb and sentence-transformers are imported when an index is built.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from utils.retrieval import BM25, SENTENCE_END, rank, rrf, tokenize

MODES = ("hybrid", "dense", "bm25")
DEPTH = 50  # candidates taken from each of the two rankings before they are fused (hybrid mode)
DOCS_PRESETS = {"smoke": 1_500, "laptop": None, "full": None}  # preset -> max_topic_chars of docs_index()
NO_ANSWER = "I don't know."
SYSTEM_PROMPT = ("You answer questions about Python using only the numbered sources. Answer in one or two "
                 "sentences and end each sentence with the number of its source in square brackets, like [2]. "
                 f"If the sources do not contain the answer, reply exactly: {NO_ANSWER}")


@dataclass(frozen=True)
class Chunk:
    """A piece of one help topic: id `topic#n`, the topic's name, and its text."""

    id: str
    topic: str
    text: str


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk and its score (cosine for dense, BM25 for bm25, the RRF sum for hybrid)."""

    chunk: Chunk
    score: float


# ------------------------------------------------------------------------------------------- chunking


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` (utils.retrieval.SENTENCE_END), each with its whitespace collapsed."""
    return [s for s in (" ".join(part.split()) for part in SENTENCE_END.split(text)) if s]


def chunk_text(text: str, chunk_chars: int, overlap: int) -> list[str]:
    """Whole sentences packed into chunks of at most `chunk_chars`; each chunk repeats the previous one's last
    sentences, up to `overlap` characters, so a passage cut at a boundary is still whole in one chunk."""
    if chunk_chars < 1 or not 0 <= overlap < chunk_chars:
        raise ValueError(f"need chunk_chars >= 1 and 0 <= overlap < chunk_chars; got {chunk_chars}, {overlap}.")
    pieces = []  # a sentence longer than a chunk is cut into windows of chunk_chars
    for sentence in split_sentences(text):
        pieces += [sentence[i:i + chunk_chars] for i in range(0, len(sentence), chunk_chars)]
    chunks: list[str] = []
    current: list[str] = []
    for piece in pieces:
        if current and len(" ".join(current + [piece])) > chunk_chars:
            chunks.append(" ".join(current))
            carried: list[str] = []  # the last sentences of the chunk just closed, at most `overlap` characters
            for previous in reversed(current):
                if len(" ".join([previous, *carried])) > overlap:
                    break
                carried.insert(0, previous)
            while carried and len(" ".join(carried + [piece])) > chunk_chars:
                carried.pop(0)  # the carried tail and the next sentence must fit in one chunk
            current = carried
        current.append(piece)
    return chunks + [" ".join(current)] if current else chunks


def docs_chunks(chunk_chars: int = 600, overlap: int = 150, max_topic_chars: int | None = None) -> list[Chunk]:
    """Every pydoc help topic (sorted by name; longer than `max_topic_chars` left out) cut by chunk_text."""
    from pydoc_data.topics import topics

    if max_topic_chars is not None and max_topic_chars < 1:
        raise ValueError(f"max_topic_chars must be None or >= 1; got {max_topic_chars}.")
    return [Chunk(f"{name}#{i}", name, piece)
            for name, text in sorted(topics.items()) if max_topic_chars is None or len(text) <= max_topic_chars
            for i, piece in enumerate(chunk_text(text, chunk_chars, overlap))]


def contains_quote(text: str, quote: str) -> bool:
    """True if `quote` occurs in `text` once both have their whitespace collapsed (how evidence is matched)."""
    return " ".join(quote.split()) in " ".join(text.split())


# ------------------------------------------------------------------------------------------ the index


@functools.lru_cache(maxsize=1)
def minilm() -> Any:
    """The course's real all-MiniLM-L6-v2 (a SentenceTransformer), loaded once."""
    from sentence_transformers import SentenceTransformer

    from utils.hub import model_path

    return SentenceTransformer(str(model_path("embedding")), device="cpu")


def embed(texts: Sequence[str], embedder: Any = None, batch_size: int = 32) -> np.ndarray:
    """(N, 384) float32 unit vectors of `texts`, by `embedder` (a SentenceTransformer; default MiniLM)."""
    model = embedder if embedder is not None else minilm()
    return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False).astype(np.float32)


class DocsIndex:
    """MiniLM embeddings in a Chroma collection + BM25, fused with RRF; `search(query, k, mode)`."""

    def __init__(self, chunks: list[Chunk], *, path: str | None = None, embedder: Any = None,
                 vectors: np.ndarray | None = None) -> None:
        import chromadb
        from chromadb.config import Settings

        if not chunks or len({c.id for c in chunks}) != len(chunks):
            raise ValueError(f"DocsIndex needs a non-empty list of chunks with unique ids; got {len(chunks)}.")
        self.chunks, self.embedder = list(chunks), embedder if embedder is not None else minilm()
        self.by_id = {c.id: c for c in self.chunks}
        self.bm25 = BM25([tokenize(c.text) for c in self.chunks])
        settings = Settings(anonymized_telemetry=False)  # no usage statistics sent anywhere
        self.client = (chromadb.PersistentClient(path=path, settings=settings) if path
                       else chromadb.EphemeralClient(settings=settings))
        # The name is a hash of the chunks and of the embedder (its vector for a fixed sentence): the same chunks
        # and model find their stored vectors again (a persistent path, or a second index in this process), and
        # another chunking or another model never mixes with them.
        probe = embed(["A sentence that tells embedding models apart."], self.embedder).round(4)  # (1, d)
        digest = hashlib.sha256("\0".join(f"{c.id}\0{c.text}" for c in self.chunks).encode()
                                + probe.tobytes()).hexdigest()
        self.collection = self.client.get_or_create_collection(
            f"python-docs-{digest[:16]}", embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
        if self.collection.count() != len(self.chunks):
            self._add(vectors if vectors is not None else embed([c.text for c in self.chunks], self.embedder))

    def _add(self, vectors: np.ndarray) -> None:
        """Store every chunk (id, text, topic, vector) in the collection, in batches Chroma accepts."""
        batch = self.client.get_max_batch_size()
        for i in range(0, len(self.chunks), batch):
            part = self.chunks[i:i + batch]
            self.collection.upsert(ids=[c.id for c in part], documents=[c.text for c in part],
                                   metadatas=[{"topic": c.topic} for c in part], embeddings=vectors[i:i + batch])

    def dense(self, query: str, n: int) -> list[Hit]:
        """The n chunks nearest the query's MiniLM vector in Chroma; score = cosine = 1 - cosine distance."""
        found = self.collection.query(query_embeddings=embed([query], self.embedder), n_results=n,
                                      include=["distances"])
        return [Hit(self.by_id[i], 1.0 - d) for i, d in zip(found["ids"][0], found["distances"][0])]

    def lexical(self, query: str, n: int) -> list[Hit]:
        """The n chunks with the highest BM25 scores (ties keep chunk order)."""
        scores = self.bm25.scores(tokenize(query))
        return [Hit(self.chunks[i], float(scores[i])) for i in rank(scores)[:n]]

    def search(self, query: str, k: int = 4, mode: str = "hybrid") -> list[Hit]:
        """The k best chunks for `query`: mode "hybrid" (RRF of bm25 and dense), "dense" or "bm25"."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}.")
        if not isinstance(k, int) or not 1 <= k <= len(self.chunks):
            raise ValueError(f"k must be an int from 1 to {len(self.chunks)} (the chunks indexed); got {k!r}.")
        if mode == "dense":
            return self.dense(query, k)
        if mode == "bm25":
            return self.lexical(query, k)
        depth = min(max(DEPTH, k), len(self.chunks))
        rankings = [[h.chunk.id for h in self.lexical(query, depth)], [h.chunk.id for h in self.dense(query, depth)]]
        fused = rrf(rankings)[:k]  # RRF score: sum over the two rankings of 1 / (60 + position)
        score = {i: sum(1 / (60 + r.index(i) + 1) for r in rankings if i in r) for i in fused}
        return [Hit(self.by_id[i], score[i]) for i in fused]


@functools.lru_cache(maxsize=3)
def docs_index(preset: str | None = None) -> DocsIndex:
    """The course's index of the help topics (600-character chunks, 150 overlap), sized by the preset; cached."""
    from utils.runtime import cache_dir, resolve_preset

    chunks = docs_chunks(600, 150, DOCS_PRESETS[resolve_preset(preset)])
    digest = hashlib.sha256("\0".join(f"{c.id}\0{c.text}" for c in chunks).encode()).hexdigest()[:16]
    stored = cache_dir() / "rag" / f"minilm-{digest}.npy"  # the vectors, kept between sessions
    vectors = np.load(stored) if stored.exists() else None
    index = DocsIndex(chunks, vectors=vectors)
    if vectors is None:
        stored.parent.mkdir(parents=True, exist_ok=True)
        part = stored.with_suffix(f".{np.random.default_rng().integers(1 << 30)}.tmp.npy")
        got = index.collection.get(ids=[c.id for c in chunks], include=["embeddings"])
        order = {i: n for n, i in enumerate(got["ids"])}
        np.save(part, np.asarray(got["embeddings"], dtype=np.float32)[[order[c.id] for c in chunks]])
        part.replace(stored)  # atomic: a reader never sees half a file
    return index


# -------------------------------------------------------------------------------- prompts and citations


def format_sources(hits: Sequence[Hit]) -> str:
    """The retrieved chunks as numbered sources, `[n] (chunk id) text`, n counted from 1."""
    return "\n\n".join(f"[{n}] ({h.chunk.id}) {h.chunk.text}" for n, h in enumerate(hits, start=1))


def build_messages(question: str, hits: Sequence[Hit], system: str = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """Chat messages for a RAG answer: the instructions, then the numbered sources and the question."""
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Sources:\n{format_sources(hits)}\n\nQuestion: {question}"}]


CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
"""A citation: one or more source numbers in square brackets, `[2]` or `[1, 3]`."""


def cited_sentences(answer: str) -> list[tuple[str, list[int]]]:
    """The answer's sentences, each without its citations, with the source numbers it cites (maybe none)."""
    out = []
    for sentence in re.split(r"(?<=[.!?\]])\s+(?=[A-Z\"(`])", " ".join(answer.split())):
        numbers = [int(n) for group in CITATION.findall(sentence) for n in group.split(",")]
        text = CITATION.sub("", sentence).strip()
        if text.strip(" ."):
            out.append((" ".join(text.split()).replace(" .", "."), numbers))
    return out


def is_refusal(answer: str) -> bool:
    """True if the answer says that the sources do not hold the answer ("I don't know", "not in the sources")."""
    return bool(re.search(r"\b(?:don't|do not|doesn't|does not) (?:know|contain|say|mention)|\bno information\b"
                          r"|\bcannot (?:answer|find)\b|\bnot (?:in|mentioned in) the sources\b", answer.lower()))


# ------------------------------------------------------------------------------------------ faithfulness

STOPWORDS = frozenset(
    "a an the is are was were be been being am do does did doing have has had having of to in on at by for with "
    "from as into onto than then that this these those it its it's and or but if not no so such can could will "
    "would should may might must shall which who whom whose what when where why how there here they them their "
    "you your we our i me my he she his her also any all each every some more most other only just very too "
    "about over under again same own while because until both few".split())
"""Words that carry no content: they are left out when a sentence's words are looked for in a source."""


def content_words(text: str) -> set[str]:
    """The distinct lower-cased word tokens of `text` (utils.retrieval.tokenize) that are not STOPWORDS."""
    return {t for t in tokenize(text) if t not in STOPWORDS}


def word_support(sentence: str, source: str) -> float:
    """Share of the sentence's content words that also occur in the source (1.0 for a sentence with none)."""
    words = content_words(sentence)
    return len(words & content_words(source)) / len(words) if words else 1.0


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Cohen's kappa of two labelings: (observed agreement - chance agreement) / (1 - chance agreement)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"need two non-empty labelings of equal length; got {len(a)} and {len(b)}.")
    observed = np.mean([x == y for x, y in zip(a, b)])
    chance = sum((list(a).count(v) / len(a)) * (list(b).count(v) / len(b)) for v in set(a) | set(b))
    return 1.0 if chance == 1 else float((observed - chance) / (1 - chance))
