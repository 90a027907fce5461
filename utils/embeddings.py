"""Sentence embeddings from an encoder's token vectors.

Introduced in 02_transformers/07_pretrained_models_bert_gpt_t5.ipynb, where mean pooling is written by hand
and checked against sentence-transformers' `encode`; used again by 02.08 (a zero-shot baseline) and the
semantic-search and RAG notebooks of module 03.
"""

from __future__ import annotations

import torch


def mean_pooling(token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, C), (B, T) -> (B, C): the mean of each row's real token vectors; padding is left out."""
    if token_embeddings.shape[:2] != attention_mask.shape:
        raise ValueError(f"token_embeddings {tuple(token_embeddings.shape)} and attention_mask "
                         f"{tuple(attention_mask.shape)} must share (B, T)")
    weights = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)  # (B, T, 1): 1 for tokens, 0 for padding
    return (token_embeddings * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)  # (B, C)
