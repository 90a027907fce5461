"""03.05's from-scratch search against FAISS: squared distances, k-means, inverted lists, IVF search, filtered
search and the HNSW graph walk — on random data with other seeds and odd shapes than the notebook's."""

import faiss
import numpy as np
import pytest

from utils.data import load
from utils.notebooks import notebook_definitions
from utils.runtime import repo_root

NOTEBOOK = repo_root() / "03_llm_apps" / "05_vector_databases.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


def clustered(rng: np.random.Generator, n: int, d: int, n_clusters: int) -> np.ndarray:
    """(n, d) float32 points around random centres: data on which IVF has something to find."""
    centres = rng.standard_normal((n_clusters, d)) * 3
    return (centres[rng.integers(0, n_clusters, n)] + rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize("n, m, d", [(1, 1, 1), (7, 3, 5), (50, 20, 131)])
def test_squared_distances_are_the_pairwise_squared_euclidean_distances(nb, n, m, d):
    rng = np.random.default_rng(n + m + d)
    a, b = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    expected = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1)
    np.testing.assert_allclose(nb["squared_distances"](a, b), expected, rtol=1e-10, atol=1e-10)


def test_kmeans_equals_faiss_kmeans_from_the_same_start(nb):
    # Gaussian data, so that no cluster ever empties: there FAISS splits a large cluster, ours keeps the centroid.
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3_000, 37)).astype(np.float32)
    centroids, inertia = nb["kmeans"](x, 24, 7, np.random.default_rng(5))
    assert len(np.unique(nb["nearest_centroid"](x, centroids))) == 24, "no empty cluster"
    start = x[np.random.default_rng(5).choice(len(x), 24, replace=False)]  # the notebook's initialisation
    reference = faiss.Kmeans(37, 24, niter=7, seed=1)
    reference.train(x, init_centroids=start)
    np.testing.assert_allclose(centroids, reference.centroids, rtol=0, atol=1e-4)
    np.testing.assert_allclose(inertia, reference.obj, rtol=1e-4)  # FAISS's inertia at each iteration
    assert all(b <= a * (1 + 1e-6) for a, b in zip(inertia, inertia[1:]))


def faiss_ivf(x: np.ndarray, centroids: np.ndarray) -> faiss.IndexIVFFlat:
    quantizer = faiss.IndexFlatL2(x.shape[1])
    quantizer.add(centroids)
    index = faiss.IndexIVFFlat(quantizer, x.shape[1], len(centroids))
    assert index.is_trained
    index.add(x)
    return index


@pytest.mark.parametrize("n, d, nlist", [(500, 3, 4), (4_000, 50, 40), (2_500, 129, 17)])
def test_inverted_lists_are_faiss_lists(nb, n, d, nlist):
    rng = np.random.default_rng(n + d)
    x = clustered(rng, n, d, nlist)
    centroids, _ = nb["kmeans"](x, nlist, 5, rng)
    lists = nb["build_inverted_lists"](x, centroids)
    index = faiss_ivf(x, centroids)
    assert sum(len(ids) for ids in lists) == n
    for j in range(nlist):
        np.testing.assert_array_equal(lists[j], np.sort(nb["faiss_list"](index, j)))


@pytest.mark.parametrize("n, d, nlist, k", [(3_000, 24, 30, 1), (3_000, 24, 30, 10), (6_000, 77, 64, 25)])
def test_ivf_search_returns_faiss_ivfflat_results(nb, n, d, nlist, k):
    rng = np.random.default_rng(100 + n + k)
    x = clustered(rng, n, d, 2 * nlist)
    queries = clustered(rng, 40, d, 2 * nlist)
    centroids, _ = nb["kmeans"](x, nlist, 6, rng)
    lists = nb["build_inverted_lists"](x, centroids)
    index = faiss_ivf(x, centroids)
    for nprobe in (1, 3, nlist):
        index.nprobe = nprobe
        expected_d2, expected_ids = index.search(queries, k)
        for q, e_d2, e_ids in zip(queries, expected_d2, expected_ids):
            d2, ids = nb["ivf_search"](q, x, centroids, lists, k, nprobe)
            assert set(ids) == set(e_ids), f"nprobe={nprobe}"
            np.testing.assert_allclose(d2, e_d2, rtol=1e-4, atol=1e-4)


def test_ivf_search_with_fewer_candidates_than_k_returns_what_faiss_finds(nb):
    rng = np.random.default_rng(3)
    x = clustered(rng, 200, 8, 20)
    centroids, _ = nb["kmeans"](x, 20, 5, rng)
    lists = nb["build_inverted_lists"](x, centroids)
    index = faiss_ivf(x, centroids)
    index.nprobe = 1
    q = x[0] + 0.01
    _, expected = index.search(q[None], 50)  # one list holds fewer than 50 ids: FAISS pads with -1
    _, ids = nb["ivf_search"](q, x, centroids, lists, 50, 1)
    assert set(ids) == set(expected[0][expected[0] >= 0]) and len(ids) < 50


