"""JSON that always parses and matches a schema: a character-level recogniser for constrained decoding.

A language model writes one token at a time. To make it write JSON that matches a schema, we ask before
each token: "can the text so far, plus this token, still grow into a valid document?" This module answers
that question one CHARACTER at a time; utils/constrained.py feeds each candidate token's characters.

How: a pushdown recogniser.
- `compile_schema` turns a JSON Schema into a graph of small nodes, one per kind of value: an object, an
  array, a string, a number, a set of literal texts (true, false, null, enum, const). `anyOf` and `$ref`
  vanish at compile time: the place where a value goes (a *slot*) holds a tuple of alternative nodes, and a
  recursive `$defs` entry becomes a cycle in the graph.
- While reading, a *stack* of frames (node, position) says where we are, e.g. [object after the key
  "tags", array after 2 items, string of 3 characters]. A character is consumed by the top frame, or
  starts a child value (push), or, if the top value may end here, belongs to the parent (pop).
- Where the schema is ambiguous (anyOf branches with a common prefix, an optional property that may be
  skipped, a number that may or may not go on), we keep every possible stack: a `State` is a SET of
  stacks, like the set of states of an NFA. Usually it holds one.
- States are immutable (frozensets of nested tuples), so `state.feed(text)` returns a NEW state (or None):
  the token-level code tries many candidate tokens from one state without copying or undoing anything.

Guarantees (tests/test_json_grammar.py): every state reached by feeding can still be completed (no dead
ends), and every complete text parses with `json.loads` and validates against the schema. In return we
accept one canonical form of each document, not every valid text:
- object properties in the schema's order; required ones present, optional ones may be skipped, no others
  (additionalProperties counts as false when `properties` is given; without `properties`, an object takes
  any keys: that is `{"type": "object"}`, the json_object mode);
- whitespace only where JSON allows it, and there at most a single space or a newline plus up to 20 spaces
  (json.dumps's compact, default and indent=2 layouts all fit); none before or after the document, so a
  model cannot pad forever;
- numbers without exponent, at most 15 digits; minimum/maximum (exclusive too) are enforced exactly;
- strings: any character but `"`, `\\` and controls U+0000-U+001F, which need escapes; `\\uXXXX` must not
  be a surrogate half; minLength/maxLength count characters (an escape is one);
- enum/const values are matched as json.dumps writes them; oneOf is generated like anyOf (so branches
  that overlap could match twice); pattern, format and the other keywords not in SUPPORTED are refused.
The value nodes live in utils/json_nodes.py; this module reads text with them and compiles schemas.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal

from utils.json_nodes import Array, Literal, Number, Object, Slot, String

ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$comment", "strict", "deprecated",
               "readOnly", "writeOnly", "discriminator"}  # described, never enforced
KEYWORDS_BY_TYPE = {"object": {"properties", "required", "additionalProperties"},
                    "array": {"items", "minItems", "maxItems"}, "string": {"minLength", "maxLength"},
                    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
                    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
                    "boolean": set(), "null": set()}
COMBINATORS = {"$ref", "anyOf", "oneOf", "allOf", "enum", "const"}  # oneOf is generated like anyOf
SUPPORTED = sorted(ANNOTATIONS | COMBINATORS | {"type", "$defs", "definitions"}
                   | set().union(*KEYWORDS_BY_TYPE.values()))
WHY_NOT = {"pattern": "regular expressions are not enforced", "format": "formats (date-time, email, …) are "
           "not enforced; use a plain string, or an enum", "multipleOf": "not enforced",
           "uniqueItems": "not enforced", "prefixItems": "tuples are not supported"}


# ---- reading: stacks and states ---------------------------------------------------------------------
# A stack is a nested tuple (node, pos, parent stack or None): immutable and hashable.

def _feed_stack(stack: tuple, ch: str, out: set) -> None:
    """Add to `out` every stack that results from reading `ch` on `stack`."""
    node, pos, parent = stack
    for new_pos in node.step(pos, ch):  # the top value reads ch itself
        out.add((node, new_pos, parent))
    for child, after in node.children(pos):  # ch starts a child value: push it (parent resumes at `after`)
        _feed_stack((child, child.start, (node, after, parent)), ch, out)
    if parent is not None and node.can_end(pos):  # the top value is finished: ch belongs to the parent
        _feed_stack(parent, ch, out)


def _next_chars(stack: tuple) -> set[str] | None:
    """A superset of the characters that `stack` may read next (None: almost any character)."""
    node, pos, parent = stack
    chars = node.next_chars(pos)
    more = [_next_chars((child, child.start, None)) for child, _ in node.children(pos)]
    if parent is not None and node.can_end(pos):
        more.append(_next_chars(parent))
    for m in more:
        chars = None if chars is None or m is None else chars | m
    return chars


def _can_end(stack: tuple | None) -> bool:
    """Whether the document may end here: the top value may end, and so may each value below it."""
    return stack is None or (stack[0].can_end(stack[1]) and _can_end(stack[2]))


@dataclass(frozen=True)
class State:
    """Where the reader is: every stack that fits the text so far. Immutable: feed() returns a new one."""
    stacks: frozenset

    def feed(self, text: str) -> State | None:
        """The state after reading `text`, or None if no valid document starts with what was read + text."""
        stacks = self.stacks
        for ch in text:
            out: set = set()
            for stack in stacks:
                _feed_stack(stack, ch, out)
            if not out:
                return None
            stacks = frozenset(out)
        return State(stacks)

    @property
    def complete(self) -> bool:
        """The text read so far is a whole valid document."""
        return any(_can_end(stack) for stack in self.stacks)

    def next_chars(self) -> frozenset[str] | None:
        """A superset of the characters that may come next; None when almost any may (inside a string)."""
        chars: set[str] = set()
        for stack in self.stacks:
            more = _next_chars(stack)
            if more is None:
                return None
            chars |= more
        return frozenset(chars)

    @property
    def plain_room(self) -> float:
        """How many "plain" characters (any but `"`, `\\` and controls) may come next, if every stack is
        inside a string (each adds 1 to its length); 0 otherwise. utils.constrained uses it to allow
        most tokens at once inside strings."""
        if not all(isinstance(node, String) and pos[0] == "body" for node, pos, _ in self.stacks):
            return 0
        return max(math.inf if node.max_len is None else node.max_len - pos[1]
                   for node, pos, _ in self.stacks)

    @property
    def done(self) -> bool:
        """Complete, and nothing may follow: generation must stop here."""
        chars = self.next_chars()
        return self.complete and chars is not None and not any(self.feed(c) for c in chars)


@dataclass(frozen=True, eq=False)
class Grammar:
    """The compiled form of a schema: the alternative nodes a document may start with."""
    roots: tuple

    def start(self) -> State:
        """The state before the first character."""
        return State(frozenset((node, node.start, None) for node in self.roots))


# ---- compiling a JSON Schema ---------------------------------------------------------------------------

def compile_schema(schema: dict) -> Grammar:
    """Check a JSON Schema (the subset in SUPPORTED) and build its recogniser; ValueError says why not."""
    if not isinstance(schema, dict):
        raise ValueError(f"a schema must be a dict (JSON Schema), got {type(schema).__name__}")
    compiler = _Compiler(schema)
    return Grammar(compiler.finish(compiler.ref("#", "#")))


class _Compiler:
    """Schema -> nodes. While compiling, slots may hold other slots (anyOf, $ref); finish() flattens them."""

    def __init__(self, root: dict):
        self.root, self.refs, self.slots, self.nodes, self.any = root, {}, [], [], None

    def slot(self, alts: list) -> Slot:
        self.slots.append(Slot(list(alts)))
        return self.slots[-1]

    def node(self, node):
        self.nodes.append(node)
        return node

    def ref(self, ref: str, path: str) -> Slot:
        """The slot of "#", "#/$defs/Name" or "#/definitions/Name", compiled once (so recursion works)."""
        if ref not in self.refs:
            parts = ref.split("/")
            local = len(parts) == 3 and parts[0] == "#" and parts[1] in ("$defs", "definitions")
            if ref != "#" and not (local and parts[2] in self.root.get(parts[1], {})):
                raise ValueError(f"{path}: $ref {ref!r} not found; supported: '#', '#/$defs/Name', "
                                 "'#/definitions/Name' (local references only)")
            self.refs[ref] = slot = self.slot([])  # registered first: a recursive $ref inside finds it
            slot.alts.append(self.compile(self.root if ref == "#" else self.root[parts[1]][parts[2]], ref))
        return self.refs[ref]

    def any_value(self) -> Slot:
        """Any JSON value (schema true or {}): built once, since its objects and arrays contain it."""
        if self.any is None:
            self.any = self.slot([])
            self.any.alts += [self.typed(t, {}, "#") for t in ("object", "array", "string", "number",
                                                                  "boolean", "null")]
        return self.any

    def compile(self, schema, path: str) -> Slot:
        """The slot (alternatives) for one schema; `path` locates it in error messages."""
        if schema is True:
            return self.any_value()
        if not isinstance(schema, dict):
            raise ValueError(f"{path}: a schema must be a dict or true, got {schema!r}")
        for key in schema:
            if key not in SUPPORTED:
                why = WHY_NOT.get(key, "not supported")
                raise ValueError(f"{path}: keyword {key!r}: {why}. "
                                 f"Supported keywords: {', '.join(SUPPORTED)}")
        given = set(schema) - ANNOTATIONS - {"$defs", "definitions"}
        for key in ("$ref", "anyOf", "oneOf", "allOf", "enum", "const"):
            if key in given:
                others = given - {key} - ({"type"} if key in ("enum", "const") else set())
                if others:
                    raise ValueError(f"{path}: {key} cannot be combined with {sorted(others)} here")
                return self.combined(key, schema[key], schema, path)
        types = schema.get("type") or [t for t in ("object", "array", "string", "number")
                                       if KEYWORDS_BY_TYPE[t] & given] or ["object", "array", "string",
                                                                           "number", "boolean", "null"]
        types = types if isinstance(types, list) else [types]
        for t in types:
            if not isinstance(t, str) or t not in KEYWORDS_BY_TYPE:
                raise ValueError(f"{path}: type {t!r} is not a JSON Schema type; "
                                 f"use one of {list(KEYWORDS_BY_TYPE)}")
        if stray := given - {"type"} - set().union(*(KEYWORDS_BY_TYPE[t] for t in types)):
            raise ValueError(f"{path}: {sorted(stray)} do not apply to type {types}")
        return self.slot([self.typed(t, schema, path) for t in dict.fromkeys(types)])

    def combined(self, key: str, value, schema: dict, path: str) -> Slot:
        """$ref, anyOf/oneOf (generated alike: a oneOf whose branches overlap may give two matches), allOf of
        one schema, enum, const."""
        if key == "$ref":
            return self.ref(value, path)
        if key in ("enum", "const"):
            return self.slot([self.literal([value] if key == "const" else value, schema.get("type"), path)])
        if not isinstance(value, list) or not value or (key == "allOf" and len(value) != 1):
            raise ValueError(f"{path}: {key} must be a non-empty list of schemas"
                             + (" (allOf: exactly one)" if key == "allOf" else "") + f", got {value!r}")
        return self.slot([self.compile(sub, f"{path}/{key}/{i}") for i, sub in enumerate(value)])

    def literal(self, values, types, path: str) -> Literal:
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: enum must be a non-empty list, got {values!r}")
        types = [types] if isinstance(types, str) else types or list(KEYWORDS_BY_TYPE)
        texts = []
        for v in values:
            if not any(_is_type(v, t) for t in types):
                raise ValueError(f"{path}: enum/const value {v!r} is not of type {types}")
            try:
                texts.append(json.dumps(v, ensure_ascii=False, allow_nan=False))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}: enum/const value {v!r} is not JSON ({e})") from None
        return self.node(Literal(tuple(dict.fromkeys(texts))))

    def typed(self, t: str, schema: dict, path: str):
        """The node for one type, with that type's keywords from `schema`."""
        if t in ("boolean", "null"):
            return self.node(Literal(("true", "false") if t == "boolean" else ("null",)))
        if t == "string":
            lo, hi = _count_range(schema, "minLength", "maxLength", path)
            return self.node(String(lo, hi))
        if t == "array":
            lo, hi = _count_range(schema, "minItems", "maxItems", path)
            return self.node(Array(self.compile(schema.get("items", True), f"{path}/items"), lo, hi))
        if t == "object":
            return self.node(self.object(schema, path))
        node = Number(t == "integer", *_bounds(schema, path))
        if not node.viable(""):
            raise ValueError(f"{path}: no {t} with at most 15 digits and no exponent fits the bounds")
        return self.node(node)

    def object(self, schema: dict, path: str) -> Object:
        props, required = schema.get("properties", {}), schema.get("required", [])
        extra = schema.get("additionalProperties")
        if not isinstance(props, dict) or not isinstance(required, list):
            raise ValueError(f"{path}: properties must be a dict and required a list, "
                             f"got {props!r}, {required!r}")
        if missing := [name for name in required if name not in props]:
            raise ValueError(f"{path}: required {missing} not in properties {list(props)}")
        if not props and extra is not False:  # free-form: any keys (json_object mode, dict[str, X])
            values = self.compile(True if extra is None else extra, f"{path}/additionalProperties")
            return Object(values=values)
        if not isinstance(extra, bool | None):
            raise ValueError(f"{path}: additionalProperties as a schema beside properties is not supported; "
                             "use false (only the listed properties are generated)")
        return Object(props=tuple((Literal((json.dumps(name, ensure_ascii=False),)),
                                   self.compile(sub, f"{path}/properties/{name}"), name in required)
                                  for name, sub in props.items()))

    def finish(self, root: Slot) -> tuple:
        """Flatten nested slots, then drop what admits no finite document (recursion without a way out)."""
        flat = [_flatten(slot, ()) for slot in self.slots]
        for slot, alts in zip(self.slots, flat):
            slot.alts = alts
        good = _productive(self.nodes)
        for slot in self.slots:
            slot.alts = tuple(node for node in slot.alts if node in good)
        for node in self.nodes:  # an optional property or item no finite value fits can never appear
            if isinstance(node, Object) and node.values is not None and not node.values.alts:
                node.values = None  # a free-form object whose values cannot end: only {} is left
            if isinstance(node, Object):
                node.props = tuple(p for p in node.props if p[1].alts)
            if isinstance(node, Array) and not node.items.alts:
                node.max_items = 0
        if not root.alts:
            raise ValueError("the schema admits no finite JSON document (a recursion with no way out)")
        return root.alts


