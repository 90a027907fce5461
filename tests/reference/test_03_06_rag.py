"""03.06's from-scratch RAG pieces against libraries (scikit-learn's kappa, ir_measures' Success@k, rank_bm25,
NumPy's exact cosine search, LangChain's prompt template and Chroma retriever), and against their promoted copies
in utils/rag.py."""

from __future__ import annotations

import ir_measures
import numpy as np
import pytest
from ir_measures import Success
from pydoc_data.topics import topics
from rank_bm25 import BM25Okapi
from sklearn.metrics import cohen_kappa_score

from utils import rag
from utils.data import load
from utils.notebooks import notebook_definitions
from utils.retrieval import tokenize
from utils.runtime import repo_root

NOTEBOOK = repo_root() / "03_llm_apps" / "06_retrieval_augmented_generation.ipynb"
WORDS = "pass loop break the a of is not statement return value list [1] [2, 3] , . ! ? : -".split()


@pytest.fixture(scope="module")
def nb():
    namespace = notebook_definitions(NOTEBOOK, solutions=True)
    wanted = ("chunk_text", "format_sources", "build_messages", "cited_sentences", "content_words", "word_support",
              "cohen_kappa", "citation_ids", "round_robin", "MiniLMEmbeddings", "BM25Retriever",
              "negation_aware_support")
    missing = [name for name in wanted if name not in namespace]
    assert not missing, f"the notebook no longer defines {missing} (skipped: {namespace['__skipped__']})"
    return namespace


@pytest.fixture(scope="module")
def small_index() -> rag.DocsIndex:
    return rag.DocsIndex(rag.docs_chunks(600, 150, max_topic_chars=1_500))  # the real MiniLM


def random_text(rng: np.random.Generator) -> str:
    words = rng.choice(WORDS, size=int(rng.integers(0, 40)))
    return " ".join(w.capitalize() if rng.random() < 0.2 else w for w in words)


# ---------------------------------------------------------------------------------- notebook == utils.rag


@pytest.mark.parametrize("size, overlap", [(600, 150), (200, 50), (1200, 0), (80, 79)])
def test_chunk_text_of_the_notebook_is_utils_chunk_text(nb, size, overlap):
    for text in topics.values():
        assert nb["chunk_text"](text, size, overlap) == rag.chunk_text(text, size, overlap)


def test_text_functions_of_the_notebook_are_utils_functions(nb):
    rng = np.random.default_rng(0)
    for _ in range(300):
        answer, source = random_text(rng), random_text(rng)
        assert nb["cited_sentences"](answer) == rag.cited_sentences(answer)
        assert nb["content_words"](answer) == rag.content_words(answer)
        assert nb["word_support"](answer, source) == rag.word_support(answer, source)
    hits = [rag.Hit(c, 0.0) for c in rag.docs_chunks(max_topic_chars=800)[:4]]
    assert nb["format_sources"](hits) == rag.format_sources(hits)
    assert nb["build_messages"]("Why?", hits) == rag.build_messages("Why?", hits)


# ------------------------------------------------------------------------------------- against libraries


def test_cohen_kappa_equals_scikit_learn(nb):
    rng = np.random.default_rng(1)
    for _ in range(200):
        n, classes = int(rng.integers(2, 40)), int(rng.integers(2, 4))
        a, b = rng.integers(0, classes, n).tolist(), rng.integers(0, classes, n).tolist()
        if len(set(a) | set(b)) == 1:
            continue  # scikit-learn returns nan when both raters use one label throughout
        expected = cohen_kappa_score(a, b)
        assert nb["cohen_kappa"](a, b) == pytest.approx(expected, abs=1e-12)
        assert rag.cohen_kappa(a, b) == pytest.approx(expected, abs=1e-12)


