"""Constrained decoding at the token level: sample only tokens that keep the output valid.

utils/json_grammar.py says, one character at a time, whether a text can still become a valid document.
A model, though, picks TOKENS. This module connects the two:
1. `TokenVocabulary`: the text of every token id of a byte-level BPE tokenizer (GPT-2 style, like the
   SmolLM2 family's), and a trie (prefix tree) of those texts. A token is allowed if feeding its text to
   the grammar's state succeeds; the trie finds ALL allowed tokens at once, pruning a whole branch (e.g.
   every token that starts with a space) as soon as its prefix is refused.
2. `JsonConstraint`: what the decode loop of one sequence calls: allows(id), advance(id), eos_allowed,
   done, allowed_ids().
3. `sample_token`: the next token for one sequence, EXACTLY as if every forbidden token's logit were -inf,
   without checking the whole vocabulary at every step:
   - greedy: walk the tokens from the highest logit down; the first allowed one is the masked argmax;
   - sampling: temperature -> top-p -> mask. Draw a token; if it is refused, zero its probability and
     draw again. This rejection sampling returns token t with probability p(t) / sum of p over allowed
     tokens: exactly the renormalised masked distribution. If the nucleus holds no allowed token, we fall
     back to the allowed tokens of the whole (temperature-scaled) distribution.
   Note the order: Hugging Face's logits processors would mask first and apply top-p to the masked
   distribution; that needs the full mask (all 49,152 tokens checked) at every step. Top-p first lets
   rejection sampling stop after a handful of checks.

Limitation: a token whose bytes are not complete UTF-8 on its own (part of a multi-byte character) is
never allowed in constrained mode, so a character that the vocabulary only spells in pieces cannot be
written. Whole characters (é, 中, most emoji in a 49k vocabulary) have tokens of their own.
"""

from __future__ import annotations

import bisect
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from utils.json_grammar import Grammar, State

if TYPE_CHECKING:
    import torch

MAX_TRIES = 32  # candidates checked one by one before listing every allowed token with the trie
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {eos ids: vocabulary}


def _byte_decoder() -> dict[str, int]:
    """GPT-2's map from the printable character standing for each byte back to the byte (256 entries)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]  # space, controls, ...: shifted to 256 + i
    return {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(others)}


def _is_plain(text: str) -> bool:
    """Only characters that a JSON string takes as they are (no quote, backslash or control character)."""
    return all(ch >= " " and ch not in '"\\' for ch in text)


def _trie(texts: dict[int, str]) -> dict:
    """A prefix tree: nested {char: sub-trie}; the key "" holds the ids whose text ends at that node."""
    trie: dict = {}
    for token_id, text in texts.items():
        node = trie
        for ch in text:
            node = node.setdefault(ch, {})
        node.setdefault("", []).append(token_id)
    return trie


@dataclass(frozen=True, eq=False)
class TokenVocabulary:
    """The text of every token id, the end-of-sequence ids, and tries of the texts for fast pruning."""
    texts: tuple  # texts[id]: str, or None (a special token, or bytes that are not UTF-8 on their own)
    eos_ids: frozenset
    trie: dict  # every token with a text
    plain_ids: tuple  # tokens made only of plain string characters (see _is_plain), shortest first
    plain_lengths: tuple  # their lengths: a string with room for r more characters takes a prefix ...
    other_trie: dict  # ... and a trie of all the others: inside a string, only these need checking
    special_ids: frozenset = frozenset()  # the tokenizer's special tokens (never allowed, except EOS)

    @classmethod
    def from_texts(cls, texts: list, eos_ids, special_ids=()) -> TokenVocabulary:
        """A vocabulary from the text of each id (None for ids never allowed), e.g. a hand-made one."""
        usable = {i: t for i, t in enumerate(texts) if t}  # "" would be allowed everywhere, never progress
        plain = sorted((len(t), i) for i, t in usable.items() if _is_plain(t))
        other = {i: t for i, t in usable.items() if not _is_plain(t)}
        return cls(tuple(texts), frozenset(eos_ids), _trie(usable), tuple(i for _, i in plain),
                   tuple(n for n, _ in plain), _trie(other), frozenset(special_ids))

    @classmethod
    def from_tokenizer(cls, tokenizer, eos_ids: tuple[int, ...] | None = None) -> TokenVocabulary:
        """The vocabulary of a byte-level BPE tokenizer; built once per tokenizer (and eos ids), cached."""
        eos = tuple(sorted(eos_ids if eos_ids is not None else [tokenizer.eos_token_id]))
        if not eos or None in eos:
            raise ValueError(f"need at least one end-of-sequence id, got {eos_ids!r} (tokenizer.eos_token_id "
                             f"is {tokenizer.eos_token_id!r})")
        per_tokenizer = _CACHE.setdefault(tokenizer, {})
        if eos not in per_tokenizer:
            special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items()
                                                        if t.special}
            per_tokenizer[eos] = cls.from_texts(_token_texts(tokenizer, special), eos, special)
        return per_tokenizer[eos]


def _token_texts(tokenizer, special: set[int]) -> list[str | None]:
    """Decode each token's byte-level string ('Ġthe' -> ' the'); None for special or partial-UTF-8 tokens."""
    backend = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if "ByteLevel" not in repr(backend):  # e.g. WordPiece (BERT) or SentencePiece: texts are not bytes
        raise ValueError(f"not a byte-level BPE tokenizer (GPT-2 style): its decoder is {backend!r}; "
                         "constrained decoding supports byte-level BPE vocabularies only")
    decoder = _byte_decoder()
    added = dict(tokenizer.added_tokens_decoder)
    texts: list[str | None] = []
    for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if token_id in special or token is None:
            texts.append(None)
        elif token_id in added:  # an added plain-text token is stored as its text, not as byte characters
            texts.append(added[token_id].content)
        elif not all(ch in decoder for ch in token):
            raise ValueError(f"not a byte-level BPE tokenizer (GPT-2 style): token {token_id} is {token!r}; "
                             "constrained decoding supports byte-level BPE vocabularies only")
        else:
            try:
                texts.append(bytes(decoder[ch] for ch in token).decode("utf-8"))
            except UnicodeDecodeError:  # a piece of a multi-byte character: never allowed (see module doc)
                texts.append(None)
    return texts


