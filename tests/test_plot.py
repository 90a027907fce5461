"""Tests for utils.plot: each function returns a Figure with the right content and rejects bad shapes."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from utils.plot import attention_heatmap, image_grid, plot_curves, plot_history

HISTORY = {
    "step": [1, 2, 3, 4],
    "train_loss": [4.0, 3.0, 2.0, 1.5],
    "lr": [0.1, 0.1, 0.05, 0.01],
    "eval_step": [2, 4],
    "eval_loss": [3.5, 2.0],
}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_importing_and_plotting_leave_global_state_alone():
    before = dict(matplotlib.rcParams)
    fig = plot_history(HISTORY)
    assert dict(matplotlib.rcParams) == before
    assert not plt.get_fignums()  # handed to the caller, not left open in pyplot (Jupyter shows it once)
    fig.savefig(__import__("io").BytesIO(), format="png")  # still fully usable


def test_plot_history_train_and_eval():
    fig = plot_history(HISTORY, title="run 1")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["train_loss", "eval_loss"]
    assert list(lines[0].get_xdata()) == [1, 2, 3, 4]
    assert list(lines[1].get_xdata()) == [2, 4]  # eval curve uses eval_step
    assert ax.get_title() == "run 1"
    assert ax.get_yscale() == "linear"


def test_plot_history_log_scale_other_keys_and_missing_eval():
    fig = plot_history(HISTORY, keys=("lr",), log_y=True)
    assert fig.axes[0].get_yscale() == "log"
    no_eval = {**HISTORY, "eval_step": [], "eval_loss": []}
    fig = plot_history(no_eval)  # eval_loss is empty: only the train curve is drawn
    assert len(fig.axes[0].get_lines()) == 1


def test_plot_history_bad_inputs():
    keys = r"\['eval_loss', 'eval_step', 'lr', 'step', 'train_loss'\]"
    with pytest.raises(ValueError, match=rf"no key 'val_loss'; its keys are {keys}"):
        plot_history(HISTORY, keys=("val_loss",))
    with pytest.raises(ValueError, match=r"history\['train_loss'\] has 3 values but history\['step'\] has 4"):
        plot_history({**HISTORY, "train_loss": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="Nothing to plot"):
        plot_history({"step": [], "train_loss": [], "eval_step": [], "eval_loss": []})
    assert not plt.get_fignums()  # failed calls leave no figure behind


def test_plot_curves_several_named_curves():
    curves = {"SGD": [3, 2, 1.5], "Adam": np.array([3, 1, 0.5, 0.2]), "tensor": torch.tensor([2.0, 1.0])}
    fig = plot_curves(curves, xlabel="step", ylabel="loss", log_y=True, title="optimizers")
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["SGD", "Adam", "tensor"]
    assert len(ax.get_lines()[1].get_xdata()) == 4
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_yscale()) == ("step", "loss", "log")


def test_plot_curves_bad_inputs():
    with pytest.raises(ValueError, match="curves is empty"):
        plot_curves({}, xlabel="x", ylabel="y")
    with pytest.raises(ValueError, match=r"curve 'bad' has shape \(2, 3\); a curve must be 1-D"):
        plot_curves({"bad": np.zeros((2, 3))}, xlabel="x", ylabel="y")


@pytest.mark.parametrize(
    "shape",
    [(10, 8, 8), (10, 1, 8, 8), (10, 3, 8, 8), (10, 8, 8, 3), (10, 8, 8, 1)],
)
def test_image_grid_accepts_all_layouts(shape):
    images = torch.rand(shape)
    fig = image_grid(images, nrow=4)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 10  # 3 rows of 4, the two spare cells removed
    shown = [ax.get_images()[0].get_array() for ax in fig.axes]
    assert shown[0].shape[:2] == (8, 8)
    assert shown[0].ndim == (3 if 3 in shape[1:2] + shape[-1:] else 2)


def test_image_grid_titles_numpy_and_rescaling():
    images = np.linspace(-1, 1, 3 * 4 * 4).reshape(3, 4, 4)  # [-1, 1], as a diffusion model outputs
    fig = image_grid(images, titles=["a", "b", "c"])
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    shown = np.stack([ax.get_images()[0].get_array() for ax in fig.axes])
    np.testing.assert_allclose(shown, (images + 1) / 2)
    fig = image_grid(np.full((2, 4, 4), 255, dtype=np.uint8))  # uint8 pixels
    assert fig.axes[0].get_images()[0].get_array().max() == pytest.approx(1.0)
    fig = image_grid(np.arange(2 * 9.0).reshape(2, 3, 3) * 10)  # anything else: min-max over the batch
    shown = np.stack([ax.get_images()[0].get_array() for ax in fig.axes])
    assert shown.min() == 0.0 and shown.max() == 1.0


@pytest.mark.parametrize("shape", [(8, 8), (2, 2, 8, 8), (2, 8, 8, 4), (0, 8, 8), (1, 2, 3, 4, 5)])
def test_image_grid_bad_shapes(shape):
    with pytest.raises(ValueError, match=rf"images has shape \({shape[0]}, .*allowed shapes: \(N, H, W\)"):
        image_grid(np.zeros(shape))


def test_image_grid_bad_arguments():
    with pytest.raises(ValueError, match="titles has 2 entries for 3 images"):
        image_grid(np.zeros((3, 4, 4)), titles=["a", "b"])
    with pytest.raises(ValueError, match="nrow .* positive integer; got 0"):
        image_grid(np.zeros((3, 4, 4)), nrow=0)


def test_attention_heatmap():
    weights = torch.softmax(torch.randn(3, 5), dim=-1)  # (T, S)
    fig = attention_heatmap(weights, x_labels=list("abcde"), y_labels=["x", "y", "z"], title="head 0")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # the map and its colour bar
    ax = fig.axes[0]
    assert ax.get_images()[0].get_array().shape == (3, 5)
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcde")
    assert ax.get_title() == "head 0"


def test_attention_heatmap_bad_inputs():
    with pytest.raises(ValueError, match=r"weights has shape \(2, 3, 5\); allowed: \(T, S\)"):
        attention_heatmap(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="x_labels has 2 entries; weights has 5 key columns"):
        attention_heatmap(np.zeros((3, 5)), x_labels=["a", "b"])
    with pytest.raises(ValueError, match="y_labels has 1 entries; weights has 3 query rows"):
        attention_heatmap(np.zeros((3, 5)), y_labels=["a"])
