"""Tests for utils.checks: right answers pass with a ✓ line, wrong ones fail with expected/got/hint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.checks import CheckFailed, check_close, check_equal, check_function, check_shape


def test_check_failed_is_an_assertion_error():
    assert issubclass(CheckFailed, AssertionError)  # so a bare `assert`-style workflow still stops


@pytest.mark.parametrize(
    "got, expected",
    [
        (0.1 + 0.2, 0.3),
        ([1.0, 2.0], np.array([1.0, 2.0])),
        (torch.tensor([[1.0, 2.0]], requires_grad=True) * 1, np.array([[1.0, 2.0]])),
        (np.float32(1 / 3), 1 / 3),
        (torch.tensor(2.0, dtype=torch.bfloat16), 2),
        ((1.0, np.array([2.0, 3.0])), (1.0, np.array([2.0, 3.0]))),  # several outputs
    ],
)
def test_check_close_passes_and_prints(got, expected, capsys):
    check_close(got, expected, rtol=1e-6, name="softmax")
    assert capsys.readouterr().out == "✓ softmax passed\n"


def test_check_close_value_mismatch_message():
    got = np.array([[1.0, 2.0], [3.0, 4.5]])
    with pytest.raises(CheckFailed) as info:
        check_close(got, torch.tensor([[1.0, 2.0], [3.0, 4.0]]), name="logits", hint="Did you add the bias?")
    message = str(info.value)
    assert "logits is not close to the expected value" in message
    assert "expected: [[1., 2.], [3., 4.]] (shape (2, 2))" in message
    assert "got:      [[1. , 2. ], [3. , 4.5]] (shape (2, 2))" in message
    assert "max |got - expected| = 0.5 at index (1, 1) (got 4.5, expected 4)" in message
    assert "1 of 4 values differ" in message
    assert message.endswith("Hint: Did you add the bias?")


def test_check_close_respects_tolerances():
    check_close(1.001, 1.0, rtol=1e-2)
    check_close(1e-9, 0.0)  # within atol
    with pytest.raises(CheckFailed):
        check_close(1.001, 1.0)
    with pytest.raises(CheckFailed, match=r"max \|got - expected\| = inf .*got nan"):
        check_close([1.0, float("nan")], [1.0, 2.0])


def test_check_close_shape_mismatch_message():
    with pytest.raises(CheckFailed) as info:
        check_close(torch.zeros(3, 2), np.zeros((2, 3)), name="attention", hint="Transpose K.")
    message = str(info.value)
    assert "attention has shape (3, 2), but the expected shape is (2, 3)" in message
    assert "expected: [[0., 0., 0.], [0., 0., 0.]] (shape (2, 3))" in message
    assert "Hint: Transpose K." in message
    with pytest.raises(CheckFailed, match=r"shape \(1,\), but the expected shape is \(\)"):
        check_close([3.0], 3.0)  # strict about shape: no silent broadcasting


def test_check_close_non_numeric_answers():
    with pytest.raises(CheckFailed, match="came back None; did the function forget to `return`"):
        check_close(None, 1.0, name="result")
    with pytest.raises(CheckFailed, match="is a function; call it"):
        check_close(np.mean, 1.0)
    with pytest.raises(CheckFailed, match="not a number or an array of numbers: got str 'abc'"):
        check_close("abc", 1.0)


def test_long_values_are_shortened():
    with pytest.raises(CheckFailed) as info:
        check_close(np.zeros((100, 100)), np.ones((100, 100)))
    assert all(len(line) < 200 for line in str(info.value).splitlines())
    assert "(shape (100, 100))" in str(info.value)


@pytest.mark.parametrize("check", ["close", "equal", "shape"])
def test_ellipsis_means_not_answered(check):
    call = {
        "close": lambda: check_close(..., 1.0, name="answer_1", hint="Use np.exp."),
        "equal": lambda: check_equal(..., 1, name="answer_1", hint="Use np.exp."),
        "shape": lambda: check_shape(..., (2, 3), name="answer_1", hint="Use np.exp."),
    }[check]
    with pytest.raises(CheckFailed) as info:
        call()
    assert str(info.value) == (
        "answer_1 is not answered yet: replace the `...` in the exercise cell.\n  Hint: Use np.exp."
    )


def test_check_equal(capsys):
    check_equal({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, name="vocab")
    check_equal(np.array([1, 2, 3]), [1, 2, 3], name="ids")
    check_equal(torch.tensor([1, 2]), torch.tensor([1, 2]), name="tensor ids")
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["✓ vocab passed", "✓ ids passed", "✓ tensor ids passed"]
    with pytest.raises(CheckFailed) as info:
        check_equal([1, 2, 4], [1, 2, 3], name="tokens", hint="Merge the most frequent pair first.")
    message = str(info.value)
    assert "expected: [1, 2, 3]" in message and "got:      [1, 2, 4]" in message
    assert "first difference at index 2: got 4, expected 3" in message
    assert message.endswith("Hint: Merge the most frequent pair first.")


def test_check_equal_explains_differences():
    with pytest.raises(CheckFailed, match="types differ: got tuple, expected list"):
        check_equal((1, 2), [1, 2])
    match = r"missing keys: \['c'\]; extra keys: \['z'\]; different values: \['a'\]"
    with pytest.raises(CheckFailed, match=match):
        check_equal({"a": 0, "b": 2, "z": 1}, {"a": 1, "b": 2, "c": 3})
    with pytest.raises(CheckFailed, match="length 2, expected 3"):
        check_equal("ab", "abc")
    with pytest.raises(CheckFailed, match="expected: 7"):
        check_equal(6, 7)
    with pytest.raises(CheckFailed, match="not what was expected"):
        check_equal(np.array([1, 2]), np.array([1, 2, 3]))  # different shapes
    with pytest.raises(CheckFailed, match="not what was expected"):
        check_equal(torch.tensor([1, 5]), [1, 2])


def test_check_shape(capsys):
    check_shape(torch.zeros(4, 8, 16), (4, None, 16), name="x")
    check_shape(np.zeros((2, 3)), (2, 3), name="y")
    check_shape([[1, 2, 3]], (1, 3), name="z")  # lists are measured as numpy would
    assert capsys.readouterr().out.splitlines() == ["✓ x passed", "✓ y passed", "✓ z passed"]
    match = r"q has shape \(4, 8, 16\); expected \(4, any, 8\)\.\n  Hint: split heads"
    with pytest.raises(CheckFailed, match=match):
        check_shape(torch.zeros(4, 8, 16), (4, None, 8), name="q", hint="split heads")
    with pytest.raises(CheckFailed, match=r"has shape \(4, 8\); expected \(4, 8, 1\)"):
        check_shape(torch.zeros(4, 8), (4, 8, 1))
    with pytest.raises(ValueError, match=r"expected_shape must hold sizes >= 0 or None.*got \(2, 'B'\)"):
        check_shape(torch.zeros(2, 3), (2, "B"))


def relu_reference(x):
    return np.maximum(x, 0.0)


def relu_wrong_on_negatives(x):
    return np.abs(x)  # right for every x >= 0, wrong only for negative inputs


def make_relu_inputs(rng):
    return (rng.normal(size=5),)


def test_check_function_passes(capsys):
    check_function(lambda x: x * (x > 0), relu_reference, make_relu_inputs, name="relu")
    def torch_relu(x):
        return torch.relu(torch.as_tensor(x))  # a tensor result is compared as numbers

    def torch_inputs(rng):
        return (torch.from_numpy(rng.normal(size=(2, 3))),)

    check_function(torch_relu, relu_reference, make_relu_inputs, name="torch relu")
    check_function(torch_relu, torch.nn.functional.relu, torch_inputs, name="torch inputs")
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["✓ relu passed", "✓ torch relu passed", "✓ torch inputs passed"]
    with pytest.raises(CheckFailed, match=r"inputs: \(\[\[.*\(shape \(2, 3\)\)"):
        check_function(torch.abs, torch.nn.functional.relu, torch_inputs)


def test_check_function_catches_a_subtle_bug():
    with pytest.raises(CheckFailed) as info:
        check_function(relu_wrong_on_negatives, relu_reference, make_relu_inputs, hint="What is relu(-1)?")
    message = str(info.value)
    assert "relu_wrong_on_negatives is wrong on trial 1 of 20" in message
    assert "inputs: ([" in message and "(shape (5,))" in message
    assert "relu_wrong_on_negatives's result is not close to the expected value" in message
    assert message.endswith("Hint: What is relu(-1)?")


def test_check_function_catches_a_bug_that_needs_many_trials():
    # Wrong only for inputs above 2.5: rare with a standard normal, so a single example would likely miss it.
    def clipped(x):
        return np.minimum(np.maximum(x, 0.0), 2.5)

    def one_input(rng):
        return (rng.normal(),)

    check_function(clipped, relu_reference, one_input, n_trials=3)  # too few trials: the bug hides
    with pytest.raises(CheckFailed, match="clipped is wrong on trial"):
        check_function(clipped, relu_reference, one_input, n_trials=500)


def test_check_function_not_implemented_stub():
    def softmax(x):
        raise NotImplementedError("Subtract the max, exponentiate, divide by the sum.")

    with pytest.raises(CheckFailed) as info:
        check_function(softmax, relu_reference, make_relu_inputs)
    message = str(info.value)
    assert "softmax is not implemented yet" in message
    assert "It says: Subtract the max, exponentiate, divide by the sum." in message
    assert isinstance(info.value.__cause__, NotImplementedError)


def test_check_function_other_exceptions_are_named_and_chained():
    def broken(x):
        return x.reshape(3, 3)

    with pytest.raises(CheckFailed) as info:
        check_function(broken, relu_reference, make_relu_inputs, hint="Keep the shape.")
    message = str(info.value)
    assert message.startswith("broken raised ValueError: cannot reshape array of size 5")
    assert "on inputs: ([" in message and message.endswith("Hint: Keep the shape.")
    assert isinstance(info.value.__cause__, ValueError)


def test_check_function_unanswered_and_not_callable():
    with pytest.raises(CheckFailed, match="my_relu is not answered yet"):
        check_function(..., relu_reference, make_relu_inputs, name="my_relu")
    with pytest.raises(CheckFailed, match="should be a function; got int 3"):
        check_function(3, relu_reference, make_relu_inputs, name="my_relu")
    with pytest.raises(ValueError, match="n_trials must be a positive integer; got 0"):
        check_function(relu_reference, relu_reference, make_relu_inputs, n_trials=0)


def test_check_function_inputs_are_copied_and_repeatable():
    def in_place_relu(x):
        x[x < 0] = 0.0  # edits its input: must not change what the reference sees
        return x

    check_function(in_place_relu, relu_reference, make_relu_inputs)
    seen = []
    def recording_relu(x):
        seen.append(x.copy())
        return relu_reference(x)

    for _ in range(2):
        check_function(recording_relu, relu_reference, make_relu_inputs, n_trials=2)
    np.testing.assert_array_equal(seen[0], seen[2])  # the same seed gives the same inputs


def test_check_function_single_argument_and_tuple_outputs():
    def stats(x):
        return x.mean(), x.var()

    def make(rng):
        return rng.normal(size=8)  # a bare argument, not a tuple

    check_function(stats, stats, make)
    with pytest.raises(CheckFailed, match=r"stats's result\[1\] is not close"):
        check_function(lambda x: (x.mean(), x.std()), stats, make, name="stats")
    with pytest.raises(CheckFailed, match="should be a tuple of 2 values"):
        check_function(lambda x: x.mean(), stats, make, name="stats")


def test_infinities_that_agree_are_not_reported_as_the_difference():
    mask = np.array([[0.0, -np.inf], [-1.0, 0.0]])
    wrong = np.array([[0.0, -np.inf], [1.0, 0.0]])  # equal -inf where expected, wrong sign below
    with pytest.raises(CheckFailed) as error:
        check_close(wrong, mask)
    assert "at index (1, 0)" in str(error.value) and "= 2" in str(error.value), str(error.value)


def test_inputs_unchanged_fails_an_in_place_solution_and_passes_a_copying_one(capsys):
    def in_place_relu(x):
        x[x < 0] = 0.0
        return x

    with pytest.raises(CheckFailed, match=r"changed its argument 1 in place[\s\S]*work on a copy") as error:
        check_function(in_place_relu, relu_reference, make_relu_inputs, inputs_unchanged=True, hint="use np.maximum")
    assert "Hint: use np.maximum" in str(error.value)
    check_function(lambda x: np.maximum(x, 0.0), relu_reference, make_relu_inputs, inputs_unchanged=True, name="relu")
    assert "✓ relu passed" in capsys.readouterr().out

    def in_place_tensor(t, scale):  # torch tensors and a second argument are compared too
        return t.mul_(scale)

    make = lambda rng: (torch.tensor(rng.normal(size=4)), 2.0)  # noqa: E731
    with pytest.raises(CheckFailed, match="argument 1"):
        check_function(in_place_tensor, lambda t, s: t * s, make, inputs_unchanged=True)
    check_function(lambda t, s: t * s, lambda t, s: t * s, make, inputs_unchanged=True)


def test_exact_mode_compares_words_dicts_and_lists_without_wrapping():
    def count_words(text):
        counts = {}
        for word in text.split():
            counts[word] = counts.get(word, 0) + 1
        return counts

    from collections import Counter

    words = ["a", "b", "c"]
    make = lambda rng: " ".join(rng.choice(words, size=6))  # noqa: E731
    check_function(count_words, lambda text: dict(Counter(text.split())), make, exact=True)
    with pytest.raises(CheckFailed, match=r"count_words's result is not what was expected[\s\S]*different values"):
        check_function(lambda text: {w: 1 for w in text.split()}, lambda t: dict(Counter(t.split())), make,
                       exact=True, name="count_words")
    with pytest.raises(CheckFailed, match="first difference at index 0"):
        check_function(lambda t: sorted(t.split(), reverse=True), lambda t: sorted(t.split()),
                       lambda rng: "b a c", exact=True, name="sort", n_trials=1)
    with pytest.raises(CheckFailed, match="is not what was expected"):  # exact: 1e-12 off is wrong
        check_function(lambda x: x + 1e-12, lambda x: x, make_relu_inputs, exact=True, name="same")


def test_no_loops_fails_loops_and_comprehensions_and_passes_whole_array_code():
    def looped(x):
        out = x.copy()
        for i in range(len(out)):
            out[i] = max(out[i], 0.0)
        return out

    def comprehended(x):
        return np.array([max(v, 0.0) for v in x])

    def vectorised(x):
        return np.maximum(x, 0.0)

    with pytest.raises(CheckFailed, match=r"uses a `for` loop \(line 3 of the function\).*without Python loops"):
        check_function(looped, relu_reference, make_relu_inputs, no_loops=True)
    with pytest.raises(CheckFailed, match="uses a list comprehension"):
        check_function(comprehended, relu_reference, make_relu_inputs, no_loops=True)
    check_function(looped, relu_reference, make_relu_inputs)  # the loop is only refused when asked
    check_function(vectorised, relu_reference, make_relu_inputs, no_loops=True)
    check_function(np.abs, np.abs, make_relu_inputs, no_loops=True)  # no Python source: nothing to refuse


def test_inputs_unchanged_and_exact_work_on_pandas_tables_with_text():
    pd = pytest.importorskip("pandas")

    def make(rng):
        return pd.DataFrame({"name": list("abc"), "value": [" 1,5", "2", None]})

    def clean_in_place(df):
        df["value"] = df["value"].str.strip()
        return df

    def clean_copy(df):
        return df.assign(value=df["value"].str.strip())

    with pytest.raises(CheckFailed, match="changed its argument 1 in place"):
        check_function(clean_in_place, clean_copy, make, exact=True, inputs_unchanged=True, n_trials=1)
    check_function(clean_copy, clean_copy, make, exact=True, inputs_unchanged=True, n_trials=1, name="clean")
    with pytest.raises(CheckFailed, match="is not what was expected"):
        check_function(lambda df: df, clean_copy, make, exact=True, n_trials=1, name="clean")
