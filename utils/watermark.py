"""Green-list text watermarking (Kirchenbauer et al., 2023), from scratch: mark while sampling, detect with a z-test.

Introduced in 05_frontier/09_responsible_ai.ipynb. Before each token, the previous token seeds a pseudo-random
generator that splits the vocabulary into a green list (a fraction γ of it) and a red list; the sampler adds δ to
the green logits. A detector that knows the key recounts the green tokens: plain text hits green a fraction γ of
the time, watermarked text more often, and the z-score of the count tells them apart.

The seeding is transformers' "lefthash" scheme with a context of one token (the default of `WatermarkingConfig`):
seed = key × previous token id, and the green list is the first ⌊γV⌋ entries of `torch.randperm(V)` drawn from a
`torch.Generator` with that seed. Using the same generator is what makes our green lists, logits and z-scores
equal to `WatermarkLogitsProcessor` and `WatermarkDetector` (tests/reference/test_05_09_watermark.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch

HASH_KEY = 15_485_863
"""transformers' default key (the millionth prime). A real deployment keeps its own key secret."""


def _check_gamma(gamma: float) -> None:
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma (the green fraction of the vocabulary) must be in (0, 1); got {gamma}.")


def green_list(prev_token: int, vocab_size: int, gamma: float = 0.25, key: int = HASH_KEY) -> "torch.Tensor":
    """The green token ids that follow `prev_token`: the first ⌊γV⌋ of a permutation seeded by key × prev_token."""
    import torch

    _check_gamma(gamma)
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2; got {vocab_size}.")
    generator = torch.Generator(device="cpu")
    generator.manual_seed((key * int(prev_token)) % (2**64 - 1))  # a 64-bit seed, as transformers reduces it
    permutation = torch.randperm(vocab_size, generator=generator)  # (V,)
    return permutation[: int(vocab_size * gamma)]  # (⌊γV⌋,)


class GreenLists:
    """Green lists as boolean masks over the vocabulary, computed once per previous token and then remembered."""

    def __init__(self, vocab_size: int, gamma: float = 0.25, key: int = HASH_KEY) -> None:
        _check_gamma(gamma)
        self.vocab_size, self.gamma, self.key = vocab_size, gamma, key
        self._masks: dict[int, "torch.Tensor"] = {}

    def mask(self, prev_token: int) -> "torch.Tensor":
        """(V,) bool: True where a token is green after `prev_token`."""
        import torch

        prev_token = int(prev_token)
        if prev_token not in self._masks:  # a randperm of the whole vocabulary costs milliseconds: do it once
            mask = torch.zeros(self.vocab_size, dtype=torch.bool)
            mask[green_list(prev_token, self.vocab_size, self.gamma, self.key)] = True
            self._masks[prev_token] = mask
        return self._masks[prev_token]

    def is_green(self, prev_token: int, token: int) -> bool:
        """Whether `token` is on the green list that `prev_token` seeds."""
        return bool(self.mask(prev_token)[int(token)])


class WatermarkProcessor:
    """A logits processor for `model.generate(logits_processor=[...])`: adds δ to the green logits of each row.

    `rows` (optional) lists the batch rows to watermark; the others are left plain, so that one batched generate
    call can produce watermarked and plain text side by side.
    """

    def __init__(self, lists: GreenLists, delta: float = 2.0, rows: Sequence[int] | None = None) -> None:
        if delta < 0:
            raise ValueError(f"delta (the bias added to green logits) must be ≥ 0; got {delta}.")
        self.lists, self.delta = lists, delta
        self.rows = None if rows is None else set(int(r) for r in rows)

    def __call__(self, input_ids: "torch.Tensor", scores: "torch.Tensor") -> "torch.Tensor":
        """scores (B, V) for the next token after input_ids (B, T) → the scores with δ added to each green list."""
        scores = scores.clone()
        for row, prev in enumerate(input_ids[:, -1].tolist()):  # the list depends on the last token only
            if self.rows is None or row in self.rows:
                scores[row] += self.delta * self.lists.mask(prev)[: scores.shape[-1]].to(scores.device, scores.dtype)
        return scores


def count_green(token_ids: Sequence[int], lists: GreenLists) -> tuple[int, int]:
    """(tokens scored, green tokens) of one text: token t is scored against the list of token t-1 (the first is not)."""
    ids = [int(t) for t in token_ids]
    if len(ids) < 2:
        raise ValueError(f"a text needs at least 2 tokens to be scored; got {len(ids)}.")
    green = sum(lists.is_green(prev, token) for prev, token in zip(ids[:-1], ids[1:]))
    return len(ids) - 1, green


def z_score(green: float, scored: float, gamma: float = 0.25) -> float:
    """z = (|s|_G − γT) / sqrt(T γ (1 − γ)): how many standard deviations above chance the green count lies."""
    _check_gamma(gamma)
    if scored < 1:
        raise ValueError(f"scored (the number of tokens scored) must be ≥ 1; got {scored}.")
    return (green - gamma * scored) / math.sqrt(scored * gamma * (1 - gamma))


def detect(token_ids: Sequence[int], lists: GreenLists) -> float:
    """The z-score of one text (token ids of the generated part only: a prompt would dilute the count)."""
    scored, green = count_green(token_ids, lists)
    return z_score(green, scored, lists.gamma)
