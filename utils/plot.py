"""Plots used across the course: training curves, image grids, attention maps, scalar autograd graphs.

Every function builds a new figure and returns it (a `matplotlib.figure.Figure`); none calls
`plt.show()` or touches rcParams. In Jupyter, a returned figure on a cell's last line is shown once;
`fig = image_grid(x)` shows nothing until you display `fig`. Save one with `fig.savefig("grid.png")`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

_IMAGE_SHAPES = "(N, H, W), (N, 1, H, W), (N, 3, H, W), (N, H, W, 1) or (N, H, W, 3)"


def _to_numpy(values: Any) -> np.ndarray:
    """A float numpy array from a numpy array, a list, or a torch tensor (on any device, with grad or not)."""
    if hasattr(values, "detach"):  # a torch tensor: no torch import needed to recognise one
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=float)


def _finish(fig: Figure, ax: Any, *, title: str | None = None, log_y: bool = False) -> Figure:
    """Apply the shared options, then hand the figure over to the caller."""
    if log_y:
        ax.set_yscale("log")
    if title is not None:
        ax.set_title(title)
    fig.tight_layout()
    # Detach the figure from pyplot's list of open figures: Jupyter then shows the returned figure
    # once (not twice), and figures made in a loop do not pile up in memory. It stays fully usable.
    plt.close(fig)
    return fig


def plot_history(
    history: Mapping[str, Sequence[float]],
    keys: Sequence[str] = ("train_loss", "eval_loss"),
    *,
    log_y: bool = False,
    title: str | None = None,
) -> Figure:
    """Curves from a `fit()` history: `eval_*` keys against history["eval_step"], others against "step"."""
    if isinstance(keys, str):
        keys = (keys,)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in keys:
        if key not in history:
            plt.close(fig)
            raise ValueError(f"history has no key {key!r}; its keys are {sorted(history)}.")
        x_key = "eval_step" if key.startswith("eval_") else "step"
        x, y = list(history.get(x_key, [])), list(history[key])
        if not y:
            continue  # e.g. eval_loss when fit() had no eval_loader: nothing to draw
        if len(x) != len(y):
            plt.close(fig)
            raise ValueError(f"history[{key!r}] has {len(y)} values but history[{x_key!r}] has {len(x)}.")
        # Evaluations are few and far apart, so mark each one.
        ax.plot(x, y, label=key, marker="o" if x_key == "eval_step" else None)
    if not ax.lines:
        plt.close(fig)
        raise ValueError(f"Nothing to plot: the keys {list(keys)} are all empty in this history.")
    ax.set_xlabel("step")
    ax.set_ylabel("loss" if all("loss" in key for key in keys) else "value")
    ax.legend()
    return _finish(fig, ax, title=title, log_y=log_y)


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    log_y: bool = False,
    title: str | None = None,
) -> Figure:
    """Several named 1-D curves on one axes, each against its index (e.g. loss per step per optimizer)."""
    if not curves:
        raise ValueError("curves is empty; pass a dict like {'SGD': losses_sgd, 'Adam': losses_adam}.")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, values in curves.items():
        y = _to_numpy(values)
        if y.ndim != 1:
            plt.close(fig)
            raise ValueError(f"curve {label!r} has shape {y.shape}; a curve must be 1-D, shape (n,).")
        ax.plot(np.arange(len(y)), y, label=str(label))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    return _finish(fig, ax, title=title, log_y=log_y)


def _as_image_batch(images: Any) -> np.ndarray:
    """Images as a float array of shape (N, H, W) or (N, H, W, 3) with values in [0, 1]."""
    if hasattr(images, "detach"):
        is_integer = not images.is_floating_point()
    else:
        is_integer = np.issubdtype(np.asarray(images).dtype, np.integer)
    x = _to_numpy(images)
    shape = x.shape
    if x.ndim == 4 and x.shape[1] in (1, 3):
        x = x.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C), the layout imshow wants
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]  # (N, H, W, 1) -> (N, H, W)
    if not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 3)) or len(x) == 0:
        raise ValueError(f"images has shape {shape}; allowed shapes: {_IMAGE_SHAPES} with N >= 1.")
    if is_integer:
        x = x / 255.0  # integer pixels, 0..255
    elif x.min() < 0.0 and x.min() >= -1.0 and x.max() <= 1.0:
        x = (x + 1.0) / 2.0  # [-1, 1]: the range diffusion models and GANs work in
    elif x.min() < 0.0 or x.max() > 1.0:
        # Anything else: rescale the whole batch together, so that images keep their relative brightness.
        x = (x - x.min()) / max(x.max() - x.min(), 1e-12)
    return np.clip(x, 0.0, 1.0)


def image_grid(
    images: Any,
    *,
    nrow: int = 8,
    titles: Sequence[str] | None = None,
    cmap: str = "gray",
    figsize_per_image: float = 1.2,
) -> Figure:
    """A grid of images, `nrow` per row (as in torchvision's make_grid); values in [0, 1] or auto-rescaled."""
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow (images per row) must be a positive integer; got {nrow!r}.")
    x = _as_image_batch(images)  # (N, H, W) or (N, H, W, 3)
    n = len(x)
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles has {len(titles)} entries for {n} images; give one title per image.")
    n_cols = min(nrow, n)
    n_rows = math.ceil(n / n_cols)
    size = (n_cols * figsize_per_image, n_rows * figsize_per_image * (1.25 if titles is not None else 1.0))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=size, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            fig.delaxes(ax)  # the unused cells of the last row
            continue
        # vmin/vmax pin grey levels to [0, 1]; otherwise each image would be stretched on its own.
        ax.imshow(x[i], cmap=cmap if x.ndim == 3 else None, vmin=0.0, vmax=1.0)
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # see _finish: shown once in Jupyter, and no pile-up of open figures
    return fig


def attention_heatmap(
    weights: Any,
    x_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """A (T, S) attention matrix as a heat map: one row per query, one column per key, with a colour bar."""
    w = _to_numpy(weights)
    if w.ndim != 2:
        raise ValueError(
            f"weights has shape {w.shape}; allowed: (T, S), queries by keys. "
            "Pick one head and one example first, e.g. att[0, head]."
        )
    n_queries, n_keys = w.shape  # (T, S)
    if x_labels is not None and len(x_labels) != n_keys:
        raise ValueError(f"x_labels has {len(x_labels)} entries; weights has {n_keys} key columns.")
    if y_labels is not None and len(y_labels) != n_queries:
        raise ValueError(f"y_labels has {len(y_labels)} entries; weights has {n_queries} query rows.")
    side = min(10.0, 2.0 + 0.35 * max(n_queries, n_keys))  # room for token labels, capped for long contexts
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(w, cmap="viridis")
    fig.colorbar(image, ax=ax)
    if x_labels is not None:
        ax.set_xticks(range(n_keys), [str(label) for label in x_labels], rotation=90)
    if y_labels is not None:
        ax.set_yticks(range(n_queries), [str(label) for label in y_labels])
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    return _finish(fig, ax, title=title)


def _graph_columns(root: Any) -> dict[int, list]:
    """Column -> nodes of the graph behind `root`: a result one column right of its deepest input."""
    column: dict = {}

    def place(v: Any) -> int:
        if v not in column:
            column[v] = 1 + max((place(child) for child in v._prev), default=-1)
        return column[v]

    place(root)
    leaf_column: dict = {}  # each input (a leaf) moves to just left of the first operation that reads it
    for v in column:
        for child in v._prev:
            if not child._prev:
                leaf_column[child] = min(leaf_column.get(child, column[v] - 1), column[v] - 1)
    column.update(leaf_column)
    rows: dict[int, list] = {}
    for v, col in column.items():
        rows.setdefault(col, []).append(v)
    return rows


def draw_graph(root: Any, title: str = "") -> Figure:
    """The graph behind a scalar autograd node: a box per value (label, data, grad), a circle per operation.

    `root` is any node with `data`, `grad`, `label`, `_op` and `_prev` (the nodes it was made from), like the
    `Value` of 00_prerequisites/05_calculus_and_autograd.ipynb, where this function was introduced.
    """
    if not hasattr(root, "_prev"):
        raise ValueError(f"draw_graph needs a graph node with a _prev attribute; got {type(root).__name__}.")
    rows = _graph_columns(root)
    height = max(len(vs) for vs in rows.values())
    fig, ax = plt.subplots(figsize=(2.3 * (len(rows) + 0.5), 0.9 * height + 0.8))
    box, circle = {}, {}
    arrow = dict(arrowstyle="->", color="gray")
    for col, vs in rows.items():
        for i, v in enumerate(vs):
            x, y = 3 * col, (len(vs) - 1) / 2 - i
            text = f"{v.label}\n" if v.label else ""
            box[v] = ax.text(x, y, f"{text}data {v.data:.3f}\ngrad {v.grad:.3f}", ha="center", va="center",
                             fontsize=8, bbox=dict(boxstyle="round", fc="white", ec="tab:blue"))
            if v._prev:  # the operation that made v, drawn as a circle just left of its box
                circle[v] = ax.text(x - 1.5, y, v._op, ha="center", va="center", fontsize=9,
                                    bbox=dict(boxstyle="circle", fc="lightyellow", ec="gray"))
                ax.annotate("", xy=(0, 0.5), xycoords=box[v], xytext=(1, 0.5), textcoords=circle[v], arrowprops=arrow)
    for v in circle:
        for child in v._prev:
            ax.annotate("", xy=(0, 0.5), xycoords=circle[v], xytext=(1, 0.5), textcoords=box[child], arrowprops=arrow)
    ax.set_xlim(-1.2, 3 * (len(rows) - 1) + 1.2)
    ax.set_ylim(-height / 2, height / 2)
    ax.axis("off")
    ax.set_title(title)
    plt.close(fig)  # see _finish: shown once in Jupyter when it is a cell's last expression
    return fig
