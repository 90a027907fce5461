"""One model, many clients: the batched generation engine behind the course's LLM server.

A worker thread owns the model. Requests wait in a queue, and at every step the worker
  1. admits waiting requests (up to `max_batch` in flight): their prompts go through the model together
     (the *prefill*), and their key/value caches are appended to the running batch's cache;
  2. picks one token for every sequence from its own logits, with its own sampling settings, seed and
     (optional) grammar constraint, and sends each client its new text;
  3. retires the sequences that finished (end token, stop string, max_tokens, cancelled);
  4. runs the model once on all the new tokens (a *decode step*: one token per sequence, cache reused).
This is continuous batching (Orca, OSDI 2022; vLLM): a request joins or leaves the batch at any step, so a
short answer never waits for a long one, and 8 streams cost little more per step than one on a CPU.

Sequences of different lengths share one cache by **left padding**: row i's keys and values have padding on
the left, the attention mask hides it, and position ids count only real tokens — so each sequence sees
exactly what it would see alone (tests/test_llm_engine.py checks the tokens against `model.generate`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

FINISH_REASONS = ("stop", "length", "cancelled", "error")


@dataclass(frozen=True)
class SamplingParams:
    """How one request is decoded; the names and meanings follow OpenAI's chat completions API."""

    max_tokens: int = 256  # generated tokens at most; finish_reason "length" when reached
    temperature: float = 1.0  # 0 = greedy (always the most likely token)
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of tokens with this much probability
    stop: tuple[str, ...] = ()  # the text ends before the first of these strings (not included)
    seed: int | None = None  # same seed, same settings, same prompt → same sampled text

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer; got {self.max_tokens!r}.")
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature must be between 0 and 2; got {self.temperature!r}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1]; got {self.top_p!r}.")
        if len(self.stop) > 4 or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be at most 4 non-empty strings; got {self.stop!r}.")


@dataclass(frozen=True)
class Event:
    """What a client receives: new text while generating, then one final event with the finish reason."""

    text: str  # the new piece of text ("" is possible, e.g. on the final event)
    finish_reason: str | None = None  # None while generating; one of FINISH_REASONS at the end
    completion_tokens: int = 0  # tokens generated so far
    error: str = ""  # what went wrong, when finish_reason == "error"


class Generation:
    """A handle on one submitted request: iterate it for events, `cancel()` it, or wait for `result()`."""

    def __init__(self, on_event: Callable[[Event], None] | None) -> None:
        self._events: queue.Queue[Event] = queue.Queue()
        self._on_event = on_event or self._events.put
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        """Ask the engine to drop this request at its next step (a client that went away)."""
        self.cancelled.set()

    def __iter__(self) -> Iterator[Event]:
        """Events as they come, ending with the one that has a finish_reason (only without on_event)."""
        while True:
            event = self._events.get()
            yield event
            if event.finish_reason is not None:
                return

    def result(self) -> tuple[str, str, int]:
        """Wait for the end: (whole text, finish_reason, completion_tokens)."""
        text, last = "", Event("")
        for last in self:
            text += last.text
        if last.finish_reason == "error":
            raise RuntimeError(f"generation failed: {last.error}")
        return text, last.finish_reason or "error", last.completion_tokens


@dataclass
class _Sequence:
    """The engine's private state for one request in flight."""

    prompt: list[int]
    params: SamplingParams
    constraint: Any
    handle: Generation
    generator: Any  # torch.Generator, seeded per request
    tokens: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the decoded text already sent to the client
    finish: str | None = None


