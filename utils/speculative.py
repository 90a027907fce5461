"""Speculative decoding from scratch: a cheap draft guesses k tokens, the target checks them in ONE forward pass.

Introduced in 05_frontier/07_efficient_inference.ipynb; benchmarks/speculative_decoding.py measures it.

One round (Leviathan et al. 2023, Chen et al. 2023), with p = the target's and q = the draft's next-token
distributions (after temperature; at temperature 0 both are one-hot on the argmax):
1. the draft proposes x_1..x_k, one token at a time, remembering q_i = q(. | prefix, x_<i);
2. the target reads [last token, x_1..x_k] in one pass and returns p_1..p_{k+1};
3. x_i is accepted with probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection the round ends with a
   token drawn from the residual norm(max(p_i - q_i, 0)); if all k are accepted, a bonus token from p_{k+1}.
Each round emits between 1 and k + 1 tokens, and the emitted sequence has EXACTLY the target's distribution
(at temperature 0: exactly the target's greedy tokens), whatever the draft.

A draft is any object with `propose(ids, k, temperature, generator) -> (tokens, q)`, q of shape (k, V):
`ModelDraft` (a smaller language model with the same tokenizer) or `NgramDraft` (prompt lookup: copy what
followed the last n-gram earlier in the text; no model at all). Batch size 1; torch is imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def next_token_probs(logits: "torch.Tensor", temperature: float) -> "torch.Tensor":
    """Rows of logits (..., V) -> next-token distributions: softmax(logits / T), one-hot argmax at T = 0."""
    import torch

    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy); got {temperature!r}.")
    logits = logits.float()
    if temperature == 0:  # greedy is the limit T -> 0: all the mass on the argmax
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return torch.softmax(logits / temperature, dim=-1)


def _sample(probs: "torch.Tensor", generator: Any) -> int:
    """One token from a distribution (V,); the argmax when it is one-hot (no random number used)."""
    import torch

    if probs.max() == 1.0:
        return int(probs.argmax())
    return int(torch.multinomial(probs, 1, generator=generator))


def verify(p: "torch.Tensor", q: "torch.Tensor", drafted: list[int], generator: Any = None) -> tuple[int, int]:
    """(n accepted, next token): the acceptance rule on the target's p (k+1, V) and the draft's q (k, V)."""
    import torch

    k = len(drafted)
    if p.shape[0] != k + 1 or q.shape[0] != k or p.shape[-1] != q.shape[-1]:
        raise ValueError(f"need p of shape (k+1, V) and q of shape (k, V) for k={k} drafted tokens; "
                         f"got p {tuple(p.shape)}, q {tuple(q.shape)}.")
    for i, x in enumerate(drafted):
        ratio = p[i, x] / q[i, x]  # q[i, x] > 0: the draft sampled x from q
        u = torch.rand((), generator=generator)
        if u < ratio:  # accept with probability min(1, p/q)
            continue
        residual = torch.clamp(p[i] - q[i], min=0)  # the mass p has and q over-proposed elsewhere
        return i, _sample(residual / residual.sum(), generator)
    return k, _sample(p[k], generator)  # all accepted: a bonus token from the target's last row


class CachedLM:
    """A Hugging Face causal LM with its KV cache: `extend` feeds new tokens, `rollback` forgets rejected ones."""

    def __init__(self, model: Any):
        self.model = model
        self.reset()

    def reset(self) -> None:
        """Empty cache."""
        self.cache, self.length = None, 0

    def extend(self, ids: list[int]) -> "torch.Tensor":
        """Feed `ids` after the cached tokens; their next-token logits (len(ids), V) in float32."""
        import torch
        from transformers import DynamicCache

        if self.cache is None:
            self.cache = DynamicCache(config=self.model.config)
        x = torch.tensor([ids], device=self.model.device)  # (1, n)
        with torch.no_grad():
            out = self.model(input_ids=x, past_key_values=self.cache, use_cache=True)
        self.length += len(ids)
        return out.logits[0].float()  # (n, V)

    def rollback(self, length: int) -> None:
        """Keep only the first `length` cached tokens (drop the keys/values of rejected ones)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"length must be in [0, {self.length}]; got {length}.")
        if length < self.length:
            self.cache.crop(length - self.length)  # transformers 5: a negative number = tokens to remove
            self.length = length


