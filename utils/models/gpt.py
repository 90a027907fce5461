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

from utils.models.kv_cache import KVCache  # its own small module; `from utils.models.gpt import KVCache` works too


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

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 × (B, T, C)
        # (B, T, C) -> (B, H, T, D): every head attends independently over its own D channels
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        mask, causal = None, True
        if cache is not None:  # the P tokens before these: their keys and values come from the cache
            k, v = cache.update(layer, k, v)  # (B, H, P + T, D)
            P = k.size(2) - T
            # query P + j sees keys 0..P + j; one new token (T = 1) sees every key, so needs no mask
            mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(diagonal=P) if T > 1 else None
            causal = False
        # softmax(q kᵀ / √D + causal mask) v, by the fused kernel (02.03 writes it out and checks it)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
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

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)  # tokens talk to each other
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

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The final hidden states (B, T, C) of token ids idx (B, T), after ln_f: what the head turns into logits.

        With a `cache`, idx are the tokens that follow the cached ones, and their keys and values are added to it.
        """
        B, T = idx.shape
        P = cache.length if cache is not None else 0  # tokens already seen: the new ones start at position P
        if P + T > self.config.block_size:
            raise ValueError(f"sequence of {P + T} tokens is longer than block_size={self.config.block_size}")
        pos = torch.arange(P, P + T, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i)
        return self.transformer.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) for token ids idx (B, T); and the mean cross-entropy if targets (B, T) are given."""
        B, T = idx.shape
        logits = self.lm_head(self.hidden_states(idx, cache))  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T), ignore_index=-100)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, stop_tokens: tuple[int, ...] = (),
                 pad_token: int | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> torch.Tensor:
        """Append up to max_new_tokens tokens to idx (B, T): temperature 0 is greedy (argmax), else sampling after
        top-k then top-p. A row that writes one of `stop_tokens` is finished: it gets `pad_token` (default the
        first stop token) until every row is finished, and then generation stops. Same result as HF generate.
        Dropout is off while sampling; the caller's train/eval mode of every submodule is restored at the end."""
        if temperature < 0 or (top_p is not None and not 0 < top_p <= 1) or (top_k is not None and top_k < 1):
            raise ValueError(f"need temperature >= 0, top_k >= 1, 0 < top_p <= 1; got {temperature}, {top_k}, {top_p}")
        stops = torch.tensor(sorted(set(stop_tokens)), dtype=torch.long, device=idx.device)  # (S,)
        pad = pad_token if pad_token is not None else (stop_tokens[0] if stop_tokens else 0)
        finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)  # (B,)
        cache, modes = None, [(m, m.training) for m in self.modules()]  # each flag, put back at the end
        self.eval()  # no dropout while sampling, even when a training loop calls generate
        try:
            for _ in range(max_new_tokens):
                logits, cache = self._next_logits(idx, cache, use_cache)  # (B, V)
                next_id = sample_next(logits.float(), temperature, top_k, top_p, generator)  # (B, 1)
                next_id = next_id.masked_fill(finished[:, None], pad)  # finished rows only pad
                finished |= torch.isin(next_id[:, 0], stops)
                idx = torch.cat([idx, next_id], dim=1)  # (B, T + 1)
                if finished.all():
                    break
        finally:
            for module, training in modes:
                module.training = training
        return idx

    def _next_logits(self, idx: torch.Tensor, cache: KVCache | None, use_cache: bool
                     ) -> tuple[torch.Tensor, KVCache | None]:
        """Logits (B, V) of the token after idx (B, T), and the cache that now holds idx's keys and values.

        Only the last position goes through the head, as in nanoGPT: a (C, V) matmul per position, V = 50257 in GPT-2.
        """
        if not use_cache or idx.size(1) > self.config.block_size:
            # no cache, or the context is full: positions are absolute, so a sliding window is recomputed whole
            return self.lm_head(self.hidden_states(idx[:, -self.config.block_size:])[:, -1, :]), None
        if cache is None:  # prefill: the whole prompt in one pass
            cache = KVCache()
            return self.lm_head(self.hidden_states(idx, cache)[:, -1, :]), cache
        return self.lm_head(self.hidden_states(idx[:, -1:], cache)[:, -1, :]), cache  # decode: the newest token

    def optimizer(self, lr: float, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95)
                  ) -> torch.optim.AdamW:
        """AdamW that decays matrices (2-D weights) but not biases, LayerNorm gains or any other 1-D parameter.

        β2 = 0.95 is GPT-2's in nanoGPT, for pretraining on large batches; 02.05's small character batches use 0.99.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


# ---- choosing the next token (02.06 derives each rule; these equal HF's logits warpers) ----------------------

def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (B, V) (ties with the k-th kept too); the rest become -inf."""
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[..., -1:]  # (B, 1) the k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability adds up to at least p; the rest -inf."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V) most likely first
    probs = sorted_logits.softmax(dim=-1)
    remove_sorted = probs.cumsum(dim=-1) - probs >= p  # the more likely tokens already reach p without this one
    remove_sorted[..., 0] = False  # always keep the most likely token
    return logits.masked_fill(remove_sorted.scatter(-1, order, remove_sorted), float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of logits (B, V) -> (B, 1): softmax(logits / T) after top-k then top-p; T = 0 greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)  # (B, 1)


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


def _one_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of all of model's parameters; a ValueError if they mix dtypes (a copy would round some)."""
    dtypes = {p.dtype for p in model.parameters()}
    if len(dtypes) != 1:
        raise ValueError(f"parameters of several dtypes {sorted(map(str, dtypes))}: convert the model to one first")
    return dtypes.pop()


def to_hf_gpt2(model: GPT) -> Any:
    """A `GPT2LMHeadModel` holding exactly our weights, in their dtype: the same logits for the same ids."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel(hf_gpt2_config(model.config)).to(_one_dtype(model))  # made in float32: cast, not round
    hf.load_state_dict(to_hf_state_dict(model), strict=True)
    return hf.to(next(model.parameters()).device).train(model.training)


def from_hf_gpt2(hf_model: Any) -> GPT:
    """Our GPT holding the weights of a `GPT2LMHeadModel` (e.g. the real pretrained GPT-2)."""
    c = hf_model.config
    config = GPTConfig(vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer,
                       n_head=c.n_head, n_embd=c.n_embd, dropout=0.0, bias=True)
    if c.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"our GPT uses GPT-2's tanh GELU; this model uses {c.activation_function!r}")
    model = GPT(config).to(_one_dtype(hf_model))
    hf_state = hf_model.state_dict()
    state = {name: (hf_state[name].t() if name.endswith(_TRANSPOSED) else hf_state[name]).clone()
             for name in model.state_dict()}
    model.load_state_dict(state, strict=True)
    return model

