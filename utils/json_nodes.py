"""The building blocks of utils.json_grammar: one small node per kind of JSON value.

Every node reads its own characters through one attribute and four methods, with `pos` a small immutable
value (a tuple or a string) saying how far into the value we are:
- `start`                 the position before the value's first character;
- `step(pos, ch)`         the positions after reading `ch` itself (a list: empty = `ch` does not fit);
- `children(pos)`         the values that may start here, as (child node, my position after the child);
- `can_end(pos)`          whether the value may end here (a number may end after "12", or go on);
- `next_chars(pos)`       a superset of the characters `step` or a child may take (None: almost any).
The reader in utils.json_grammar keeps stacks of (node, pos) and calls only these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, localcontext

MAX_INDENT = 20  # a whitespace run is one space, or a newline and up to 20 spaces (indent=2, 10 levels)
MAX_DIGITS = 15  # digits in a number (integer part + fraction); see Number for why 15


def after_space(k: int, ch: str) -> int | None:
    """Whitespace state after `ch` (None: not allowed): 0 none yet, 1 one space, 2 + i a newline + i spaces.

    JSON allows any amount of whitespace between tokens; a model could fill its whole budget with it. So
    wherever JSON allows whitespace we allow one short run: a single space, or a newline and <= 20 spaces.
    """
    if ch == " ":
        return 1 if k == 0 else (k + 1 if 2 <= k < 2 + MAX_INDENT else None)
    return 2 if ch == "\n" and k == 0 else None


def space_chars(k: int) -> set[str]:
    """The whitespace characters that may follow whitespace state k."""
    return {c for c in " \n" if after_space(k, c) is not None}


@dataclass(eq=False)
class Slot:
    """The alternatives for one value: nodes, or (while compiling) nested slots from anyOf and $ref."""
    alts: list | tuple


@dataclass(eq=False)  # eq=False: nodes hash by identity, so states hash fast and cycles are fine
class Literal:
    """One of a few fixed texts: true/false, null, an enum or const value, an object key. pos: prefix read."""
    texts: tuple[str, ...]
    start = ""

    def step(self, pos, ch):
        return [pos + ch] if any(t.startswith(pos + ch) for t in self.texts) else []

    def children(self, pos):
        return ()

    def can_end(self, pos):
        return pos in self.texts

    def next_chars(self, pos):
        return {t[len(pos)] for t in self.texts if len(t) > len(pos) and t.startswith(pos)}


@dataclass(eq=False)
class String:
    """A string of min_len..max_len characters (an escape counts as one). pos: (phase, n, hex digits)."""
    min_len: int = 0
    max_len: int | None = None
    start = ("open", 0, "")

    def step(self, pos, ch):
        phase, n, hexd = pos
        # n counts characters only while a length limit needs it; else it stays 0, so that states repeat
        count = min(n + 1, max(self.min_len, self.max_len or 0))
        if phase == "open":
            return [("body", 0, "")] if ch == '"' else []
        if phase == "body":
            if ch == '"':
                return [("closed", n, "")] if n >= self.min_len else []
            if n == self.max_len or ch < " ":  # full, or a control character (JSON wants it escaped)
                return []
            return [("escape", n, "")] if ch == "\\" else [("body", count, "")]
        if phase == "escape":
            return [("body", count, "")] if ch in '"\\/bfnrt' else [("hex", n, "")] if ch == "u" else []
        if phase == "hex" and ch in "0123456789abcdefABCDEF":
            hexd += ch
            if len(hexd) >= 2 and 0xD8 <= int(hexd[:2], 16) <= 0xDF:  # a surrogate half: not alone
                return []
            return [("body", count, "")] if len(hexd) == 4 else [("hex", n, hexd)]
        return []

    def children(self, pos):
        return ()

    def can_end(self, pos):
        return pos[0] == "closed"

    def next_chars(self, pos):  # None = almost any character
        phase, n, _ = pos
        return {"open": {'"'}, "escape": set('"\\/bfnrtu'), "closed": set(),
                "hex": set("0123456789abcdefABCDEF")}.get(phase, {'"'} if n == self.max_len else None)


_NUMBER_PREFIX = re.compile(r"-?((0|[1-9][0-9]*)(\.[0-9]*)?)?")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")


@dataclass(eq=False)
class Number:
    """A number (or integer) within optional bounds. pos: the text read so far.

    Why at most 15 digits: every decimal with <= 15 significant digits round-trips through a float
    (DBL_DIG = 15), so distinct such decimals become distinct floats in the same order. Comparing the
    decimal text exactly with Decimal(repr(bound)) therefore gives the same answer as json.loads +
    jsonschema comparing floats, also at the very edge of a bound.
    """
    integer: bool
    lo: Decimal | None = None  # lower bound, excluded if lo_strict
    lo_strict: bool = False
    hi: Decimal | None = None
    hi_strict: bool = False
    start = ""

    def step(self, pos, ch):
        text = pos + ch
        ok = _NUMBER_PREFIX.fullmatch(text) and not (self.integer and ch == ".")
        return [text] if ok and self.viable(text) else []

    def children(self, pos):
        return ()

    def can_end(self, pos):
        if not _NUMBER.fullmatch(pos):
            return False
        x = Decimal(pos)  # exact; "-0" == 0
        return ((self.lo is None or x > self.lo or (x == self.lo and not self.lo_strict))
                and (self.hi is None or x < self.hi or (x == self.hi and not self.hi_strict)))

    def next_chars(self, pos):
        return set("-0123456789.")

    def viable(self, text: str) -> bool:
        """Can `text` still grow into a number within the digit limit and the bounds?"""
        negative, (int_part, dot, frac) = text.startswith("-"), text.lstrip("-").partition(".")
        if not int_part:  # "" or "-": try each first digit
            return any(self.viable(text + d) for d in ("0123456789" if text else "-0123456789"))
        room = MAX_DIGITS - len(int_part) - len(frac)  # digits we may still add
        if room < 0 or (dot and not frac and room == 0):  # too long, or a "." with no room for a digit
            return False
        if self.lo is None and self.hi is None:
            return True
        ten = Decimal(10)
        with localcontext() as ctx:
            ctx.prec = 60  # enough for every sum below to be exact (values < 1e16, steps >= 1e-15)
            if dot:  # int_part.frac + up to `room` more digits: [low, low + 10^-len(frac) - step]
                low, step = Decimal(int_part + "." + (frac or "0")), ten ** -(len(frac) + room)
                return self._range(negative, low, low + ten ** -len(frac) - step, step)
            for k in range(1 if int_part == "0" else room + 1):  # k more integer digits, then a fraction
                step = ten ** -(0 if self.integer else room - k)
                low = Decimal(int_part) * ten ** k
                if self._range(negative, low, low + ten ** k - step, step):
                    return True
        return False

    def _range(self, negative: bool, a: Decimal, b: Decimal, step: Decimal) -> bool:
        """Is some multiple of `step` in [a, b] (a magnitude m; the value is m, or -m) within bounds?"""
        lo, lo_strict, hi, hi_strict = self.lo, self.lo_strict, self.hi, self.hi_strict
        if negative:  # value = -m, so  lo <= -m <= hi  <=>  -hi <= m <= -lo
            lo, lo_strict, hi, hi_strict = _neg(hi), hi_strict, _neg(lo), lo_strict
        g = a  # the smallest multiple of step in [a, b] that respects the lower bound
        if lo is not None and lo >= a:
            if lo > b:
                return False
            g = (lo / step).to_integral_value(rounding=ROUND_CEILING) * step  # round lo up onto the grid
            g += step if lo_strict and g == lo else 0
        return g <= b and (hi is None or g < hi or (g == hi and not hi_strict))


def _neg(x: Decimal | None) -> Decimal | None:
    return None if x is None else -x


@dataclass(eq=False)
class Array:
    """[item, item, ...] with min_items..max_items items. pos: (phase, items so far, whitespace state)."""
    items: Slot
    min_items: int = 0
    max_items: int | None = None
    start = ("open", 0, 0)

    def step(self, pos, ch):
        phase, n, ws = pos
        if phase in ("open", "closed"):
            return [("first", 0, 0)] if phase == "open" and ch == "[" else []
        if (w := after_space(ws, ch)) is not None:
            return [(phase, n, w)]
        if ch == "]" and phase in ("first", "after") and n >= self.min_items:
            return [("closed", n, 0)]
        return [("next", n, 0)] if ch == "," and phase == "after" and n != self.max_items else []

    def children(self, pos):  # an item may start after "[" (if any are allowed) or after ","
        phase, n, _ = pos
        if phase == "next" or (phase == "first" and self.max_items != 0):
            return [(alt, ("after", n + 1, 0)) for alt in self.items.alts]
        return ()

    def can_end(self, pos):
        return pos[0] == "closed"

    def next_chars(self, pos):
        phase, n, ws = pos
        if phase in ("open", "closed"):
            return {"["} if phase == "open" else set()
        chars = space_chars(ws)
        if phase in ("first", "after") and n >= self.min_items:
            chars.add("]")
        if phase == "after" and n != self.max_items:
            chars.add(",")
        return chars


@dataclass(eq=False)
class Object:
    """An object: fixed properties in order, or (values set) any keys with values from one slot.

    props: (key literal, value slot, required) in schema order. pos: (phase, j, whitespace state), where
    j is the index of the property being read (fixed properties) and phases go
    open -{-> first -key-> colon -:-> value -value-> after -,-> next -key-> colon ... -}-> closed.
    """
    props: tuple = ()
    values: Slot | None = None  # free-form object (additionalProperties: schema/true; json_object mode)
    start = ("open", 0, 0)

    def _keys(self, i: int):
        """(key node, property index) that may come next after property i-1: skip optional ones."""
        if self.values is not None:
            return [(ANY_KEY, 0)]
        out = []
        for k in range(i, len(self.props)):
            out.append((self.props[k][0], k))
            if self.props[k][2]:  # a required property cannot be skipped
                break
        return out

    def _closes(self, phase: str, j: int) -> bool:  # "}" may come: no required property is left
        i = 0 if phase == "first" else j + 1 if phase == "after" else None
        return i is not None and (self.values is not None or not any(req for _, _, req in self.props[i:]))

    def _may_continue(self, j: int) -> bool:  # another property may follow property j
        return self.values is not None or j + 1 < len(self.props)

    def step(self, pos, ch):
        phase, j, ws = pos
        if phase in ("open", "closed"):
            return [("first", 0, 0)] if phase == "open" and ch == "{" else []
        if (w := after_space(ws, ch)) is not None:
            return [(phase, j, w)]
        if ch == ":" and phase == "colon":
            return [("value", j, 0)]
        if ch == "," and phase == "after" and self._may_continue(j):
            return [("next", j + 1 if self.values is None else 0, 0)]  # free-form: j stays 0
        if ch == "}" and self._closes(phase, j):
            return [("closed", 0, 0)]
        return []

    def children(self, pos):
        phase, j, _ = pos
        if phase in ("first", "next"):
            return [(key, ("colon", k, 0)) for key, k in self._keys(j)]
        if phase == "value":
            slot = self.values if self.values is not None else self.props[j][1]
            return [(alt, ("after", j, 0)) for alt in slot.alts]
        return ()

    def can_end(self, pos):
        return pos[0] == "closed"

    def next_chars(self, pos):
        phase, j, ws = pos
        if phase in ("open", "closed"):
            return {"{"} if phase == "open" else set()
        chars = space_chars(ws) | ({":"} if phase == "colon" else set())
        if self._closes(phase, j):
            chars.add("}")
        if phase == "after" and self._may_continue(j):
            chars.add(",")
        return chars


ANY_KEY = String()  # keys of a free-form object: any string