def test_hit_rate_equals_ir_measures_success_at_k(small_index):
    """hit@k (a retrieved chunk contains an evidence quote) is trec_eval's success@k with those chunks relevant."""
    chunks = small_index.chunks
    questions = [q for q in load("python_docs_queries", split="test")
                 if any(rag.contains_quote(c.text, e) for c in chunks for e in q["evidence"])]
    qrels = {q["id"]: {c.id: 1 for c in chunks if any(rag.contains_quote(c.text, e) for e in q["evidence"])}
             for q in questions}
    for mode in ("bm25", "hybrid"):
        rankings = {q["id"]: [h.chunk.id for h in small_index.search(q["query"], 10, mode)] for q in questions}
        run = {qid: {d: float(10 - i) for i, d in enumerate(ids)} for qid, ids in rankings.items()}
        for k in (1, 3, 5):
            ours = np.mean([any(d in qrels[qid] for d in ids[:k]) for qid, ids in rankings.items()])
            theirs = ir_measures.calc_aggregate([Success @ k], qrels, run)[Success @ k]
            assert ours == pytest.approx(theirs, abs=1e-9), (mode, k)


def test_dense_search_equals_exact_numpy_cosine(small_index):
    vectors = rag.embed([c.text for c in small_index.chunks])  # (N, 384) unit vectors
    for query in ("How do I leave a loop early?", "What is a lambda?", "Which values are false?"):
        cosines = vectors @ rag.embed([query])[0]
        hits = small_index.search(query, 8, "dense")
        np.testing.assert_allclose([h.score for h in hits], np.sort(cosines)[::-1][:8], atol=1e-5)
        position = {c.id: i for i, c in enumerate(small_index.chunks)}
        np.testing.assert_allclose([cosines[position[h.chunk.id]] for h in hits], [h.score for h in hits], atol=1e-5)


def test_bm25_mode_equals_rank_bm25(small_index):
    library = BM25Okapi([tokenize(c.text) for c in small_index.chunks], k1=1.5, b=0.75, epsilon=0.25)
    for query in ("How do I leave a loop early?", "global statement in a function", "assert with -O"):
        scores = library.get_scores(tokenize(query))
        hits = small_index.search(query, 10, "bm25")
        np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1][:10], atol=1e-6)


def test_langchain_reads_the_same_collection_and_builds_the_same_prompt(nb, small_index):
    from langchain_chroma import Chroma
    from langchain_core.prompts import ChatPromptTemplate

    store = Chroma(client=small_index.client, collection_name=small_index.collection.name,
                  embedding_function=nb["MiniLMEmbeddings"]())
    for query in ("How do I leave a loop early?", "What does pass do?"):
        theirs = [d.id for d in store.similarity_search(query, k=5)]
        assert theirs == [h.chunk.id for h in small_index.search(query, 5, "dense")]
    prompt = ChatPromptTemplate.from_messages([("system", rag.SYSTEM_PROMPT),
                                               ("human", "Sources:\n{sources}\n\nQuestion: {question}")])
    hits = small_index.search("What does pass do?", 3)
    messages = prompt.invoke({"sources": rag.format_sources(hits), "question": "What does pass do?"}).to_messages()
    ours = nb["build_messages"]("What does pass do?", hits)
    assert [m.content for m in messages] == [m["content"] for m in ours]
    assert [m.type for m in messages] == ["system", "human"] and [m["role"] for m in ours] == ["system", "user"]


def test_the_langchain_bm25_retriever_ranks_like_utils(nb, small_index):
    retriever = nb["BM25Retriever"](chunks=small_index.chunks,
                                    bm25=BM25Okapi([tokenize(c.text) for c in small_index.chunks]), n=10)
    for query in ("How do I leave a loop early?", "nonlocal and global names"):
        assert [d.id for d in retriever.invoke(query)] == [h.chunk.id for h in small_index.search(query, 10, "bm25")]


def test_round_robin_and_citation_ids(nb):
    assert nb["round_robin"]([["a", "b", "c"], ["b", "d", "e"]], 4) == ["a", "b", "d", "c"]
    assert nb["round_robin"]([["a", "b"], ["a", "b"]], 3) == ["a", "b"]
    hits = [rag.Hit(rag.Chunk(f"t#{i}", "t", "x"), 0.0) for i in range(3)]
    assert nb["citation_ids"]("One [2]. Two [9, 1]. Three [2] [3].", hits) == ["t#1", "t#0", "t#2"]