def _flatten(slot: Slot, seen: tuple) -> tuple:
    """The nodes a slot stands for, expanding nested slots; a slot met again on the way adds nothing new."""
    out = []
    for alt in slot.alts:
        if not isinstance(alt, Slot):
            out.append(alt)
        elif alt is not slot and alt not in seen:
            out += _flatten(alt, seen + (slot,))
    return tuple(dict.fromkeys(out))


def _productive(nodes: list) -> set:
    """The nodes that have at least one finite document, found by a fixed point (as in CFG theory)."""
    good: set = set()
    changed = True
    while changed:
        changed = False
        for node in nodes:
            if node in good:
                continue
            if isinstance(node, Object):
                fine = all(any(a in good for a in slot.alts) for _, slot, required in node.props if required)
            elif isinstance(node, Array):
                fine = node.min_items == 0 or any(a in good for a in node.items.alts)
            else:
                fine = True
            if fine:
                good.add(node)
                changed = True
    return good


def _is_type(value, t: str) -> bool:
    """Whether a Python value (from JSON) is of JSON Schema type t."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return {"null": value is None, "boolean": isinstance(value, bool), "string": isinstance(value, str),
            "number": number, "integer": number and float(value).is_integer(),
            "array": isinstance(value, list), "object": isinstance(value, dict)}[t]


def _count_range(schema: dict, low: str, high: str, path: str) -> tuple[int, int | None]:
    """(minimum, maximum or None) of a count such as minLength/maxLength, checked."""
    lo, hi = schema.get(low, 0), schema.get(high)
    for key, v in ((low, lo), (high, hi)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ValueError(f"{path}: {key} must be a non-negative integer, got {v!r}")
    if hi is not None and lo > hi:
        raise ValueError(f"{path}: {low} {lo} > {high} {hi}")
    return lo, hi


def _bounds(schema: dict, path: str) -> tuple:
    """(lo, lo_strict, hi, hi_strict) from minimum/exclusiveMinimum/maximum/exclusiveMaximum, as Decimals."""
    lo = hi = None
    lo_strict = hi_strict = False
    for key, strict, lower in (("minimum", False, True), ("exclusiveMinimum", True, True),
                               ("maximum", False, False), ("exclusiveMaximum", True, False)):
        if key not in schema:
            continue
        v = schema[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"{path}: {key} must be a finite number, got {v!r}")
        d = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)  # repr: the shortest exact decimal
        if lower and (lo is None or d > lo or (d == lo and strict)):
            lo, lo_strict = d, strict
        if not lower and (hi is None or d < hi or (d == hi and strict)):
            hi, hi_strict = d, strict
    return lo, lo_strict, hi, hi_strict
