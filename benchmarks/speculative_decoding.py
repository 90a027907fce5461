"""Speculative decoding's speed-up, measured: greedy tokens/s with and without a draft, same tokens guaranteed.

    python benchmarks/speculative_decoding.py                                   # packaged SmolLM2-135M-Instruct
    python benchmarks/speculative_decoding.py --drafts ngram early-exit:8 --repeats 5 --new-tokens 64
    python benchmarks/speculative_decoding.py --target HuggingFaceTB/SmolLM2-360M-Instruct \\
        --drafts model:HuggingFaceTB/SmolLM2-135M-Instruct ngram                # the real pair (needs the Hub)

Methods, all greedy, one stream, KV cache, batch 1, timed after one warm-up with `--repeats` repeats:
- `hf-generate`: the target's own `generate` (the baseline); `ours-k0`: utils.speculative with no draft (the
  same loop, one target call per token: the fair baseline for our code);
- `ours-<draft>`: utils.speculative with that draft and `--k` drafted tokens per round;
- `hf-prompt-lookup` (`prompt_lookup_num_tokens=`) and `hf-assisted-<draft>` (`assistant_model=`): transformers'
  own versions of the same ideas.
Every method's tokens are checked equal to `hf-generate`'s (speculative decoding is exact), and each result is
printed as one JSON line: median seconds, min-max, tokens/s, speed-up over hf-generate, acceptance rate.
Two kinds of prompts: `copy` (the answer repeats the prompt: edit a text, fix code) and `open` (free answers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import torch

PROMPTS = {
    "copy": ["Correct the spelling and repeat the whole text: 'The quick brown fox jumpd over the lazy dog. The dog "
             "did not mind, because the fox was his frend and they played toghether every afternoon.'",
             "Rename the variable x to total in this code and show the whole code:\n"
             "def add_all(values):\n    x = 0\n    for v in values:\n        x = x + v\n    return x\n"],
    "open": ["Explain what a Python list is.", "Give three tips for writing clear emails."],
}


def load(path: str) -> tuple[Any, Any]:
    """(model, tokenizer) of a folder or hub id, via utils.chat (fp32 on CPU, eval mode)."""
    from utils.chat import load_chat_model

    return load_chat_model(path=path, device="cpu")


def make_draft(spec: str, target: Any) -> tuple[Any, Any]:
    """(our draft object, an HF assistant model or None) for 'ngram', 'early-exit:N' or 'model:<path>'."""
    from utils.speculative import ModelDraft, NgramDraft, early_exit_model

    if spec == "ngram":
        return NgramDraft(target.config.vocab_size), None
    kind, _, arg = spec.partition(":")
    if kind == "early-exit" and arg.isdigit():
        model = early_exit_model(target, int(arg))
        return ModelDraft(model), model
    if kind == "model" and arg:
        model = load(arg)[0]
        return ModelDraft(model), model
    raise ValueError(f"draft {spec!r} is not known. Allowed: ngram, early-exit:N, model:<folder or hub id>.")


def timed(fn: Callable[[], list[int]], repeats: int) -> tuple[list[int], list[float]]:
    """(the tokens, the seconds of each repeat) after one untimed warm-up run."""
    tokens = fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return tokens, seconds


def methods(target: Any, tok: Any, drafts: list[str], k: int, new: int, ids: torch.Tensor) -> dict[str, Any]:
    """name -> a function returning the new tokens (and filling `stats` for ours)."""
    from utils.speculative import NgramDraft, speculative_generate

    common = dict(max_new_tokens=new, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    prompt = ids[0].tolist()

    def hf(**extra):
        return lambda: target.generate(ids, **common, **extra)[0, ids.shape[1]:].tolist()

    def ours(draft, kk):
        def run():
            out, run.stats = speculative_generate(target, draft, prompt, max_new_tokens=new, k=kk,
                                                  eos_token_id=tok.eos_token_id)
            return out
        return run

    table = {"hf-generate": hf(), "ours-k0": ours(NgramDraft(target.config.vocab_size), 0),
             "hf-prompt-lookup": hf(prompt_lookup_num_tokens=k)}
    for spec in drafts:
        draft, assistant = make_draft(spec, target)
        table[f"ours-{spec}"] = ours(draft, k)
        if assistant is not None:
            table[f"hf-assisted-{spec}"] = hf(assistant_model=assistant)
    return table


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark; one JSON line per (prompt kind, method)."""
    from utils.chat import chat_prompt
    from utils.hub import model_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=None, help="folder or hub id (default: the packaged SmolLM2-135M)")
    parser.add_argument("--drafts", nargs="+", default=["ngram", "early-exit:8"])
    parser.add_argument("--kinds", nargs="+", default=list(PROMPTS), choices=list(PROMPTS))
    parser.add_argument("--k", type=int, default=4, help="drafted tokens per round")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one thread: the course's measuring convention on the shared 2-core machine
    target, tok = load(args.target or model_path("instruct_llm", "smoke"))
    results = []
    for kind in args.kinds:
        for prompt in PROMPTS[kind]:
            text = chat_prompt(tok, [{"role": "user", "content": prompt}])
            ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            table = methods(target, tok, args.drafts, args.k, args.new_tokens, ids)
            reference, base = None, None
            for name, fn in table.items():
                tokens, seconds = timed(fn, args.repeats)
                reference = reference if reference is not None else tokens
                median = statistics.median(seconds)
                base = base or median
                stats = getattr(fn, "stats", None)
                row = dict(kind=kind, prompt=prompt[:40], method=name, tokens=len(tokens), same=tokens == reference,
                           median_s=round(median, 3), min_s=round(min(seconds), 3), max_s=round(max(seconds), 3),
                           tokens_per_s=round(len(tokens) / median, 1), speedup=round(base / median, 2))
                if stats and stats["drafted"]:
                    row["acceptance"] = round(stats["accepted"] / stats["drafted"], 3)
                    row["tokens_per_target_call"] = round(len(tokens) / stats["rounds"], 2)
                print(json.dumps(row), flush=True)
                results.append(row)
    return results


if __name__ == "__main__":
    main()
