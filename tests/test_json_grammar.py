"""utils.json_grammar: every complete text is valid (json.loads + jsonschema), every canonical valid text is
accepted, invalid ones are rejected, no state is a dead end, and unsupported schemas fail clearly.

Random schemas are drawn from a generator below; random documents come from two independent sources: a
random walk over the recogniser's own allowed characters, and a direct generator of valid instances.
"""

from __future__ import annotations

import json
import random
import string
from enum import Enum
from typing import Literal, Optional

import jsonschema
import pytest
from pydantic import BaseModel, Field

from utils.json_grammar import SUPPORTED, compile_schema

# characters to try inside strings, where the recogniser allows almost anything
STRING_POOL = list(string.ascii_letters[:6] + string.digits[:3] + ' "\\/\n\t\x00\x1f' + "é€中😀")


def validate(doc, schema: dict) -> None:
    jsonschema.Draft202012Validator(schema).validate(doc)


def accepts(grammar, text: str) -> bool:
    state = grammar.start().feed(text)
    return state is not None and state.complete


# ---- random schemas and random valid instances --------------------------------------------------------

def random_schema(rng: random.Random, depth: int = 0, refs: tuple = ()) -> dict:
    kinds = ["string", "integer", "number", "boolean", "null", "enum", "const"]
    kinds += ["object", "object", "array", "anyOf", "oneOf", "typelist", "free"] if depth < 3 else []
    kinds += ["ref"] * 2 * bool(refs)
    kind = rng.choice(kinds)
    if kind == "string":
        lo = rng.choice([0, 0, 1, 3])
        upper = {"maxLength": lo + rng.randint(0, 4)} if rng.random() < .5 else {}
        return {"type": "string", "minLength": lo, **upper}
    if kind in ("integer", "number"):
        s: dict = {"type": kind, "description": "a number"}
        a, b = sorted(rng.choice([-7, -1, 0, 0.5, 1, 2.25, 10, 99.9]) for _ in range(2))
        if rng.random() < .6:
            s["exclusiveMinimum" if rng.random() < .3 and a < b else "minimum"] = a
        if rng.random() < .6:
            s["exclusiveMaximum" if rng.random() < .3 and a < b else "maximum"] = b
        if kind == "integer" and not any(isinstance(v, int) or float(v).is_integer() for v in s.values()
                                         if not isinstance(v, str)):
            s.pop("exclusiveMinimum", None), s.pop("exclusiveMaximum", None)
        return s if _has_value(s) else {"type": kind}
    if kind == "boolean" or kind == "null":
        return {"type": kind}
    if kind == "enum":
        return {"enum": rng.sample(["red", "green", "blue", 'a "q"', 1, 2.5, -3, None, True, "é"], 3)}
    if kind == "const":
        return {"const": rng.choice(["x", 0, False, None, "é\n"])}
    if kind == "object":
        names = rng.sample(["a", "b", "name", "tags", "x y", 'q"uote', "é"], rng.randint(0, 4))
        props = {n: random_schema(rng, depth + 1, refs) for n in names}
        return {"type": "object", "title": "T", "properties": props,
                "required": [n for n in names if rng.random() < .6], "additionalProperties": False}
    if kind == "array":
        lo = rng.choice([0, 0, 1, 2])
        s = {"type": "array", "items": random_schema(rng, depth + 1, refs), "minItems": lo}
        return {**s, "maxItems": lo + rng.randint(0, 3)} if rng.random() < .5 else s
    if kind in ("anyOf", "oneOf"):  # oneOf branches of different types, so that exactly one matches
        types = rng.sample(["string", "integer", "boolean", "null", "array"], 2)
        branches = [random_schema(rng, depth + 1, refs) if kind == "anyOf" else _simple(t, rng) for t in types]
        return {kind: branches}
    if kind == "typelist":
        return {"type": ["string", rng.choice(["integer", "null", "boolean"])], "maxLength": 3}
    if kind == "free":
        return {"type": "object", "additionalProperties": rng.choice([True, {"type": "integer"}])}
    return {"$ref": rng.choice(refs)}