class Constraint(Protocol):
    """What sample_token needs from a constraint (JsonConstraint, utils.tool_calls.AutoToolConstraint)."""

    def allows(self, token_id: int) -> bool: ...

    def allowed_ids(self) -> list[int]: ...  # every allowed id, once each


class JsonConstraint:
    """The constraint for one generated sequence: which tokens may come next under a grammar."""

    def __init__(self, grammar: Grammar, vocab: TokenVocabulary):
        self.grammar, self.vocab, self.state, self.finished = grammar, vocab, grammar.start(), False
        self._after: dict[int, State | None] = {}  # this step's checked tokens -> state after them

    def _state_after(self, token_id: int) -> State | None:
        if token_id not in self._after:
            text = self.vocab.texts[token_id] if 0 <= token_id < len(self.vocab.texts) else None
            self._after[token_id] = self.state.feed(text) if text and not self.finished else None
        return self._after[token_id]

    def allows(self, token_id: int) -> bool:
        """Whether `token_id` may come next (an end-of-sequence id only once the document is complete)."""
        if token_id in self.vocab.eos_ids:
            return self.eos_allowed
        return self._state_after(token_id) is not None

    def advance(self, token_id: int) -> None:
        """Record that `token_id` was generated; ValueError if it was not allowed."""
        if not self.allows(token_id):
            text = self.vocab.texts[token_id] if 0 <= token_id < len(self.vocab.texts) else None
            raise ValueError(f"token {token_id} ({text!r}) is not allowed here")
        if token_id in self.vocab.eos_ids:
            self.finished = True
        else:
            self.state = self._state_after(token_id)
        self._after = {}

    @property
    def eos_allowed(self) -> bool:
        """True once the text is a complete document."""
        return self.state.complete and not self.finished

    @property
    def done(self) -> bool:
        """Complete and nothing else may follow (or EOS was generated): the loop should stop."""
        return self.finished or self.state.done

    def allowed_ids(self) -> list[int]:
        """Every allowed token id, found by walking the trie (used when the first few candidates fail)."""
        ids = allowed_tokens(self.state, self.vocab) if not self.finished else []
        return ids + sorted(self.vocab.eos_ids) * self.eos_allowed


def allowed_tokens(state: State, vocab: TokenVocabulary) -> list[int]:
    """The ids of every token whose whole text `state` accepts (sorted)."""
    room = state.plain_room  # inside a string, every plain token up to `room` characters long fits
    if room > 0:
        return sorted([*vocab.plain_ids[:bisect.bisect_right(vocab.plain_lengths, room)],
                       *_walk(state, vocab.other_trie)])
    return sorted(_walk(state, vocab.trie))


def _walk(state: State, trie: dict) -> list[int]:
    """Depth-first walk of the trie, feeding one character per edge; a refused prefix prunes its subtree."""
    ids: list[int] = []
    seen: dict = {}  # state -> (its next chars, {char: next state}): inside a string most nodes share one
    todo = [(trie, state)]
    while todo:
        node, st = todo.pop()
        if st not in seen:
            seen[st] = (st.next_chars(), {})
        chars, step = seen[st]  # chars None: almost any character may come (we are inside a string)
        for ch, sub in node.items():
            if ch == "" or (chars is not None and ch not in chars):
                continue
            if ch not in step:
                step[ch] = st.feed(ch)
            if (nxt := step[ch]) is not None:
                ids += sub.get("", ())
                todo.append((sub, nxt))
    return ids


