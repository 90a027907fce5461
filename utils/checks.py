"""Self-checks for exercises: each says what was expected, what came back, and a hint.

An exercise is solved in a cell tagged `solution`, and the next cell calls a check. In the student
release that cell is a stub: functions raise `NotImplementedError(hint)` and answers are `...`;
the checks turn both into a friendly message instead of a traceback. A passing check prints one line.
"""

from __future__ import annotations

import ast
import copy
import inspect
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class CheckFailed(AssertionError):
    """An exercise check did not pass; the message says what to look at."""


def _hint(hint: str) -> str:
    return f"\n  Hint: {hint}" if hint else ""


def _short(value: Any, limit: int = 120) -> str:
    """A one-line repr of `value`, cut to about `limit` characters."""
    if hasattr(value, "detach"):  # a torch tensor: show its numbers, not its grad_fn
        value = value.detach().cpu()
        # float64 for any float dtype: bfloat16 has no numpy twin.
        value = value.double().numpy() if value.is_floating_point() else value.numpy()
    if isinstance(value, np.ndarray):
        text = np.array2string(value, precision=4, threshold=8, edgeitems=2, separator=", ")
        shape = f" (shape {value.shape})" if value.ndim else ""
    else:
        text, shape = repr(value), ""
    text = " ".join(text.split())  # one line
    room = max(limit - len(shape), 20)  # cut the numbers, never the shape
    return (text if len(text) <= room else text[: room - 3] + "...") + shape


def _short_args(args: tuple) -> str:
    """The inputs of one trial, each argument cut short."""
    return "(" + ", ".join(_short(arg, 100) for arg in args) + ")"


def _require_answer(got: Any, name: str, hint: str) -> None:
    """Fail with a friendly message if the exercise cell still holds the `...` placeholder."""
    if got is Ellipsis:
        message = f"{name} is not answered yet: replace the `...` in the exercise cell."
        raise CheckFailed(message + _hint(hint))


def _as_float_array(value: Any, name: str, hint: str) -> np.ndarray:
    """`value` as a float64 numpy array, or a CheckFailed saying why it cannot be one."""
    if hasattr(value, "detach"):  # torch tensor, any device or dtype (bfloat16 has no numpy twin)
        return value.detach().cpu().double().numpy()
    if value is None:
        problem = "came back None; did the function forget to `return` its result?"
    elif callable(value):
        problem = "is a function; call it to get the value to check."
    else:
        try:
            return np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            problem = f"is not a number or an array of numbers: got {type(value).__name__} {_short(value)}."
    raise CheckFailed(f"{name} {problem}" + _hint(hint))


def _compare_close(got: Any, expected: Any, rtol: float, atol: float, name: str, hint: str) -> str | None:
    """None when `got` matches `expected` within tolerance; otherwise the message that explains how not."""
    if isinstance(expected, tuple):  # a function with several outputs: compare them one by one
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"{name} should be a tuple of {len(expected)} values; got {_short(got)}."
        for i, (g, e) in enumerate(zip(got, expected)):
            if problem := _compare_close(g, e, rtol, atol, f"{name}[{i}]", hint):
                return problem
        return None
    g, e = _as_float_array(got, name, hint), _as_float_array(expected, "the expected value", "")
    if g.shape != e.shape:
        return (
            f"{name} has shape {g.shape}, but the expected shape is {e.shape}.\n"
            f"  expected: {_short(expected)}\n  got:      {_short(got)}"
        )
    bad = ~np.isclose(g, e, rtol=rtol, atol=atol)  # NaN never counts as close
    if not bad.any():
        return None
    with np.errstate(invalid="ignore"):  # inf - inf is NaN; such pairs are equal (isclose) or the worst
        diff = np.where(np.isnan(g - e), np.inf, np.abs(g - e))  # a NaN answer is the worst difference
    diff = np.where(bad, diff, -1.0)  # report the worst of the values that differ, not an equal -inf pair
    where = np.unravel_index(np.argmax(diff), diff.shape)
    at = f" at index {tuple(int(i) for i in where)}" if g.ndim else ""
    return (
        f"{name} is not close to the expected value.\n"
        f"  expected: {_short(expected)}\n  got:      {_short(got)}\n"
        f"  max |got - expected| = {diff[where]:.3g}{at} (got {g[where]:.6g}, expected {e[where]:.6g}); "
        f"{int(bad.sum())} of {bad.size} values differ (rtol={rtol:g}, atol={atol:g})."
    )


