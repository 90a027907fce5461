"""Fine-tune the top of a causal LM cheaply: cache the frozen bottom once, train the top blocks on it.

Introduced in 03_llm_apps/07_peft_lora_and_qlora.ipynb (LoRA vs full fine-tuning of the top k blocks).

The recipe of Raschka's *Build a Large Language Model (From Scratch)*, ch. 6 and appendix E, made cheap:

    tokens ──► embeddings ──► blocks 0 .. L-k-1 ──►  h  (cached ONCE, no gradients: they never change)
                                                     │
                          blocks L-k .. L-1 ──► final norm ──► hidden state of the last real token ──► head
                          └──────────── trained (LoRA or full), many times, from the cache ────────────┘

Everything below the top k blocks is frozen in every variant we compare, so its output is a constant of the
data: computing it once and reusing it gives the same numbers as running the whole model at every step, at
k / L of the cost. Batches are right-padded; with causal attention a real token never attends to a pad on its
right, so the padded positions change nothing we read. Nothing happens at import time.
"""

from __future__ import annotations

import ast
import random
import sysconfig
import time
from pathlib import Path
from typing import Any, Sequence

# Pure-Python standard-library modules whose source lines make the statements of the syntax task.
STDLIB_MODULES = (
    "argparse", "calendar", "configparser", "csv", "dataclasses", "difflib", "enum", "fractions", "functools",
    "gettext", "glob", "heapq", "inspect", "ipaddress", "json/decoder", "json/encoder", "locale",
    "logging/__init__", "mimetypes", "netrc", "optparse", "pathlib", "platform", "pprint", "random", "secrets",
    "shlex", "shutil", "smtplib", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "typing", "urllib/parse", "uuid", "zipfile",
)
BREAKABLE = "()[]{}:,'\"="  # characters whose deletion or doubling usually breaks a statement
SIMPLE_STATEMENTS = ("Assign", "AugAssign", "Expr", "Return", "Raise")


def parses(code: str) -> bool:
    """True if `code` is valid Python (the label of the syntax task comes from here, not from a person)."""
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


def stdlib_statements(min_chars: int = 16, max_chars: int = 48) -> list[str]:
    """Sorted, unique one-line statements (assignments, calls, returns, raises with a bracket) from the stdlib."""
    if not 1 <= min_chars <= max_chars:
        raise ValueError(f"need 1 <= min_chars <= max_chars; got min_chars={min_chars}, max_chars={max_chars}.")
    root = Path(sysconfig.get_paths()["stdlib"])
    found = set()
    for module in STDLIB_MODULES:
        for line in (root / f"{module}.py").read_text(encoding="utf-8").splitlines():
            code = line.strip()
            if not min_chars <= len(code) <= max_chars or not any(c in code for c in "()[]{}"):
                continue
            try:
                body = ast.parse(code).body
            except SyntaxError:  # a line of a longer statement (an `if ...:` header, half a call)
                continue
            if len(body) == 1 and type(body[0]).__name__ in SIMPLE_STATEMENTS:
                found.add(code)
    return sorted(found)


def corrupt(code: str, rng: random.Random) -> str:
    """`code` with one bracket, quote, colon, comma or '=' deleted or doubled, such that it no longer parses."""
    spots = [i for i, c in enumerate(code) if c in BREAKABLE]
    if not spots:
        raise ValueError(f"nothing to corrupt in {code!r}: it has none of {BREAKABLE!r}.")
    for _ in range(100):
        i = rng.choice(spots)
        broken = code[:i] + code[i + 1:] if rng.random() < 0.5 else code[:i] + code[i] + code[i:]
        if not parses(broken):  # a few edits keep it valid (`f(a, b,)` -> `f(a, b)`): test, retry
            return broken
    raise ValueError(f"no single edit of {code!r} broke it in 100 tries.")


def syntax_task(n: int, seed: int = 0, min_chars: int = 16, max_chars: int = 48) -> list[dict[str, Any]]:
    """n examples {text, label (1 = parses), original, assign (1 = the original is an assignment)}, shuffled."""
    statements = stdlib_statements(min_chars, max_chars)
    if not 1 <= n <= len(statements):
        raise ValueError(f"n must be between 1 and {len(statements)} (the statements found); got {n}.")
    rng = random.Random(seed)
    rng.shuffle(statements)
    examples = []
    for code in statements[:n]:
        text = code if rng.random() < 0.5 else corrupt(code, rng)  # half valid, half broken
        assign = type(ast.parse(code).body[0]).__name__ in ("Assign", "AugAssign")
        examples.append({"text": text, "label": int(parses(text)), "original": code, "assign": int(assign)})
    return examples


def cache_bottom(model: Any, tokenizer: Any, texts: Sequence[str], n_top: int, batch_size: int = 32,
                 progress: bool = True) -> tuple[Any, Any]:
    """(h, lengths): the input of block L - n_top for every text, (N, T_max, d) right-padded, and (N,) lengths."""
    import torch
    from tqdm.auto import tqdm

    layers = model.model.layers
    if not 1 <= n_top <= len(layers):
        raise ValueError(f"n_top must be between 1 and {len(layers)} (the model's blocks); got {n_top}.")
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    lengths = torch.tensor([len(i) for i in ids])
    h = torch.zeros(len(ids), int(lengths.max()), model.config.hidden_size)
    order = sorted(range(len(ids)), key=lambda i: lengths[i])  # similar lengths together: little padding
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.no_grad():
        for batch in tqdm(batches, desc=f"blocks 0-{len(layers) - n_top - 1}, once", disable=not progress):
            T = int(lengths[batch].max())
            x = torch.full((len(batch), T), tokenizer.pad_token_id, device=model.device)
            for row, i in enumerate(batch):
                x[row, :lengths[i]] = torch.tensor(ids[i])
            h[batch, :T] = run_blocks(model.model.rotary_emb, model.model.embed_tokens(x),
                                      layers[:len(layers) - n_top]).cpu()  # the cache lives in CPU memory
    return h, lengths