def sample_token(logits: torch.Tensor, *, temperature: float = 1.0, top_p: float = 1.0,
                 generator: torch.Generator | None = None, constraint: Constraint | None = None,
                 max_tries: int = MAX_TRIES) -> int:
    """The next token id for ONE sequence: greedy if temperature == 0, else sampled; masked by `constraint`.

    logits: (V,) floats. Order: temperature -> top-p -> mask -> renormalise. If no token of the nucleus
    is allowed, the allowed tokens of the whole temperature-scaled distribution are used instead.
    """
    import torch

    if logits.dim() != 1 or not logits.is_floating_point():
        raise ValueError(f"logits must be a 1-D float tensor (V,), got {tuple(logits.shape)} {logits.dtype}")
    if temperature < 0 or not 0 < top_p <= 1 or max_tries < 1:
        raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, max_tries >= 1; got {temperature!r}, "
                         f"{top_p!r}, {max_tries!r}")
    if temperature == 0:
        return _greedy(logits, constraint, max_tries)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (V,)
    nucleus = _top_p(probs, top_p)  # (V,), zero outside the nucleus
    if constraint is None:
        return int(torch.multinomial(nucleus, 1, replacement=True, generator=generator))
    for weights in (nucleus, probs):  # the nucleus, masked; if none of it is allowed, the whole distribution
        token = _draw_allowed(weights, constraint, generator, max_tries)
        if token is not None:
            return token
    # Allowed tokens exist but their probabilities underflowed to 0: softmax over their logits alone.
    allowed = _allowed_or_fail(constraint, len(logits))
    p = torch.softmax(logits[allowed].double() / temperature, dim=-1)
    return int(allowed[torch.multinomial(p, 1, replacement=True, generator=generator)])


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """probs with every token outside the nucleus set to 0 (not renormalised; multinomial does that).

    The nucleus: the most likely tokens, in order, until their total reaches top_p (at least one token).
    Sorting all 49k probabilities costs ~3 ms, so we sort only the top k, for growing k, until the k-th
    token already lies outside the nucleus (then so do all the rest).
    """
    import torch

    if top_p >= 1:
        return probs
    k = 64
    while True:
        values, ids = torch.topk(probs, min(k, len(probs)))  # (k,), sorted descending
        before = torch.cumsum(values, dim=0) - values  # mass of the tokens ranked above each one
        if before[-1] >= top_p or k >= len(probs):
            break
        k *= 8
    keep = ids[before < top_p]
    nucleus = torch.zeros_like(probs)
    nucleus[keep] = probs[keep]
    return nucleus


def _draw_allowed(weights: torch.Tensor, constraint: Constraint, generator, max_tries: int) -> int | None:
    """A draw from `weights` (V,) restricted to allowed tokens; None if no allowed token has weight > 0.

    Rejection sampling: draw independently from `weights` and keep the first allowed draw. Given that
    it is allowed, token t comes out with probability w(t) / (sum of w over allowed tokens): exactly the
    masked, renormalised distribution. The draws are made in one batch (one call is ~20x cheaper than
    many), and a token drawn twice is checked once (the constraint caches its answer).
    """
    import torch

    for token in torch.multinomial(weights, max_tries, replacement=True, generator=generator).tolist():
        if constraint.allows(token):
            return token
    # max_tries refusals: most of the mass is forbidden. List the allowed tokens once and draw among them.
    allowed = _ids(constraint.allowed_ids(), len(weights))
    w = weights[allowed]
    if not bool((w > 0).any()):
        return None
    return int(allowed[torch.multinomial(w, 1, replacement=True, generator=generator)])


def _greedy(logits: torch.Tensor, constraint: Constraint | None, max_tries: int) -> int:
    """argmax over the allowed tokens (ties: the lowest id, like torch.argmax)."""
    import torch

    if constraint is None:
        return int(torch.argmax(logits))
    k = min(max_tries, len(logits))
    top = torch.topk(logits, k).values[-1]  # the k-th largest logit
    candidates = torch.nonzero(logits >= top).flatten().tolist()  # >= k ids: ties at the edge included
    values = logits[candidates].tolist()
    for _, token in sorted(zip((-v for v in values), candidates)):  # highest logit first, then lowest id
        if constraint.allows(token):
            return token
    allowed = _allowed_or_fail(constraint, len(logits))
    return int(allowed[torch.argmax(logits[allowed])])


def _ids(ids: list[int], size: int) -> torch.Tensor:
    """Sorted ids < size as a LongTensor (via numpy: torch.tensor(list) is ~6x slower for 49k ids)."""
    import numpy as np
    import torch

    ids = np.sort(np.asarray(ids, dtype=np.int64))  # sorted: argmax ties then go to the lowest id
    return torch.from_numpy(ids[ids < size])


def _allowed_or_fail(constraint: Constraint, size: int) -> torch.Tensor:
    allowed = _ids(constraint.allowed_ids(), size)
    if len(allowed) == 0:
        raise RuntimeError("the constraint allows no token at all: the vocabulary cannot spell any valid "
                           "continuation (e.g. a character it only has as partial UTF-8 bytes)")
    return allowed