class Engine:
    """Continuous batching over one causal LM; thread-safe `submit`, one worker thread doing the maths."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 16,
                 sampler: Callable[..., int] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1; got {max_batch!r}.")
        if sampler is None:
            from utils.constrained import sample_token as sampler
        self.model, self.tokenizer, self.max_batch, self.sample = model.eval(), tokenizer, max_batch, sampler
        self.device = next(model.parameters()).device  # inputs go there; logits come back to the CPU to sample
        self.max_context = int(getattr(model.config, "max_position_embeddings", 2048))
        eos = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self._waiting: queue.Queue[_Sequence | None] = queue.Queue()
        self._rows: list[_Sequence] = []  # the batch, in the row order of the cache
        self._cache = self._mask = self._positions = self._logits = None
        self.stats = {"admitted": 0, "finished": 0, "cancelled": 0, "max_rows": 0}
        self._worker = threading.Thread(target=self._run, name="llm-engine", daemon=True)
        self._worker.start()

    # ----------------------------------------------------------------------------------- the client side
    def submit(self, prompt: list[int], params: SamplingParams = SamplingParams(), constraint: Any = None,
               on_event: Callable[[Event], None] | None = None) -> Generation:
        """Queue a request (prompt token ids); events go to `on_event` or to the returned handle."""
        import torch

        if not prompt:
            raise ValueError("the prompt has no tokens.")
        if len(prompt) + params.max_tokens > self.max_context:
            raise ValueError(f"the prompt has {len(prompt)} tokens and max_tokens is {params.max_tokens}: "
                             f"together more than the model's context of {self.max_context} tokens.")
        if not self._worker.is_alive():
            raise RuntimeError("the engine is closed.")
        generator = torch.Generator()
        generator.manual_seed(params.seed if params.seed is not None else int(torch.seed()) % 2**63)
        handle = Generation(on_event)
        self._waiting.put(_Sequence(list(prompt), params, constraint, handle, generator))
        return handle

    def generate(self, prompt: list[int], params: SamplingParams = SamplingParams(),
                 constraint: Any = None) -> tuple[str, str, int]:
        """Submit and wait: (text, finish_reason, completion_tokens)."""
        return self.submit(prompt, params, constraint).result()

    def close(self) -> None:
        """Stop the worker after the requests in flight; later submits raise."""
        self._waiting.put(None)
        self._worker.join(timeout=60)

    @property
    def active(self) -> int:
        """Requests in the batch now (the waiting ones are not counted)."""
        return len(self._rows)

    # ----------------------------------------------------------------------------------- the worker
    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while self._admit():
                try:
                    self._pick_tokens()
                    self._retire()
                    if self._rows:
                        self._decode_step()
                except Exception as error:  # a failed step ends the requests in flight, not the server
                    for seq in self._rows:
                        seq.handle._on_event(Event("", "error", len(seq.tokens), f"{type(error).__name__}: {error}"))
                    self._rows, self._cache = [], None

    def _admit(self) -> bool:
        """Move waiting requests into the batch (block while idle); False once close() was called."""
        new: list[_Sequence] = []
        while len(self._rows) + len(new) < self.max_batch:
            try:  # wait only when nothing is running; otherwise take just what is already there
                seq = self._waiting.get(block=not self._rows and not new)
            except queue.Empty:
                break
            if seq is None:
                for seq in new + self._rows:
                    seq.handle._on_event(Event("", "cancelled", len(seq.tokens)))
                return False
            new.append(seq)
        for seq in new:
            if seq.handle.cancelled.is_set():  # gone before it started
                seq.handle._on_event(Event("", "cancelled", 0))
        new = [seq for seq in new if not seq.handle.cancelled.is_set()]
        if new:
            self._prefill(new)
        return True

    def _prefill(self, new: list[_Sequence]) -> None:
        """Run the new prompts together, then append their rows to the batch."""
        import torch
        from transformers import DynamicCache

        width = max(len(seq.prompt) for seq in new)
        ids = torch.full((len(new), width), self.pad_id)
        mask = torch.zeros(len(new), width, dtype=torch.long)
        for i, seq in enumerate(new):  # left padding: every prompt ends in the last column
            ids[i, width - len(seq.prompt):] = torch.tensor(seq.prompt)
            mask[i, width - len(seq.prompt):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # 0, 1, 2, ... over the real tokens only
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        cache = DynamicCache(config=self.model.config)
        # logits_to_keep=1: only the last position's scores are needed, not (B, T, V) of them (~1 GB for 32 prompts)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1].float().cpu()  # (B_new, V): the next-token scores of each prompt
        if self._rows:
            cache, mask = _join(self._cache, self._mask, cache, mask)
            positions = torch.cat([self._positions, positions[:, -1]])
            logits = torch.cat([self._logits, logits])
        else:
            positions = positions[:, -1]
        self._cache, self._mask, self._positions, self._logits = cache, mask, positions, logits
        self._rows += new
        self.stats["admitted"] += len(new)
        self.stats["max_rows"] = max(self.stats["max_rows"], len(self._rows))

    def _pick_tokens(self) -> None:
        """One token per row from its logits; send the text that is now certain."""
        for row, seq in enumerate(self._rows):
            if seq.handle.cancelled.is_set():
                seq.finish = "cancelled"
                seq.handle._on_event(Event("", "cancelled", len(seq.tokens)))
                continue
            p = seq.params
            token = self.sample(self._logits[row], temperature=p.temperature, top_p=p.top_p,
                                generator=seq.generator, constraint=seq.constraint)
            if token in self.eos_ids:
                seq.finish = "stop"
            else:
                seq.tokens.append(token)
                if seq.constraint is not None:
                    seq.constraint.advance(token)
                    if seq.constraint.done:  # the grammar allows nothing more: an end token is certain
                        seq.finish = "stop"
                if seq.finish is None and len(seq.tokens) >= p.max_tokens:
                    seq.finish = "length"
            self._send_text(seq)

    def _send_text(self, seq: _Sequence) -> None:
        """Send the new text, holding back what may be the start of a stop string or of a UTF-8 character."""
        text = self.tokenizer.decode(seq.tokens, skip_special_tokens=True)
        end = len(text)
        for stop in seq.params.stop:
            found = text.find(stop, max(0, seq.sent - len(stop)))
            if found != -1 and found < end:
                end, seq.finish = found, "stop"
        if seq.finish is None:  # keep back a tail that could still grow into a stop string or a character
            end = len(text.rstrip("\ufffd"))
            for stop in seq.params.stop:
                end = min(end, len(text) - _overlap(text, stop))
        piece, seq.sent = text[seq.sent:max(end, seq.sent)], max(end, seq.sent)
        if piece or seq.finish:
            if piece:
                seq.handle._on_event(Event(piece, None, len(seq.tokens)))
            if seq.finish:
                seq.handle._on_event(Event("", seq.finish, len(seq.tokens)))

    def _retire(self) -> None:
        """Drop finished rows from the batch, its cache, mask and positions."""
        import torch

        keep = [i for i, seq in enumerate(self._rows) if seq.finish is None]
        for seq in self._rows:
            if seq.finish is not None:
                self.stats["finished"] += 1
                self.stats["cancelled"] += seq.finish == "cancelled"
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache = None
            return
        index = torch.tensor(keep, device=self.device)
        for layer in self._cache.layers:
            layer.batch_select_indices(index)
        self._mask, self._positions = self._mask[index], self._positions[index]  # logits: the next step makes new ones
        start = int((self._mask.sum(0) > 0).nonzero()[0])  # columns that are padding in every row: drop
        if start:
            self._mask = self._mask[:, start:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[..., start:, :], layer.values[..., start:, :]

    def _decode_step(self) -> None:
        """Feed every row its newest token: one forward pass for the whole batch."""
        import torch

        ids = torch.tensor([[seq.tokens[-1]] for seq in self._rows], device=self.device)  # (B, 1)
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(self._rows), 1)], dim=1)
        self._positions = self._positions + 1  # (B,): each row's next position
        out = self.model(input_ids=ids, attention_mask=self._mask, position_ids=self._positions[:, None],
                         past_key_values=self._cache, use_cache=True)
        self._logits = out.logits[:, -1].float().cpu()


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that is a beginning of `stop` (it may still become `stop`)."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def _join(cache: Any, mask: Any, new_cache: Any, new_mask: Any) -> tuple[Any, Any]:
    """Stack two batches' caches and masks, left-padding the shorter one: (B1+B2, heads, T, head_dim)."""
    import torch
    import torch.nn.functional as F

    width = max(mask.shape[1], new_mask.shape[1])
    pad = lambda t, n, dim_from_end: F.pad(t, (0, 0) * (dim_from_end - 1) + (n, 0)) if n else t  # noqa: E731
    for old, new in zip(cache.layers, new_cache.layers):
        d_old, d_new = width - old.keys.shape[-2], width - new.keys.shape[-2]
        old.keys = torch.cat([pad(old.keys, d_old, 2), pad(new.keys, d_new, 2)])
        old.values = torch.cat([pad(old.values, d_old, 2), pad(new.values, d_new, 2)])
    mask = torch.cat([pad(mask, width - mask.shape[1], 1), pad(new_mask, width - new_mask.shape[1], 1)])
    return cache, mask
