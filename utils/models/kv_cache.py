"""The KV cache of generation: keys and values of the tokens seen so far, so each new token is the only one computed.

Introduced in 02_transformers/06_pretraining_and_decoding.ipynb (written out there); used by `utils.models.gpt`
(`GPT.forward(idx, cache=KVCache())`, `GPT.generate`), promoted for 05_frontier/04_chatgpt_from_scratch.ipynb.
Its own file keeps gpt.py, the network a learner reads, short.
"""

from __future__ import annotations

import torch


class KVCache:
    """The keys and values of the tokens seen so far, kept so that each new token is the only one computed.

    One (k, v) pair per block, each (B, H, P, D) for P cached tokens: attention's keys and values of a token
    never change once computed (the mask hides later tokens), so generating token P + 1 needs only its own.
    """

    def __init__(self) -> None:
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def length(self) -> int:
        """P: tokens whose keys and values are cached (the last block's count: it is updated last)."""
        return self.layers[-1][0].size(2) if self.layers else 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new tokens' k, v (B, H, T, D) to block `layer`'s; return all of them (B, H, P + T, D)."""
        if layer == len(self.layers):  # the first pass (the prompt) creates this block's entry
            self.layers.append((k, v))
        else:
            old_k, old_v = self.layers[layer]
            self.layers[layer] = (torch.cat([old_k, k], dim=2), torch.cat([old_v, v], dim=2))
        return self.layers[layer]
