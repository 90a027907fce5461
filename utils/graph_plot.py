"""Draw a scalar autograd graph (values as boxes, operations as circles) with matplotlib alone."""

from __future__ import annotations

from typing import Any


def draw_graph(root: Any, title: str = "") -> None:
    """Draw the graph behind `root`: a box per value (label, data, grad), a circle per operation.

    `root` is any node with `data`, `grad`, `label`, `_op` and `_prev` (the inputs it was made from), like the
    `Value` of the notebook. Introduced in 00_prerequisites/05_calculus_and_autograd.ipynb.
    """
    import matplotlib.pyplot as plt

    if not hasattr(root, "_prev"):
        raise ValueError(f"draw_graph needs a graph node with a _prev attribute; got {type(root).__name__}.")
    column: dict = {}

    def place(v) -> int:  # a result sits one column right of its deepest input
        if v not in column:
            column[v] = 1 + max((place(child) for child in v._prev), default=-1)
        return column[v]

    place(root)
    leaf_column = {}  # each input (a leaf) moves to just left of the first operation that reads it
    for v in column:
        for child in v._prev:
            if not child._prev:
                leaf_column[child] = min(leaf_column.get(child, column[v] - 1), column[v] - 1)
    column.update(leaf_column)
    rows: dict[int, list] = {}
    for v, col in column.items():
        rows.setdefault(col, []).append(v)
    height = max(len(vs) for vs in rows.values())
    fig, ax = plt.subplots(figsize=(2.3 * (len(rows) + 0.5), 0.9 * height + 0.8))
    box, circle = {}, {}
    for col, vs in rows.items():
        for i, v in enumerate(vs):
            x, y = 3 * col, (len(vs) - 1) / 2 - i
            text = f"{v.label}\n" if v.label else ""
            box[v] = ax.text(x, y, f"{text}data {v.data:.3f}\ngrad {v.grad:.3f}", ha="center", va="center",
                             fontsize=8, bbox=dict(boxstyle="round", fc="white", ec="tab:blue"))
            if v._prev:  # the operation that made v, drawn as a circle just left of its box
                circle[v] = ax.text(x - 1.5, y, v._op, ha="center", va="center", fontsize=9,
                                    bbox=dict(boxstyle="circle", fc="lightyellow", ec="gray"))
                ax.annotate("", xy=(0, 0.5), xycoords=box[v], xytext=(1, 0.5), textcoords=circle[v],
                            arrowprops=dict(arrowstyle="->", color="gray"))
    for v in circle:
        for child in v._prev:
            ax.annotate("", xy=(0, 0.5), xycoords=circle[v], xytext=(1, 0.5), textcoords=box[child],
                        arrowprops=dict(arrowstyle="->", color="gray"))
    ax.set_xlim(-1.2, 3 * (len(rows) - 1) + 1.2)
    ax.set_ylim(-height / 2, height / 2)
    ax.axis("off")
    ax.set_title(title)
    plt.show()