def _simple(t: str, rng: random.Random) -> dict:
    return {"type": t, "items": {"type": "integer"}} if t == "array" else {"type": t}


def _has_value(s: dict) -> bool:
    try:
        compile_schema(s)
        return True
    except ValueError:
        return False


def random_root(rng: random.Random) -> dict:
    """A random schema, sometimes with $defs: a recursive Node and a plain Item."""
    if rng.random() < .3:
        return random_schema(rng)
    if rng.random() < .4:  # most structured outputs are objects: make sure we test many
        names = rng.sample(["a", "b", "name", "tags", "x y", 'q"uote', "é"], rng.randint(1, 5))
        return {"type": "object", "properties": {n: random_schema(rng, 1) for n in names},
                "required": [n for n in names if rng.random() < .6]}
    defs = {"Item": random_schema(rng, 2),
            "Node": {"type": "object", "properties": {"value": {"type": "integer"}, "children": {
                "type": "array", "items": {"$ref": "#/$defs/Node"}, "maxItems": 2}}, "required": ["value"]}}
    root = random_schema(rng, 1, refs=("#/$defs/Item", "#/$defs/Node"))
    return {**root, "$defs": defs} if "$ref" not in root else {"allOf": [root], "$defs": defs}


def instance(schema: dict, rng: random.Random, root: dict, depth: int = 0):
    """A random valid instance, generated from the schema directly (not from the recogniser)."""
    if "$ref" in schema:
        return instance(root["$defs"][schema["$ref"].split("/")[-1]], rng, root, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return instance(rng.choice(schema[key]), rng, root, depth)
    if "enum" in schema or "const" in schema:
        return rng.choice(schema.get("enum", [schema.get("const")]))
    t = schema.get("type", "object")
    t = rng.choice(t) if isinstance(t, list) else t
    if t == "string":
        lo = schema.get("minLength", 0)
        n = rng.randint(lo, min(schema.get("maxLength", lo + 5), 3 if t != "string" else 99, lo + 5))
        return "".join(rng.choice(STRING_POOL) for _ in range(n))
    if t in ("integer", "number"):
        return _number(schema, t, rng)
    if t in ("boolean", "null"):
        return rng.choice([True, False]) if t == "boolean" else None
    if t == "array":
        lo = schema["minItems"] if "minItems" in schema else 0
        hi = min(schema.get("maxItems", lo + 3), lo + (3 if depth < 4 else 0))
        items = schema.get("items", {"type": "integer"})
        return [instance(items, rng, root, depth + 1) for _ in range(rng.randint(lo, hi))]
    if "properties" not in schema:
        return {k: rng.randint(0, 9) for k in rng.sample("uvw", rng.randint(0, 2))}
    required = schema.get("required", [])
    return {k: instance(v, rng, root, depth + 1) for k, v in schema["properties"].items()
            if k in required or (depth < 4 and rng.random() < .5)}


def _number(schema: dict, t: str, rng: random.Random):
    def ok(x):
        return (x >= schema.get("minimum", -1e9) and x <= schema.get("maximum", 1e9)
                and x > schema.get("exclusiveMinimum", -1e9) and x < schema.get("exclusiveMaximum", 1e9))
    lo = max(schema.get("minimum", -50), schema.get("exclusiveMinimum", -50))
    hi = min(schema.get("maximum", 50), schema.get("exclusiveMaximum", 50))
    for _ in range(1000):
        if t == "integer" or rng.random() < .3:
            x = rng.randint(int(lo) - 1, int(hi) + 1)
        else:
            x = round(rng.uniform(lo, hi), rng.randint(0, 4))
        if ok(x):
            return x
    raise AssertionError(f"no number found for {schema}")


def dumps(doc, rng: random.Random) -> str:
    """Canonical text: one of the three layouts our whitespace policy accepts."""
    style = rng.choice(["compact", "spaced", "indent"])
    if style == "indent":
        return json.dumps(doc, ensure_ascii=False, indent=2)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":") if style == "compact" else (", ", ": "))


