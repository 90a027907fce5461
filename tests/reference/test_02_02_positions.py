"""02.02 embeddings and positions: the notebook's from-scratch pieces against the formula and the libraries.

The notebook's functions are imported without running it (utils.notebooks.notebook_definitions): no training,
no download. Each test would fail if the from-scratch code were wrong.
"""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "02_transformers" / "02_embeddings_and_positions.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return notebook_definitions(NOTEBOOK, solutions=True)


def test_embedding_is_a_one_hot_matmul_forward_and_backward(nb):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 8)
    idx = torch.randint(0, 50, (3, 7))
    idx[0, :2] = 5  # a repeated token must sum its gradients
    weight = emb.weight.detach().clone().requires_grad_()
    out = nb["one_hot_embedding"](idx, weight)
    assert torch.equal(out, emb(idx))
    upstream = torch.randn(3, 7, 8)
    (out * upstream).sum().backward()
    (emb(idx) * upstream).sum().backward()
    torch.testing.assert_close(weight.grad, emb.weight.grad)
    unused = torch.ones(50, dtype=torch.bool)
    unused[idx.flatten()] = False
    assert (weight.grad[unused] == 0).all(), "only looked-up rows may receive a gradient"


def test_sinusoidal_positions_match_the_formula_and_xlm(nb):
    from transformers.models.xlm.modeling_xlm import create_sinusoidal_embeddings

    pe = nb["sinusoidal_positions"](40, 12)
    for p in range(40):
        for i in range(6):
            angle = p / 10000 ** (2 * i / 12)
            assert math.isclose(pe[p, 2 * i].item(), math.sin(angle), abs_tol=1e-12)
            assert math.isclose(pe[p, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-12)
    library = create_sinusoidal_embeddings(300, 32, torch.empty(300, 32))
    torch.testing.assert_close(nb["sinusoidal_positions"](300, 32).float(), library, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="even"):
        nb["sinusoidal_positions"](10, 7)


def test_a_sinusoidal_shift_is_a_rotation(nb):
    pe = nb["sinusoidal_positions"](600, 24)
    for k in (1, 3, 250):
        M = nb["sinusoidal_shift_matrix"](k, 24)
        torch.testing.assert_close(pe[:-k] @ M.T, pe[k:], rtol=0, atol=1e-9)
        torch.testing.assert_close(M @ M.T, torch.eye(24, dtype=torch.float64), rtol=0, atol=1e-12)


def test_rope_interleaved_is_a_complex_rotation(nb):
    torch.manual_seed(1)
    x, positions = torch.randn(2, 3, 50, 16, dtype=torch.float64), torch.arange(50) * 7
    angles = positions[:, None].double() * 10000.0 ** (-torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    expected = torch.view_as_real(torch.view_as_complex(x.reshape(2, 3, 50, 8, 2)) * torch.polar(
        torch.ones_like(angles), angles)).reshape(2, 3, 50, 16)
    torch.testing.assert_close(nb["rope_interleaved"](x, positions), expected, rtol=0, atol=1e-12)


def test_rope_score_depends_only_on_the_distance(nb):
    torch.manual_seed(2)
    rope, D, N = nb["rope_interleaved"], 32, 2000
    q, k = torch.randn(D, dtype=torch.float64), torch.randn(D, dtype=torch.float64)
    m, n = torch.randint(0, 8192, (N,)), torch.randint(0, 8192, (N,))
    shift = torch.randint(-5000, 5000, (N,))  # any common shift, negative positions included

    def score(m, n):
        return (rope(q.expand(N, D), m) * rope(k.expand(N, D), n)).sum(-1)

    gap = (score(m, n) - score(m + shift, n + shift)).abs().max().item()
    assert gap < 1e-9, f"RoPE score changed under a common shift by {gap:.1e}"
    assert (score(m, n) - score(m, n + 1)).abs().max().item() > 1e-3, "the score must depend on m - n"


def test_rope_layouts_differ_by_the_even_odd_permutation(nb):
    torch.manual_seed(3)
    x, positions = torch.randn(4, 30, 20, dtype=torch.float64), torch.arange(30) + 100
    pi = nb["interleaved_to_half"](20)
    assert pi.tolist() == list(range(0, 20, 2)) + list(range(1, 20, 2))
    torch.testing.assert_close(nb["rope_half"](x[..., pi], positions),
                               nb["rope_interleaved"](x, positions)[..., pi], rtol=0, atol=1e-12)


@pytest.mark.parametrize("rope_type, factor", [("default", 1.0), ("linear", 4.0)])
def test_rope_half_matches_transformers_llama(nb, rope_type, factor):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    torch.manual_seed(4)
    B, H, T, D = 2, 3, 512, 16
    parameters = {"rope_type": rope_type, "rope_theta": 10000.0}
    if rope_type == "linear":
        parameters["factor"] = factor
    config = LlamaConfig(hidden_size=H * D, num_attention_heads=H, rope_parameters=parameters)
    q, k = torch.randn(B, H, T, D), torch.randn(B, H, T, D)
    position_ids = torch.arange(T).expand(B, T) + torch.tensor([[0], [300]])  # two different offsets
    cos, sin = LlamaRotaryEmbedding(config)(q, position_ids)
    hf_q, hf_k = apply_rotary_pos_emb(q, k, cos, sin)
    # HF computes the angles in float32: ~1e-4 rounding at positions of ~800 radians.
    positions = position_ids[:, None, :] / factor  # (B, 1, T) broadcasts over heads
    torch.testing.assert_close(nb["rope_half"](q, positions), hf_q, rtol=0, atol=1e-3)
    torch.testing.assert_close(nb["rope_half"](k, positions), hf_k, rtol=0, atol=1e-3)


def test_skipgram_pieces(nb):
    torch.manual_seed(5)
    # sample_pairs: on a stream of distinct ids, the context is 1..window positions away from the centre.
    ids = torch.arange(1000)
    centre, context = nb["sample_pairs"](ids, torch.ones(1000, dtype=torch.float64), 3, 500, torch.Generator().manual_seed(0))
    assert len(centre) == 500
    distance = (centre - context).abs()
    assert distance.min() >= 1 and distance.max() <= 3
    # An untrained SkipGram scores everything 0, so its loss is (1 + K) log 2.
    model = nb["SkipGram"](20, 8)
    candidates = torch.randint(0, 20, (6, 4))
    targets = torch.zeros(6, 4)
    targets[:, 0] = 1
    scores, loss = model(torch.randint(0, 20, (6,)), candidates, targets)
    assert scores.shape == (6, 4) and math.isclose(loss.item(), 4 * math.log(2), rel_tol=1e-6)
    # cooccurrence_auc: 1 when true pairs share a vector and random pairs are orthogonal, 0 when reversed.
    vectors = torch.eye(10).repeat_interleave(2, dim=0)  # words 2j and 2j+1 share a vector
    c, o = torch.arange(0, 20, 2), torch.arange(1, 20, 2)
    shuffled = torch.roll(o, 1)
    assert nb["cooccurrence_auc"](vectors, c, o, shuffled) == pytest.approx(1.0)
    assert nb["cooccurrence_auc"](vectors, c, shuffled, o) == pytest.approx(0.0)


def test_cosine_neighbours_exclude_the_query(nb):
    vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, -0.2]])
    ids, sims = nb["cosine_neighbours"](vectors, torch.tensor([0, 2]), k=2)
    assert ids.tolist() == [[1, 2], [1, 0]]
    assert sims[0, 0].item() == pytest.approx(0.9 / math.hypot(0.9, 0.1))


def test_exercise_solutions(solutions):
    torch.manual_seed(6)
    weight, idx = torch.randn(30, 5, dtype=torch.float64), torch.randint(1, 30, (3, 6))
    mask = torch.arange(6)[None] < torch.tensor([[6], [2], [4]])
    expected = torch.stack([weight[idx[b, mask[b]]].mean(0) for b in range(3)])
    torch.testing.assert_close(solutions["mean_embedding"](weight, idx, mask), expected)
    bias = solutions["alibi_bias"](4, 5)
    assert bias.shape == (4, 5, 5) and bias[0, 1, 2] == 0 and bias[0, 2, 1] < 0
    assert bias[1, 4, 1].item() == pytest.approx(-(2 ** -4) * 3)
    x = torch.randn(2, 3, 9, 8)
    position_ids = torch.arange(9) + torch.tensor([[0], [50]])
    torch.testing.assert_close(solutions["rope_batch"](x, position_ids, 2.0),
                               solutions["rope_half"](x, position_ids[:, None, :] / 2.0))
