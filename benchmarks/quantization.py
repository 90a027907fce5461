"""05.05's table: size, perplexity and speed of the real SmolLM2-135M-Instruct with its blocks in each format.

    OMP_NUM_THREADS=1 python benchmarks/quantization.py                      # 16,384 tokens, every format
    python benchmarks/quantization.py --tokens 2048 --methods fp32 nf4 q4_1    # a quick look
    python benchmarks/quantization.py --path <a Hugging Face model folder>    # e.g. SmolLM2-360M in bf16

The model is `utils.hub.model_path("instruct_llm")` in smoke/offline: the packaged Q4_1 GGUF, dequantized to
float32. Its "fp32" row is therefore NOT an unquantized model: it is the Q4_1 weights written as floats, and
every other row RE-quantizes weights that already sit on a 4-bit grid. Only the 210 matrices of the decoder
blocks change (utils.quantization.quantize_model); the embedding (tied to the head) stays float32.
Perplexity: the text of `utils.data.load("python_docs")`, its first `--tokens` tokens, in windows of `--window`.
Speed: greedy decoding with the KV cache, one stream, `--new-tokens` tokens after a 32-token prompt taken from
later in the text, with the kernel each row really runs here (the fake-quantized rows compute in float32).
One JSON line per row, then a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time

import torch

from utils import quantization as Q


def measure(model: torch.nn.Module, method: str, ids: torch.Tensor, window: int, prompt: torch.Tensor,
            new_tokens: int) -> dict:
    """One row: quantize a copy of `model` with `method`, then its bits per weight, perplexity and speed."""
    start = time.perf_counter()
    copy_ = copy.deepcopy(model)
    bits = Q.quantize_model(copy_, method)
    quantized = time.perf_counter() - start
    n_weights = sum(m.weight.numel() for _, m in Q.block_linears(model))
    row = dict(method=method, format=Q.METHODS[method], bits_per_weight=round(bits, 3),
               block_weights_mb=round(n_weights * bits / 8 / 1e6, 1),
               perplexity=round(Q.perplexity(copy_, ids, window), 3),
               tokens_per_s=round(Q.tokens_per_second(copy_, prompt, new_tokens), 2),
               quantize_s=round(quantized, 1), tokens=ids.shape[1], threads=torch.get_num_threads())
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table, with the perplexity change relative to the first row."""
    base = rows[0]["perplexity"]
    lines = ["| format | bits/weight | block weights | perplexity | vs first row | tokens/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['format']} | {r['bits_per_weight']:.2f} | {r['block_weights_mb']:.0f} MB | "
                     f"{r['perplexity']:.3f} | {100 * (r['perplexity'] / base - 1):+.1f} % | {r['tokens_per_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    """Parse the command line, load the model and the text, and measure each format."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(Q.METHODS), choices=list(Q.METHODS))
    parser.add_argument("--tokens", type=int, default=16384, help="tokens of text for the perplexity")
    parser.add_argument("--window", type=int, default=1024, help="tokens per perplexity window")
    parser.add_argument("--new-tokens", type=int, default=32, help="greedy tokens timed per row")
    parser.add_argument("--path", default=None, help="a model folder (default: the course's instruct_llm)")
    args = parser.parse_args(argv)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # an optional-kernel notice, harmless on CPU

    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from utils.data import load
    from utils.hub import model_path

    transformers.logging.set_verbosity_error()  # the whole corpus is longer than the model's context: we cut it
    path = args.path or model_path("instruct_llm")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    text_ids = tokenizer(load("python_docs"), return_tensors="pt").input_ids  # (1, ~120k)
    if text_ids.shape[1] < args.tokens + 64:
        raise ValueError(f"--tokens must be at most {text_ids.shape[1] - 64}; got {args.tokens}")
    ids, prompt = text_ids[:, :args.tokens], text_ids[:, -32:]  # the prompt comes from text not scored
    rows = [measure(model, m, ids, args.window, prompt, args.new_tokens) for m in args.methods]
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