def test_ivf_with_all_lists_probed_is_exact(nb):
    rng = np.random.default_rng(8)
    x = clustered(rng, 1_000, 16, 10)
    centroids, _ = nb["kmeans"](x, 10, 5, rng)
    lists = nb["build_inverted_lists"](x, centroids)
    flat = faiss.IndexFlatL2(16)
    flat.add(x)
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    found = np.array([nb["ivf_search"](q, x, centroids, lists, 5, 10)[1] for q in queries])
    assert nb["recall_at_k"](found, flat.search(queries, 5)[1]) == 1.0


def test_recall_at_k_counts_shared_ids_per_query():
    nb = notebook_definitions(NOTEBOOK)
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 2, 1], [5, 9, 10, 11]])  # order does not matter; 4/4 and 1/4
    assert nb["recall_at_k"](found, truth) == pytest.approx((1.0 + 0.25) / 2)


def test_filtered_top_k_equals_faiss_with_an_id_selector(nb):
    rng = np.random.default_rng(21)
    for _ in range(10):
        n, d, k = int(rng.integers(30, 300)), int(rng.integers(2, 40)), int(rng.integers(1, 8))
        vectors = rng.standard_normal((n, d)).astype(np.float32)
        allowed = rng.random(n) < 0.3
        allowed[:k] = True
        query = rng.standard_normal(d).astype(np.float32)
        np.testing.assert_array_equal(nb["filtered_top_k"](query, vectors, allowed, k),
                                      nb["faiss_filtered"](query, vectors, allowed, k))


def test_hnsw_search_by_hand_finds_what_faiss_finds(nb):
    rng = np.random.default_rng(4)
    x = clustered(rng, 3_000, 32, 60)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = clustered(rng, 60, 32, 60)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index = faiss.IndexHNSWFlat(32, 8)
    index.add(x)
    graph = nb["HNSWGraph"].from_faiss(index)
    for ef in (10, 40):
        index.hnsw.efSearch = ef
        expected = index.search(queries, 10)[1]
        ours = [nb["hnsw_search"](graph, x, q, 10, ef) for q in queries]
        same = np.mean([set(ids) == set(e) for (ids, _), e in zip(ours, expected)])
        assert same >= 0.95, f"efSearch={ef}: only {same:.0%} of the queries agree with FAISS"
        assert max(n for _, n in ours) < len(x) / 2, "the walk must not degenerate into a scan"


def test_hnsw_graph_links_are_faiss_links(nb):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((500, 6)).astype(np.float32)
    index = faiss.IndexHNSWFlat(6, 4)
    index.add(x)
    graph = nb["HNSWGraph"].from_faiss(index)
    levels = faiss.vector_to_array(index.hnsw.levels)
    neighbors, offsets = faiss.vector_to_array(index.hnsw.neighbors), faiss.vector_to_array(index.hnsw.offsets)
    for node in (0, 17, int(graph.entry_point)):
        for layer in range(levels[node]):  # FAISS's own accessors for where a node's layer starts and ends
            begin = int(offsets[node]) + index.hnsw.cum_nb_neighbors(layer)
            expected = neighbors[begin:begin + index.hnsw.nb_neighbors(layer)]
            np.testing.assert_array_equal(graph.links(node, layer), expected[expected >= 0])
            assert len(graph.links(node, layer)) > 0, "every node is linked on each of its layers"
    assert levels[graph.entry_point] == graph.max_level + 1


def test_chunks_keep_every_word_and_respect_the_size():
    nb = notebook_definitions(NOTEBOOK)
    sections = nb["split_sections"](load("python_docs"))
    titles = [title for title, _ in sections]
    assert 'The "assert" statement' in titles and "Lambdas" in titles and len(sections) > 50
    for _, body in sections[:20]:
        for max_chars in (120, 400):
            chunks = nb["chunk_section"](body, max_chars)
            assert all(0 < len(c) <= max_chars for c in chunks)
            assert " ".join(chunks).split() == body.split(), "chunking must not lose or reorder words"


def test_standin_vectors_are_unit_length_with_the_given_covariance(nb):
    rng = np.random.default_rng(2)
    d = 24
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    cov = (basis * np.linspace(3, 0.01, d)) @ basis.T  # anisotropic, like real embeddings
    values, vectors = np.linalg.eigh(cov)
    nb["cov_factor"] = (vectors * np.sqrt(values)).astype(np.float32)  # the notebook's global, set for the test
    samples = nb["gaussian"](200_000, rng)
    np.testing.assert_allclose(np.cov(samples, rowvar=False), cov, atol=0.05)
    topics = nb["gaussian"](10, rng)
    x = nb["make_standin"](500, topics, 0.5, rng)
    assert x.shape == (500, d)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