def check_close(
    got: Any,
    expected: Any,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    name: str = "your answer",
    hint: str = "",
) -> None:
    """Check a number, list, numpy array or torch tensor against `expected` (shape too) within rtol/atol."""
    _require_answer(got, name, hint)
    problem = _compare_close(got, expected, rtol, atol, name, hint)
    if problem:
        raise CheckFailed(problem + _hint(hint))
    print(f"✓ {name} passed")


def _describe_difference(got: Any, expected: Any) -> str:
    """Where two unequal lists, strings or dicts first differ, as an extra line ("" if nothing useful)."""
    if type(got) is not type(expected):
        return f"\n  (types differ: got {type(got).__name__}, expected {type(expected).__name__})"
    if isinstance(got, dict):
        missing, extra = sorted(set(expected) - set(got), key=str), sorted(set(got) - set(expected), key=str)
        changed = [k for k in expected if k in got and got[k] != expected[k]]
        return f"\n  missing keys: {missing[:5]}; extra keys: {extra[:5]}; different values: {changed[:5]}"
    if isinstance(got, (list, tuple, str)):
        if len(got) != len(expected):
            return f"\n  length {len(got)}, expected {len(expected)}"
        for i, (a, b) in enumerate(zip(got, expected)):
            if a != b:
                return f"\n  first difference at index {i}: got {a!r}, expected {b!r}"
    return ""


def check_equal(got: Any, expected: Any, *, name: str = "your answer", hint: str = "") -> None:
    """Check that `got` equals `expected` exactly: ints, strings, lists, dicts, ...; arrays elementwise."""
    _require_answer(got, name, hint)
    if problem := _equal_problem(got, expected, name, hint):
        raise CheckFailed(problem + _hint(hint))
    print(f"✓ {name} passed")


def _same(got: Any, expected: Any, name: str, hint: str) -> bool:
    """Exact equality; arrays and tensors elementwise, with equal shapes; pandas tables with `.equals`."""
    if type(got).__module__.startswith("pandas") and hasattr(got, "equals"):  # `==` of tables is a table
        return type(got) is type(expected) and bool(got.equals(expected))
    try:
        return bool(got == expected)
    except (ValueError, RuntimeError):  # arrays/tensors: `==` is elementwise and has no single truth value
        if isinstance(got, (list, tuple)) and isinstance(expected, (list, tuple)):  # e.g. a list of arrays
            return len(got) == len(expected) and all(_same(g, e, name, hint) for g, e in zip(got, expected))
        g, e = _as_float_array(got, name, hint), _as_float_array(expected, "the expected value", "")
        return g.shape == e.shape and bool(np.array_equal(g, e))


def _equal_problem(got: Any, expected: Any, name: str, hint: str) -> str | None:
    """None if `got` equals `expected` exactly, else a message saying where they differ."""
    if _same(got, expected, name, hint):
        return None
    try:
        detail = _describe_difference(got, expected)
    except Exception:  # e.g. lists of arrays, whose `!=` has no single truth value
        detail = ""
    return f"{name} is not what was expected.\n  expected: {_short(expected)}\n  got:      {_short(got)}" + detail


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("any" if size is None else str(size) for size in shape) + ")"


def check_shape(
    got: Any, expected_shape: Sequence[int | None], *, name: str = "your answer", hint: str = ""
) -> None:
    """Check the shape of a tensor or array; `None` in `expected_shape` matches any size."""
    if not all(size is None or (isinstance(size, int) and size >= 0) for size in expected_shape):
        raise ValueError(f"expected_shape must hold sizes >= 0 or None (any size); got {expected_shape!r}.")
    _require_answer(got, name, hint)
    shape = tuple(got.shape) if hasattr(got, "shape") else _as_float_array(got, name, hint).shape
    fits = len(shape) == len(expected_shape) and all(e in (None, s) for s, e in zip(shape, expected_shape))
    if not fits:
        raise CheckFailed(f"{name} has shape {shape}; expected {_shape_text(expected_shape)}." + _hint(hint))
    print(f"✓ {name} passed")


