"""05.05's from-scratch quantization against the libraries: NF4 (utils.quantization) == bitsandbytes' quantize_4bit
(codebook, packed codes, absmax) and dequantize_4bit, bit for bit; Q4_1 dequantization == the `gguf` package's on
bytes that gguf.quants.quantize wrote and on every Q4_1 tensor of the real SmolLM2-135M-Instruct file, bit for bit;
the GGUF header read by hand == GGUFReader's; and the notebook's own from-scratch functions against utils."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from utils import quantization as Q
from utils.notebooks import notebook_definitions

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # the optional-kernel notice is noise here

NOTEBOOK = Path(__file__).resolve().parents[2] / "05_frontier" / "05_quantization.ipynb"


@pytest.fixture(scope="module")
def nb() -> dict:
    return notebook_definitions(NOTEBOOK, solutions=True)


def bits(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """float32 values as their 32-bit patterns: equal arrays here mean equal bit for bit (NaN and -0 included)."""
    array = t.numpy() if isinstance(t, torch.Tensor) else t
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("seed, shape, blocksize", [(0, (8, 256), 64), (1, (3, 64), 64), (2, (16, 128), 128),
                                                    (3, (4, 96), 32)])
def test_nf4_equals_bitsandbytes(seed, shape, blocksize):
    import bitsandbytes.functional as bnbF

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * float(torch.rand(1, generator=gen) * 5 + 0.1)
    x[0, :blocksize] = 0.0  # an all-zero block: absmax 0 must not produce NaN
    packed, absmax = Q.nf4_quantize(x, blocksize)
    ref_packed, state = bnbF.quantize_4bit(x, blocksize=blocksize, quant_type="nf4")
    assert np.array_equal(bits(Q.nf4_code()), bits(state.code))
    assert torch.equal(packed, ref_packed)
    assert np.array_equal(bits(absmax), bits(state.absmax))
    ours = Q.nf4_dequantize(packed, absmax, tuple(shape), blocksize)
    assert np.array_equal(bits(ours), bits(bnbF.dequantize_4bit(ref_packed, state)))


@pytest.mark.parametrize("seed, rows, blocks", [(0, 4, 3), (1, 1, 1), (2, 7, 18)])
def test_q4_1_dequantize_equals_gguf_on_written_bytes(seed, rows, blocks):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, blocks * 32)) * rng.uniform(0.01, 3)).astype(np.float32)
    w[0, :32] = 0.5  # a constant block: d = 0
    raw = quantize(w, GGMLQuantizationType.Q4_1)           # (rows, blocks * 20) uint8
    assert raw.shape == (rows, blocks * Q.Q4_1_BYTES)
    assert np.array_equal(bits(Q.q4_1_dequantize(raw)), bits(dequantize(raw, GGMLQuantizationType.Q4_1)))


@pytest.fixture(scope="module")
def reader():
    from gguf import GGUFReader

    return GGUFReader(Q.packaged_gguf())


def test_q4_1_dequantize_equals_gguf_on_the_real_file(reader):
    from gguf.quants import dequantize

    q4_1 = [t for t in reader.tensors if t.tensor_type.name == "Q4_1"]
    assert len(q4_1) == 210  # 30 blocks x 7 matrices
    for tensor in q4_1:
        ours, theirs = Q.q4_1_dequantize(tensor.data), dequantize(tensor.data, tensor.tensor_type)
        assert ours.shape == theirs.shape, tensor.name
        assert np.array_equal(bits(ours), bits(theirs)), tensor.name


def test_notebook_header_reader_equals_gguf(nb, reader):
    header = nb["read_gguf_header"](Q.packaged_gguf())
    assert header["version"] == reader.fields["GGUF.version"].contents()
    assert header["tensor_count"] == len(reader.tensors)
    assert header["kv_count"] == reader.fields["GGUF.kv_count"].contents()
    with open(Q.packaged_gguf(), "rb") as f:
        assert f.read(4) == b"GGUF" and struct.unpack("<I", f.read(4))[0] == header["version"]


def test_notebook_q4_1_block_equals_utils_and_gguf(nb, reader):
    from gguf.quants import dequantize

    tensor = next(t for t in reader.tensors if t.tensor_type.name == "Q4_1")
    for i in (0, 1, 57):
        block = tensor.data.reshape(-1, Q.Q4_1_BYTES)[i]
        ours = nb["dequantize_q4_1_block"](block)
        assert np.array_equal(bits(ours), bits(dequantize(block[None], tensor.tensor_type)[0]))


def test_notebook_quantizers_equal_utils(nb):
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(12, 64, generator=gen) * 2 + 0.3
    for b in (3, 4, 8):
        q, s = Q.absmax_quantize(w, b, dim=0)
        assert torch.allclose(nb["absmax_quantize"](w, b, dim=0)[0].float(), q.float())
        assert torch.allclose(nb["absmax_quantize"](w, b, dim=0)[1], s)
        zq, zs, zz = Q.zeropoint_quantize(w, b, dim=0)
        nq, ns, nz = nb["zeropoint_quantize"](w, b, dim=0)
        assert torch.equal(nq.float(), zq.float()) and torch.allclose(ns, zs) and torch.equal(nz, zz)


def test_notebook_gptq_layer_equals_utils_and_beats_rtn(nb):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(256, 48, generator=gen) @ torch.randn(48, 48, generator=gen)  # correlated inputs
    w = torch.randn(16, 48, generator=gen)
    for bits in (3, 4):
        ours = nb["gptq_layer"](w, x, bits)
        assert torch.allclose(ours, Q.gptq_quantize(w, x, bits), atol=1e-6)
        rtn = Q.fake_quantize(w, bits, scheme="zeropoint")
        assert (x @ (ours - w).T).norm() < (x @ (rtn - w).T).norm()


def test_notebook_llm_int8_matmul_keeps_outlier_columns_exact(nb):
    gen = torch.Generator().manual_seed(8)
    x, w = torch.randn(32, 64, generator=gen), torch.randn(16, 64, generator=gen)
    x[:, 5] *= 40  # one outlier feature
    exact = x @ w.T
    plain, split = nb["int8_matmul"](x, w), nb["llm_int8_matmul"](x, w)
    assert (split - exact).norm() < 0.5 * (plain - exact).norm()
    calm = x.clone()
    calm[:, 5] /= 40  # no feature above the threshold: the two are the same computation
    assert torch.equal(nb["int8_matmul"](calm, w), nb["llm_int8_matmul"](calm, w))
