"""A GPT in one file: the decoder-only transformer of GPT-2, written to be read.

Introduced in 02_transformers/05_build_gpt_from_scratch.ipynb, where it is built up one rung at a time;
used later by pretraining, fine-tuning, DPO, quantisation, MoE and the capstone.

Shapes: B = batch, T = time (tokens), C = n_embd (channels), H = n_head, D = C // H (head size),
V = vocab_size. Parameter names follow GPT-2's (`transformer.h.0.attn.c_attn.weight`, ...), so the
weights map one to one onto Hugging Face's `GPT2LMHeadModel`: see `to_hf_gpt2` and `from_hf_gpt2`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GPTConfig:
    """The hyper-parameters of a GPT; the defaults are GPT-2 small (124 M parameters)."""

    vocab_size: int = 50257  # V: tokens the model can read and write
    block_size: int = 1024  # longest context, in tokens (the number of learned positions)
    n_layer: int = 12  # transformer blocks
    n_head: int = 12  # attention heads per block; n_embd must be divisible by it
    n_embd: int = 768  # C: width of the residual stream
    dropout: float = 0.0  # on attention weights, residual branches and embeddings (0 for fine-tuning)
    bias: bool = True  # biases in Linear layers and LayerNorms, as GPT-2

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class CausalSelfAttention(nn.Module):
    """H heads of masked self-attention: each token attends to itself and the tokens before it."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # mixes the heads
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 × (B, T, C)
        # (B, T, C) -> (B, H, T, D): every head attends independently over its own D channels
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # softmax(q kᵀ / √D + causal mask) v, by the fused kernel (02.03 writes it out and checks it)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, H, T, D) -> (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """The feed-forward block: widen 4×, GELU (GPT-2's tanh approximation), project back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))  # (B, T, C)


class Block(nn.Module):
    """A pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # tokens talk to each other
        return x + self.mlp(self.ln_2(x))  # each token thinks on its own


class GPT(nn.Module):
    """Token + position embeddings, n_layer blocks, a final LayerNorm, and a head tied to the embeddings."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings (V, C)
            wpe=nn.Embedding(config.block_size, config.n_embd),  # learned positions (block_size, C)
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying: one (V, C) matrix reads and writes
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/√(2·n_layer)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, counted once (the tied head is the token embedding); minus positions by default."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) for token ids idx (B, T); and the mean cross-entropy if targets (B, T) are given."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size={self.config.block_size}")
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T), ignore_index=-100)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Append max_new_tokens sampled tokens to idx (B, T); temperature 0 means greedy (argmax)."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size:]  # the model sees at most block_size tokens
            logits = self(context)[0][:, -1, :]  # (B, V): only the last position predicts the next token
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B, 1)
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                next_id = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, next_id], dim=1)
        return idx

    def optimizer(self, lr: float, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95)
                  ) -> torch.optim.AdamW:
        """AdamW that decays matrices (2-D weights) but not biases, LayerNorm gains or any other 1-D parameter."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


# ---- Hugging Face GPT-2: the same network, with Conv1D layers that store weights as (in, out) ------------

_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_gpt2_config(config: GPTConfig) -> Any:
    """The `transformers.GPT2Config` of the same shape (dropouts copied, GELU = gelu_new as in GPT-2).

    The last id is the end-of-text token, as GPT-2's 50256 is.
    """
    from transformers import GPT2Config

    if not config.bias:
        raise ValueError("GPT2LMHeadModel always has biases: use GPTConfig(bias=True) to convert")
    return GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                      n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=config.dropout,
                      embd_pdrop=config.dropout, attn_pdrop=config.dropout, layer_norm_epsilon=1e-5,
                      activation_function="gelu_new",
                      bos_token_id=config.vocab_size - 1, eos_token_id=config.vocab_size - 1)


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our state dict renamed and transposed for `GPT2LMHeadModel.load_state_dict`."""
    return {name: (t.t() if name.endswith(_TRANSPOSED) else t).clone() for name, t in model.state_dict().items()}


def to_hf_gpt2(model: GPT) -> Any:
    """A `GPT2LMHeadModel` holding exactly our weights: the same logits for the same ids."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel(hf_gpt2_config(model.config))
    hf.load_state_dict(to_hf_state_dict(model), strict=True)
    return hf.to(next(model.parameters()).device).train(model.training)


def from_hf_gpt2(hf_model: Any) -> GPT:
    """Our GPT holding the weights of a `GPT2LMHeadModel` (e.g. the real pretrained GPT-2)."""
    c = hf_model.config
    config = GPTConfig(vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer,
                       n_head=c.n_head, n_embd=c.n_embd, dropout=0.0, bias=True)
    if c.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"our GPT uses GPT-2's tanh GELU; this model uses {c.activation_function!r}")
    model = GPT(config)
    hf_state = hf_model.state_dict()
    state = {name: (hf_state[name].t() if name.endswith(_TRANSPOSED) else hf_state[name]).clone()
             for name in model.state_dict()}
    model.load_state_dict(state, strict=True)
    return model