def random_walk(grammar, rng: random.Random, budget: int = 150) -> str:
    """Pick random allowed characters until complete; fails if a state has no way on (a dead end)."""
    state, text = grammar.start(), ""
    while True:
        if state.done or (state.complete and rng.random() < (.5 if len(text) > budget else .03)):
            return text
        chars = state.next_chars()
        pool = STRING_POOL if chars is None else sorted(chars)
        options = [c for c in pool if state.feed(c) is not None]
        if chars is None:  # the pool is only a sample of "almost anything": it must hold some option
            options += [c for c in '"\\' if c in options]
        assert options, f"dead end after {text!r}"
        if len(text) > budget:  # steer towards the end: close things, open nothing new
            options = [c for c in options if c in '"]}0'] or [c for c in options if c not in "[{"] or options
        c = rng.choice(options)
        state, text = state.feed(c), text + c
        assert len(text) < 20 * budget, f"random walk does not finish: {text[:200]!r}"


# ---- the two directions, on random schemas ----------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_random_walks_give_valid_json(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(10):
        schema = random_root(rng)
        grammar = compile_schema(schema)
        for _ in range(5):
            text = random_walk(grammar, rng)
            assert grammar.start().feed(text).complete
            validate(json.loads(text), schema)


@pytest.mark.parametrize("seed", range(12))
def test_valid_instances_in_canonical_form_are_accepted(seed: int) -> None:
    rng = random.Random(100 + seed)
    for _ in range(10):
        schema = random_root(rng)
        grammar = compile_schema(schema)
        for _ in range(4):
            doc = instance(schema, rng, schema)
            validate(doc, schema)  # the generator itself is right
            text = dumps(doc, rng)
            assert accepts(grammar, text), (schema, text)


@pytest.mark.parametrize("seed", range(8))
def test_mutated_documents_are_accepted_only_when_valid(seed: int) -> None:
    """Random one-character edits of valid texts: whatever the recogniser accepts must validate."""
    rng = random.Random(200 + seed)
    accepted = rejected = 0
    for _ in range(12):
        schema = random_root(rng)
        grammar = compile_schema(schema)
        text = dumps(instance(schema, rng, schema), rng)
        for _ in range(15):
            i = rng.randrange(len(text) + 1)
            edit = rng.choice(['"', ",", "]", "}", "1", "-", ".", "x", " ", "\n", "e", "n", ""])
            mutated = text[:i] + edit + text[i + rng.choice([0, 1]):]
            if accepts(grammar, mutated):
                accepted += 1
                validate(json.loads(mutated), schema)
            else:
                rejected += 1
    assert accepted and rejected  # both kinds happened, so the loop tested something


# ---- pydantic models, as learners will write them -------------------------------------------------------

class Color(str, Enum):
    red = "red"
    green = "green"


class Address(BaseModel):
    city: str
    zip_code: Optional[str] = None


class Person(BaseModel):
    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=150)
    confidence: float = Field(ge=0, le=1)
    color: Color
    kind: Literal["friend", "colleague"]
    tags: list[str] = Field(max_length=3)
    address: Address
    nickname: Optional[str] = None


class Tree(BaseModel):
    label: str
    children: list["Tree"] = []


PERSON = Person(name="Ann", age=30, confidence=0.75, color=Color.red, kind="friend", tags=["a", "b"],
                address=Address(city="Paris"))


def test_pydantic_models_compile_and_accept_their_own_dumps() -> None:
    grammar = compile_schema(Person.model_json_schema())
    assert accepts(grammar, PERSON.model_dump_json())
    assert accepts(grammar, PERSON.model_dump_json(indent=2))
    tree = Tree(label="root", children=[Tree(label="a"), Tree(label="b", children=[Tree(label="c")])])
    assert accepts(compile_schema(Tree.model_json_schema()), tree.model_dump_json())


