"""utils.plot.draw_graph: draws any scalar autograd graph, one box per value and one circle per operation."""

import pytest

from utils.plot import draw_graph


class Node:
    def __init__(self, data, prev=(), op="", label=""):
        self.data, self.grad, self._prev, self._op, self.label = data, 0.0, prev, op, label


def test_one_box_per_value_and_one_circle_per_operation():
    a, b, c = Node(1.0, label="a"), Node(2.0, label="b"), Node(4.0, label="c")
    e = Node(2.0, (a, b), "×", "e")
    root = Node(6.0, (e, c), "+", "L")
    fig = draw_graph(root, "test")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sum("data" in t for t in texts) == 5, texts  # a, b, c, e, L
    assert sorted(t for t in texts if t and "data" not in t) == ["+", "×"]


def test_a_value_used_twice_is_drawn_once():
    x = Node(3.0, label="x")
    fig = draw_graph(Node(9.0, (x, x), "×", "y"))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sum("data" in t for t in texts) == 2


def test_a_plain_number_is_refused():
    with pytest.raises(ValueError, match="_prev"):
        draw_graph(3.0)


def test_the_figure_is_returned_closed():
    import matplotlib.pyplot as plt

    fig = draw_graph(Node(1.0, label="x"))
    assert not plt.fignum_exists(fig.number), "an open figure would be shown twice in Jupyter"