class ModelDraft:
    """A small language model as the draft: k cheap autoregressive steps, each from its own KV cache."""

    def __init__(self, model: Any):
        self.lm = CachedLM(model)
        self.seen: list[int] = []  # the tokens whose keys/values are in the draft's cache

    def propose(self, ids: list[int], k: int, temperature: float, generator: Any = None) -> tuple[list[int], Any]:
        """k drafted tokens after `ids` and their distributions q (k, V)."""
        import torch

        same = 0  # keep the cached prefix that `ids` still starts with; feed the rest
        while same < min(len(self.seen), len(ids) - 1) and self.seen[same] == ids[same]:
            same += 1
        self.lm.rollback(same)
        logits = self.lm.extend(ids[same:])[-1]
        self.seen = list(ids)
        tokens, qs = [], []
        for i in range(k):
            q = next_token_probs(logits, temperature)
            tokens.append(_sample(q, generator))
            qs.append(q)
            if i < k - 1:  # the last drafted token is never fed: the target will read it
                logits = self.lm.extend(tokens[-1:])[-1]
                self.seen.append(tokens[-1])
        vocab = logits.shape[-1]
        return tokens, torch.stack(qs) if qs else torch.zeros(0, vocab)


class NgramDraft:
    """Prompt-lookup drafting: find the last n-gram earlier in the text and propose what followed it."""

    def __init__(self, vocab_size: int, max_ngram: int = 3):
        if max_ngram < 1:
            raise ValueError(f"max_ngram must be >= 1; got {max_ngram}.")
        self.vocab_size, self.max_ngram = vocab_size, max_ngram

    def propose(self, ids: list[int], k: int, temperature: float, generator: Any = None) -> tuple[list[int], Any]:
        """Up to k tokens copied from the text (none when no n-gram repeats); q is one-hot (a sure guess)."""
        import torch

        tokens: list[int] = []
        for n in range(self.max_ngram, 0, -1):  # the longest matching n-gram first
            tail = ids[-n:]
            for start in range(len(ids) - n - 1, -1, -1):  # the most recent earlier occurrence
                if ids[start:start + n] == tail:
                    tokens = ids[start + n:start + n + k]
                    break
            if tokens:
                break
        q = torch.nn.functional.one_hot(torch.tensor(tokens, dtype=torch.long), self.vocab_size).float()
        return tokens, q.reshape(len(tokens), self.vocab_size)


def speculative_generate(target: Any, draft: Any, prompt_ids: list[int], *, max_new_tokens: int, k: int = 4,
                         temperature: float = 0.0, eos_token_id: int | None = None,
                         generator: Any = None) -> tuple[list[int], dict[str, int]]:
    """(new tokens, stats): sample from `target` with speculative decoding; greedy (== target's) at T = 0."""
    if not prompt_ids:
        raise ValueError("prompt_ids must hold at least one token.")
    if k < 0 or max_new_tokens < 1:
        raise ValueError(f"need k >= 0 and max_new_tokens >= 1; got k={k}, max_new_tokens={max_new_tokens}.")
    lm = CachedLM(target)
    ids = list(prompt_ids)
    if len(ids) > 1:
        lm.extend(ids[:-1])  # invariant: the target's cache holds ids[:-1]; the last token is read next round
    stats = {"rounds": 0, "drafted": 0, "accepted": 0}
    new: list[int] = []
    while len(new) < max_new_tokens:
        budget = min(k, max_new_tokens - len(new) - 1)  # never draft past the budget (the round adds 1 more)
        drafted, q = draft.propose(ids, budget, temperature, generator) if budget > 0 else ([], None)
        p = next_token_probs(lm.extend(ids[-1:] + drafted), temperature)  # (k+1, V) in ONE target pass
        if not drafted:  # no guess (an n-gram draft found no match): an ordinary decoding step
            q = p[:0]
        n_ok, nxt = verify(p, q, drafted, generator)
        emitted = drafted[:n_ok] + [nxt]
        lm.rollback(len(ids) + n_ok)  # cache = old ids + accepted drafts = the new ids[:-1]
        ids += emitted
        new += emitted
        stats["rounds"] += 1
        stats["drafted"] += len(drafted)
        stats["accepted"] += n_ok
        if eos_token_id is not None and eos_token_id in emitted:
            new = new[:len(new) - len(emitted) + emitted.index(eos_token_id) + 1]
            break
    return new[:max_new_tokens], stats



def early_exit_model(model: Any, n_layers: int) -> Any:
    """The target's first `n_layers` blocks + its final norm and head, weights SHARED: a self-speculative draft."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    total = model.config.num_hidden_layers
    if not 1 <= n_layers <= total:
        raise ValueError(f"n_layers must be in [1, {total}]; got {n_layers}.")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = n_layers
    with torch.device("meta"):  # an empty shell: no memory, no random init; its parts are replaced below
        draft = AutoModelForCausalLM.from_config(config)
    body, shell = model.model, draft.model  # LlamaModel-style: embed_tokens, layers, norm, rotary_emb
    shell.embed_tokens, shell.norm, shell.rotary_emb = body.embed_tokens, body.norm, body.rotary_emb
    shell.layers = torch.nn.ModuleList(body.layers[:n_layers])  # block i keeps layer_idx i: the cache lines up
    draft.lm_head = model.lm_head
    return draft.to(model.device).eval()