def test_schemas_from_the_openai_clients_response_format_helper_compile() -> None:
    """`client.chat.completions.parse(response_format=Person)` sends this strict form of the schema."""
    from openai.lib._parsing._completions import type_to_response_format_param  # openai 3.54 (pinned)

    for model, doc in ((Person, PERSON), (Tree, Tree(label="x", children=[Tree(label="y")]))):
        schema = type_to_response_format_param(model)["json_schema"]["schema"]
        assert accepts(compile_schema(schema), doc.model_dump_json())


@pytest.mark.parametrize("change", [
    ("age", "\"30\""), ("age", "-1"), ("age", "151"), ("age", "30.5"), ("confidence", "1.01"),
    ("color", "\"blue\""), ("kind", "\"enemy\""), ("name", "\"much too long a name\""),
    ("tags", "[\"a\",\"b\",\"c\",\"d\"]"), ("address", "{\"zip_code\":null}"), ("nickname", "3"),
])
def test_invalid_values_are_rejected(change: tuple[str, str]) -> None:
    key, bad = change
    doc = json.loads(PERSON.model_dump_json())
    text = PERSON.model_dump_json().replace(f'"{key}":{json.dumps(doc[key], separators=(",", ":"))}',
                                            f'"{key}":{bad}')
    assert text != PERSON.model_dump_json()
    assert not accepts(compile_schema(Person.model_json_schema()), text)
    with pytest.raises(jsonschema.ValidationError):
        validate(json.loads(text), Person.model_json_schema())


def test_missing_required_extra_and_reordered_properties_are_rejected() -> None:
    grammar = compile_schema(Person.model_json_schema())
    doc = json.loads(PERSON.model_dump_json())
    missing = {k: v for k, v in doc.items() if k != "age"}
    extra = {**doc, "extra": 1}
    reordered = {"age": doc["age"], **{k: v for k, v in doc.items() if k != "age"}}
    for bad in (missing, extra, reordered):
        assert not accepts(grammar, json.dumps(bad))
    assert accepts(grammar, json.dumps({k: v for k, v in doc.items() if k != "nickname"}))  # optional skipped


# ---- the policy: whitespace, strings, numbers -----------------------------------------------------------

def test_whitespace_is_bounded() -> None:
    g = compile_schema({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})
    for text in ('{"a":1}', '{ "a" : 1 }', '{\n  "a": 1\n}', '{\n' + " " * 20 + '"a":1}'):
        assert accepts(g, text), text
    for text in (' {"a":1}', '{"a":1} ', '{"a":1}\n', '{  "a":1}', '{\n' + " " * 21 + '"a":1}',
                 '{"a":\t1}', '{ \n"a":1}', '{"a":1\n\n}'):
        assert not accepts(g, text), text


def test_strings_escapes_and_lengths() -> None:
    g = compile_schema({"type": "string", "minLength": 2, "maxLength": 3})
    for text in (r'"ab"', r'"\n\t"', r'"\u00e9x"', '"é😀"', r'"\"\\\/"', r'"a\"b"'):
        assert accepts(g, text), text
        assert 2 <= len(json.loads(text)) <= 3
    for text in ('"a"', '"abcd"', '"a\nb"', '"a\x00"', r'"\ud83d\ude00"', r'"\x41b"', "'ab'"):
        assert not accepts(g, text), text


def test_numbers_digits_and_bounds_at_the_edge() -> None:
    assert accepts(compile_schema({"type": "number", "maximum": 0.3}), "0.3")
    assert not accepts(compile_schema({"type": "number", "exclusiveMaximum": 0.3}), "0.3")
    assert accepts(compile_schema({"type": "number", "exclusiveMaximum": 0.3}), "0.29999999999999")
    g = compile_schema({"type": "number"})
    for text in ("0", "-0", "-12.5", "123456789012345", "1.00000000000000"[:16]):
        assert accepts(g, text), text
    for text in ("01", "1.", ".5", "1e5", "+1", "1234567890123456", "0.123456789012345", "-", "NaN"):
        assert not accepts(g, text), text
    g = compile_schema({"type": "integer", "minimum": 10, "maximum": 12})
    assert [t for t in map(str, range(-20, 200)) if accepts(g, t)] == ["10", "11", "12"]
    assert g.start().feed("2") is None  # no integer in [10, 12] starts with 2: pruned at once