def check_function(
    fn: Callable,
    reference: Callable,
    make_inputs: Callable[[np.random.Generator], tuple],
    *,
    n_trials: int = 20,
    seed: int = 0,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    name: str | None = None,
    hint: str = "",
    exact: bool = False,
    inputs_unchanged: bool = False,
    no_loops: bool = False,
) -> None:
    """Compare `fn(*args)` with `reference(*args)` on `n_trials` random inputs from `make_inputs(rng)`.

    Results are compared to `rtol`/`atol` as numbers, or exactly (`==`, for strings, dicts, lists of
    words, ...) with `exact=True`. Constraints an exercise states can be enforced too:
    `inputs_unchanged=True` fails a function that edits its arguments in place ("do not modify x"), and
    `no_loops=True` fails one whose source has a `for`/`while` loop or a comprehension ("vectorise it").
    """
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer; got {n_trials!r}.")
    name = name or getattr(fn, "__name__", "your function")
    _require_answer(fn, name, hint)
    if not callable(fn):
        raise CheckFailed(f"{name} should be a function; got {type(fn).__name__} {_short(fn)}." + _hint(hint))
    if no_loops and (loop := _first_loop(fn)):
        raise CheckFailed(f"{name} uses {loop}; this exercise asks for a solution without Python loops "
                          "(whole-array operations only)." + _hint(hint))
    rng = np.random.default_rng(seed)  # fixed seed: the same inputs on every run, so failures repeat
    for trial in range(1, n_trials + 1):
        args = make_inputs(rng)
        args = args if isinstance(args, tuple) else (args,)  # a single argument may come back bare
        # Each function gets its own copy, so one that edits its input in place cannot fool the other.
        expected = reference(*copy.deepcopy(args))
        given = copy.deepcopy(args)  # what `fn` receives; `args` stays as it was, to compare with
        try:
            got = fn(*given)
        except NotImplementedError as error:
            message = f"{name} is not implemented yet: the exercise cell still raises NotImplementedError."
            quoted = f"\n  It says: {error}" if str(error) else ""
            raise CheckFailed(message + quoted + _hint(hint)) from error
        except Exception as error:
            message = f"{name} raised {type(error).__name__}: {error}\n  on inputs: {_short_args(args)}"
            raise CheckFailed(message + _hint(hint)) from error
        if inputs_unchanged:
            for i, (before, after) in enumerate(zip(args, given)):
                if not _same(after, before, name, hint):
                    raise CheckFailed(
                        f"{name} changed its argument {i + 1} in place (trial {trial}).\n  before: {_short(before)}"
                        f"\n  after:  {_short(after)}\n  The exercise asks you to leave the inputs as they are: "
                        "work on a copy (`x.copy()`, `x.clone()`) or build a new result." + _hint(hint))
        if exact:
            problem = _equal_problem(got, expected, f"{name}'s result", hint)
        else:
            problem = _compare_close(got, expected, rtol, atol, f"{name}'s result", hint)
        if problem:
            intro = f"{name} is wrong on trial {trial} of {n_trials}.\n  inputs: {_short_args(args)}\n"
            raise CheckFailed(intro + problem + _hint(hint))
    print(f"✓ {name} passed")


_LOOPS = {ast.For: "a `for` loop", ast.While: "a `while` loop", ast.ListComp: "a list comprehension",
          ast.SetComp: "a set comprehension", ast.DictComp: "a dict comprehension",
          ast.GeneratorExp: "a generator expression"}


def _first_loop(fn: Callable) -> str | None:
    """'a `for` loop (line 3 of the function)' if `fn`'s source has a loop; None if none, or no source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):  # a builtin, a lambda in an odd place: nothing to read
        return None
    for node in ast.walk(tree):
        if type(node) in _LOOPS:
            return f"{_LOOPS[type(node)]} (line {node.lineno} of the function)"
    return None