def run_blocks(rotary_emb: Any, x: Any, blocks: Sequence[Any]) -> Any:
    """x (B, T, d) through decoder `blocks` with causal attention and positions 0..T-1 (rotary)."""
    import torch

    positions = torch.arange(x.shape[1], device=x.device)[None]  # (1, T)
    cos_sin = rotary_emb(x, positions)  # the rotary position embeddings, shared by all blocks
    for block in blocks:  # attention_mask=None: plain causal attention (pads are on the right)
        x = block(x, attention_mask=None, position_embeddings=cos_sin, position_ids=positions)
    return x


def top_classifier(model: Any, n_top: int, n_classes: int) -> Any:
    """A module: (h (B, T, d), lengths (B,)) -> logits (B, n_classes) = head(norm(top blocks(h))[last token])."""
    import copy

    import torch
    from torch import nn

    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2; got {n_classes}.")
    layers = model.model.layers
    if not 1 <= n_top <= len(layers):
        raise ValueError(f"n_top must be between 1 and {len(layers)} (the model's blocks); got {n_top}.")

    class Top(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = copy.deepcopy(layers[len(layers) - n_top:])  # copies: the base model stays as it was
            self.norm = copy.deepcopy(model.model.norm)
            self.rotary_emb = copy.deepcopy(model.model.rotary_emb)
            with torch.random.fork_rng():  # the same starting head for every variant, the caller's seed untouched
                torch.manual_seed(0)
                self.score = nn.Linear(model.config.hidden_size, n_classes, bias=False)  # the new head

        def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            x = self.norm(run_blocks(self.rotary_emb, h[:, :int(lengths.max())], self.layers))  # (B, T, d)
            last = x[torch.arange(len(h), device=h.device), lengths - 1]  # (B, d): the last real token read it all
            return self.score(last)  # (B, n_classes)

    return Top().to(model.device).requires_grad_(True)  # all trainable (the base may be frozen); callers freeze


def train_classifier(model: Any, h: Any, lengths: Any, labels: Any, *, steps: int, lr: float,
                     batch_size: int = 16, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """AdamW on cross-entropy over random batches of the cached (h, lengths, labels); returns {loss, seconds}."""
    import torch
    from tqdm.auto import tqdm

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1; got steps={steps}, batch_size={batch_size}.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad=False everywhere).")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device = params[0].device  # the cache stays in CPU memory; each batch moves to the model
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses, start = [], time.perf_counter()
    for _ in tqdm(range(steps), desc="train", disable=not progress):
        batch = torch.randint(len(labels), (batch_size,), generator=generator)
        logits = model(h[batch].to(device), lengths[batch].to(device))
        loss = torch.nn.functional.cross_entropy(logits, labels[batch].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return {"loss": losses, "seconds": time.perf_counter() - start}


def predict(model: Any, h: Any, lengths: Any, batch_size: int = 64) -> Any:
    """(N,) predicted class of every cached example, in eval mode without gradients."""
    import torch

    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        return torch.cat([model(h[i:i + batch_size].to(device), lengths[i:i + batch_size].to(device)).argmax(-1).cpu()
                          for i in range(0, len(lengths), batch_size)])


def to_4bit(module: Any, keep: Sequence[str] = (), blocksize: int = 64) -> Any:
    """`module` with every nn.Linear (except those named in `keep`) replaced, in place, by a frozen bitsandbytes
    NF4 Linear4bit (float32 absmax per block, computing in float32); flagged `is_loaded_in_4bit` (as transformers
    does, so that peft picks its 4-bit LoRA layer)."""
    import bitsandbytes as bnb
    import torch
    from torch import nn

    for name, child in list(module.named_children()):
        if name in keep:
            continue
        if isinstance(child, nn.Linear):
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=torch.float32, quant_type="nf4")
            # Params4bit quantizes when it is moved to a device: (out, in) floats -> (out * in / 2, 1) bytes.
            # compress_statistics=False: the absmax per block stays float32 (QLoRA's "double quantization"
            # would store it in 8 bits too, saving 0.37 bits per weight, at the cost of a second lookup).
            q.weight = bnb.nn.Params4bit(child.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                         blocksize=blocksize, compress_statistics=False)
            # On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight at its first no-grad eval forward into
            # a CPU-only layout with bfloat16 absmax: faster, but other numbers and unreadable as NF4 codes.
            # We keep the portable layout, so that every CPU computes (and stores) the same thing.
            q.support_avx512bf16_for_cpu = False
            if child.bias is not None:
                q.bias = nn.Parameter(child.bias.data.clone(), requires_grad=False)
            setattr(module, name, q.to(child.weight.device))
        else:
            to_4bit(child, keep, blocksize)
    module.is_loaded_in_4bit = True
    return module


def tensor_bytes(module: Any) -> int:
    """Bytes held by a module's parameters and buffers, plus the block scales (absmax) of 4-bit weights."""
    tensors = list(module.parameters()) + list(module.buffers())
    scales = [t.quant_state.absmax for t in tensors if getattr(t, "quant_state", None) is not None]
    return sum(t.numel() * t.element_size() for t in tensors + scales)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts of a module."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