def test_enum_and_const_containers_are_matched_as_json_dumps_writes_them() -> None:
    g = compile_schema({"enum": [{"k": "v", "n": [1, 2]}, [3]]})
    assert accepts(g, '{"k": "v", "n": [1, 2]}') and accepts(g, "[3]")
    assert not accepts(g, '{"k":"v","n":[1,2]}')  # documented: one layout only


def test_json_object_mode_accepts_any_object_only() -> None:
    g = compile_schema({"type": "object"})
    rng = random.Random(7)
    for _ in range(30):  # random walks: no dead end, always an object
        assert isinstance(json.loads(random_walk(g, rng, budget=80)), dict)
    assert accepts(g, '{"a": [1, {"b": null}], "c": {"d": "e"}, "f": -0.5, "g": true}')
    for text in ("[1]", '"s"', "1", "null"):
        assert not accepts(g, text)


def test_states_are_immutable_and_done_means_nothing_may_follow() -> None:
    g = compile_schema({"type": "array", "items": {"type": "integer"}, "maxItems": 2})
    start = g.start()
    one = start.feed("[1")
    assert one.feed("2") is not None and one.feed("]").complete and start.feed("]") is None
    assert one == start.feed("[").feed("1") and not one.complete  # unchanged by the feeds above
    assert one.feed("]").done and not compile_schema({"type": "integer"}).start().feed("7").done


# ---- schema checks: clear errors ---------------------------------------------------------------------

@pytest.mark.parametrize("schema, words", [
    ({"type": "string", "pattern": "^a"}, ["'pattern'", "regular expressions", "minLength"]),
    ({"type": "string", "format": "date-time"}, ["'format'", "enum"]),
    ({"type": "object", "patternProperties": {}}, ["'patternProperties'", "additionalProperties"]),
    ({"type": "strin"}, ["'strin'", "string"]),
    ({"$ref": "#/components/X"}, ["#/components/X", "local"]),
    ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, ["['b']"]),
    ({"type": "string", "minLength": 5, "maxLength": 2}, ["minLength 5 > maxLength 2"]),
    ({"type": "integer", "minimum": 1.2, "maximum": 1.8}, ["no integer"]),
    ({"type": "string", "minimum": 1}, ["['minimum']", "string"]),
    ({"enum": []}, ["non-empty"]),
    ({"type": "string", "enum": ["a", 1]}, ["1", "string"]),
    ({"anyOf": [{"type": "string"}], "type": "string"}, ["anyOf", "['type']"]),
    ({"$defs": {"N": {"type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}, "required": ["n"]}},
      "$ref": "#/$defs/N"}, ["no finite JSON document"]),
])
def test_unsupported_or_malformed_schemas_are_refused(schema: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        compile_schema(schema)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_error_lists_supported_keywords() -> None:
    with pytest.raises(ValueError, match="Supported keywords: ") as info:
        compile_schema({"type": "array", "uniqueItems": True})
    assert all(k in str(info.value) for k in SUPPORTED)


def test_recursion_with_a_way_out_keeps_only_finite_branches() -> None:
    schema = {"$defs": {"Loop": {"type": "object", "properties": {"x": {"$ref": "#/$defs/Loop"}},
                                 "required": ["x"]}},
              "type": "object", "properties": {"loop": {"$ref": "#/$defs/Loop"}, "ok": {"type": "boolean"}}}
    g = compile_schema(schema)
    assert accepts(g, '{"ok":true}') and g.start().feed('{"loop"') is None
