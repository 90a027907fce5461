"""utils/rag.py (03.06): chunking, the hybrid DocsIndex, docs_index(), prompts, citations, word support, kappa,
and the hand-made evaluation sets in utils/data_files/rag_eval.json."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from pydoc_data.topics import topics

from utils import rag
from utils.data import dataset_info, load
from utils.retrieval import rrf, tokenize


class HashEmbedder:
    """A tiny deterministic stand-in for MiniLM: hashed bag of words, unit length. Counts the texts it embeds."""

    def __init__(self, dim: int = 64, salt: str = "") -> None:
        self.dim, self.salt, self.texts = dim, salt, 0

    def encode(self, texts, **kwargs) -> np.ndarray:
        self.texts += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in tokenize(text):
                out[row, int(hashlib.md5((self.salt + token).encode()).hexdigest(), 16) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture(scope="module")
def small_chunks() -> list[rag.Chunk]:
    return rag.docs_chunks(600, 150, max_topic_chars=1_500)


@pytest.fixture(scope="module")
def small_index(small_chunks) -> rag.DocsIndex:
    return rag.DocsIndex(small_chunks, embedder=HashEmbedder())


# ------------------------------------------------------------------------------------------- chunking


def test_chunk_text_keeps_every_sentence_within_the_size_and_overlaps():
    text = " ".join(f"Sentence number {i} says something about topic {i % 7}." for i in range(60))
    chunks = rag.chunk_text(text, 200, 60)
    assert all(len(c) <= 200 for c in chunks) and len(chunks) > 5
    for sentence in rag.split_sentences(text):
        assert any(sentence in c for c in chunks), sentence
    shared = [set(rag.split_sentences(a)) & set(rag.split_sentences(b)) for a, b in zip(chunks, chunks[1:])]
    assert all(shared), "with a 60-character overlap, neighbours share their boundary sentence"
    assert all(len(" ".join(s)) <= 60 for s in shared)
    no_overlap = rag.chunk_text(text, 200, 0)
    assert " ".join(no_overlap) == " ".join(rag.split_sentences(text)), "without overlap nothing repeats"


def test_chunk_text_cuts_a_sentence_longer_than_a_chunk():
    assert rag.chunk_text("x" * 250, 100, 10) == ["x" * 100, "x" * 100, "x" * 50]
    assert rag.chunk_text("", 100, 10) == []


@pytest.mark.parametrize("size, overlap", [(0, 0), (100, 100), (100, -1)])
def test_chunk_text_refuses_bad_sizes(size, overlap):
    with pytest.raises(ValueError, match="chunk_chars"):
        rag.chunk_text("Some text.", size, overlap)


def test_docs_chunks_ids_topics_and_the_size_limit(small_chunks):
    everything = rag.docs_chunks()
    assert len({c.id for c in everything}) == len(everything)
    assert {c.topic for c in everything} == set(topics)
    assert all(c.id == f"{c.topic}#{c.id.split('#')[1]}" for c in everything)
    assert [c.id for c in everything if c.topic == "break"] == ["break#0"]
    assert {c.topic for c in small_chunks} == {t for t, text in topics.items() if len(text) <= 1_500}
    assert all(len(c.text) <= 600 for c in everything)
    with pytest.raises(ValueError, match="max_topic_chars"):
        rag.docs_chunks(max_topic_chars=0)


def test_every_evidence_quote_lies_whole_in_a_chunk_of_a_relevant_topic():
    chunks = rag.docs_chunks()
    for q in load("python_docs_queries", split="test"):
        for quote in q["evidence"]:
            assert any(rag.contains_quote(c.text, quote) for c in chunks if c.topic in q["relevant"]), (q["id"], quote)


# ------------------------------------------------------------------------------------------ the index


def test_search_refuses_a_bad_mode_or_k_and_names_what_is_allowed(small_index):
    with pytest.raises(ValueError, match="hybrid.*dense.*bm25"):
        small_index.search("loop", mode="fuzzy")
    for k in (0, len(small_index.chunks) + 1, 2.0):
        with pytest.raises(ValueError, match="k must be an int from 1 to"):
            small_index.search("loop", k=k)
    with pytest.raises(ValueError, match="unique ids"):
        rag.DocsIndex([], embedder=HashEmbedder())


def test_dense_search_is_exact_cosine_order(small_index, small_chunks):
    embedder = small_index.embedder
    vectors = embedder.encode([c.text for c in small_chunks])
    query = "What does the pass statement do?"
    cosines = vectors @ embedder.encode([query])[0]
    hits = small_index.search(query, k=5, mode="dense")
    assert [h.chunk.id for h in hits] == [small_chunks[i].id for i in np.argsort(-cosines, kind="stable")[:5]]
    np.testing.assert_allclose([h.score for h in hits], np.sort(cosines)[::-1][:5], atol=1e-5)


def test_bm25_and_hybrid_modes(small_index):
    query = "How do I leave a loop early with break?"
    lexical = small_index.search(query, k=4, mode="bm25")
    scores = [h.score for h in lexical]
    assert scores == sorted(scores, reverse=True) and lexical[0].chunk.topic == "break"
    depth = min(rag.DEPTH, len(small_index.chunks))
    expected = rrf([[h.chunk.id for h in small_index.search(query, depth, "bm25")],
                    [h.chunk.id for h in small_index.search(query, depth, "dense")]])[:4]
    hybrid = small_index.search(query, k=4)
    assert [h.chunk.id for h in hybrid] == expected
    assert all(isinstance(h, rag.Hit) and 0 < h.score <= 2 / 61 for h in hybrid)


def test_a_persistent_index_is_reused_without_embedding_again(tmp_path, small_chunks):
    first = HashEmbedder()
    rag.DocsIndex(small_chunks, path=str(tmp_path), embedder=first)
    assert first.texts == 1 + len(small_chunks)  # the fingerprint sentence, then every chunk
    again = HashEmbedder()
    index = rag.DocsIndex(small_chunks, path=str(tmp_path), embedder=again)
    assert again.texts == 1 and index.collection.count() == len(small_chunks)  # only the fingerprint
    other = rag.DocsIndex(small_chunks[:10], path=str(tmp_path), embedder=again)
    assert other.collection.name != index.collection.name and other.collection.count() == 10


def test_another_embedder_never_reads_the_vectors_of_the_first(small_chunks):
    one, two = rag.DocsIndex(small_chunks, embedder=HashEmbedder()), rag.DocsIndex(small_chunks, embedder=HashEmbedder(salt="x"))
    assert one.collection.name != two.collection.name  # same chunks, in the same in-memory Chroma
    query = "What does the pass statement do?"
    vectors = two.embedder.encode([c.text for c in small_chunks])
    best = small_chunks[int(np.argmax(vectors @ two.embedder.encode([query])[0]))].id
    assert two.search(query, 1, "dense")[0].chunk.id == best


def test_docs_index_is_cached_in_memory_and_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    rag.docs_index.cache_clear()
    try:
        index = rag.docs_index("smoke")
        assert rag.docs_index("smoke") is index
        assert len(index.chunks) == len(rag.docs_chunks(600, 150, rag.DOCS_PRESETS["smoke"]))
        stored = list((tmp_path / "rag").glob("minilm-*.npy"))
        assert len(stored) == 1 and np.load(stored[0]).shape == (len(index.chunks), 384)
        hits = index.search("How do I leave a loop early?", k=3)
        assert "break#0" in [h.chunk.id for h in hits]
        rag.docs_index.cache_clear()
        reloaded = rag.docs_index("smoke")  # from the stored vectors: the same answers
        assert [h.chunk.id for h in reloaded.search("What does pass do?", 3, "dense")] == \
               [h.chunk.id for h in index.search("What does pass do?", 3, "dense")]
    finally:
        rag.docs_index.cache_clear()


# --------------------------------------------------------------------------------- prompts and citations


def test_build_messages_numbers_the_sources_with_their_chunk_ids():
    hits = [rag.Hit(rag.Chunk("pass#0", "pass", "Pass does nothing."), 0.9),
            rag.Hit(rag.Chunk("for#1", "for", "A loop."), 0.5)]
    system, user = rag.build_messages("What is pass?", hits)
    assert system == {"role": "system", "content": rag.SYSTEM_PROMPT} and rag.NO_ANSWER in rag.SYSTEM_PROMPT
    assert user["role"] == "user"
    assert user["content"] == "Sources:\n[1] (pass#0) Pass does nothing.\n\n[2] (for#1) A loop.\n\nQuestion: What is pass?"


@pytest.mark.parametrize("answer, expected", [
    ("Pass does nothing [2]. It is a placeholder [1, 3].", [("Pass does nothing.", [2]), ("It is a placeholder.", [1, 3])]),
    ("No citation here. Another one.", [("No citation here.", []), ("Another one.", [])]),
    ("Cited at the end.[1] Next sentence [2].", [("Cited at the end.", [1]), ("Next sentence.", [2])]),
    ("  ", []),
])
def test_cited_sentences(answer, expected):
    assert rag.cited_sentences(answer) == expected


@pytest.mark.parametrize("answer, refused", [
    ("I don't know.", True), ("The sources do not contain the answer.", True), ("I cannot answer that.", True),
    ("There is no information about NumPy here.", True), ("Pass does nothing [1].", False),
    ("You can use np.zeros((3, 4)).", False),
])
def test_is_refusal(answer, refused):
    assert rag.is_refusal(answer) is refused


def test_word_support_counts_content_words_only():
    assert rag.content_words("The pass statement is a null operation") == {"pass", "statement", "null", "operation"}
    source = "pass is a null operation; when it is executed, nothing happens."
    assert rag.word_support("The pass statement is a null operation.", source) == 3 / 4
    assert rag.word_support("It is what it is.", source) == 1.0  # no content word: nothing to check
    assert rag.word_support("Lists are mutable.", source) == 0.0


def test_cohen_kappa_known_values():
    assert rag.cohen_kappa([1, 0, 1, 0], [1, 0, 1, 0]) == 1.0
    assert rag.cohen_kappa([1, 1, 0, 0], [1, 0, 1, 0]) == 0.0  # agreement 0.5 = chance
    # observed 0.7; chance 0.5*0.6 + 0.5*0.4 = 0.5 -> kappa 0.4
    assert rag.cohen_kappa([1] * 5 + [0] * 5, [1, 1, 1, 1, 0, 1, 1, 0, 0, 0]) == pytest.approx(0.4)
    assert rag.cohen_kappa(["a"] * 3, ["a"] * 3) == 1.0
    with pytest.raises(ValueError, match="equal length"):
        rag.cohen_kappa([1], [1, 0])


# ------------------------------------------------------------------------------------ the evaluation sets


def test_rag_eval_is_registered_and_consistent_with_the_chunks():
    info = dataset_info("rag_eval")
    assert info.kind == "bundled" and "CC BY 4.0" in info.licence and "PSF" in info.licence
    labels = load("rag_eval", split="faithfulness")
    assert len(labels) >= 20 and len({item["id"] for item in labels}) == len(labels)
    assert all(set(item) == {"id", "source_id", "source", "sentence", "supported", "origin"} for item in labels)
    assert {item["origin"] for item in labels} == {"smollm2-135m", "written"}
    assert 0.3 < np.mean([item["supported"] for item in labels]) < 0.7, "both labels well represented"
    chunks = {c.id: c.text for c in rag.docs_chunks(600, 150)}
    for item in labels:
        assert chunks[item["source_id"]] == item["source"], item["id"]


def test_the_unanswerable_questions_are_not_in_the_help_topics():
    questions = load("rag_eval", split="unanswerable")
    assert len(questions) >= 10 and len(set(questions)) == len(questions)
    library = " ".join(topics.values()).lower()
    key_terms = ["numpy", "pandas", "javascript", "pip", "requests library", "matplotlib", "sql", "conda",
                 "pytorch", "css", "rust", "flask", "react", "dataframe"]
    assert not [term for term in key_terms if re.search(rf"\b{term}\b", library)]
    assert all(any(re.search(rf"\b{term}\b", q.lower()) for term in key_terms) for q in questions), \
        "every unanswerable question names a tool the help topics never mention"
