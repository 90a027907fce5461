"""utils.progress_bars: a saved notebook's tqdm bars show their final state in text/plain (what GitHub shows).

The end-to-end test (a real kernel runs a tqdm loop) is in test_course_cli.py; these use widget states
written by hand, in the shape nbclient records them.
"""

from __future__ import annotations

from nbformat.v4 import new_code_cell, new_notebook, new_output

from utils.progress_bars import finish_progress_bars

VIEW = "application/vnd.jupyter.widget-view+json"


def _bar_states(left: str, value: float, total: float, right: str, hidden: bool = False) -> dict[str, dict]:
    """The widget states of one tqdm.notebook bar: an HBox of HTML, FloatProgress, HTML."""
    return {
        "box": {"_model_name": "HBoxModel", "children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"],
                "layout": "IPY_MODEL_box_layout"},
        "box_layout": {"_model_name": "LayoutModel", "visibility": "hidden" if hidden else None},
        "l": {"_model_name": "HTMLModel", "value": left},
        "p": {"_model_name": "FloatProgressModel", "value": value, "max": total},
        "r": {"_model_name": "HTMLModel", "value": right},
    }


def _notebook_showing(model_id: str, text: str):
    output = new_output("display_data", data={"text/plain": text, VIEW: {"model_id": model_id}})
    return new_notebook(cells=[new_code_cell("", outputs=[output])])


def test_a_bar_shows_its_last_state_with_tqdms_escapes_undone():
    nb = _notebook_showing("box", "train:   0%|          | 0/8 [00:00<?, ?it/s]")
    states = _bar_states("train:\u200750%", 4, 8, "\u20074/8\u2007[00:02&lt;00:02,\u20072.00it/s,\u2007loss=1.5]")
    finish_progress_bars(nb, states)
    expected = "train: 50%|█████     | 4/8 [00:02<00:02, 2.00it/s, loss=1.5]"
    assert nb.cells[0].outputs[0].data["text/plain"] == expected


def test_a_bar_without_total_and_other_widgets():
    nb = _notebook_showing("box", "0it [00:00, ?it/s]")
    finish_progress_bars(nb, _bar_states("", 12, 1, "12it\u2007[00:01,\u20079.80it/s]"))
    assert nb.cells[0].outputs[0].data["text/plain"] == "12it [00:01, 9.80it/s]"
    slider = _notebook_showing("s", "IntSlider(value=3)")
    finish_progress_bars(slider, {"s": {"_model_name": "IntSliderModel", "value": 3}})
    assert slider.cells[0].outputs[0].data["text/plain"] == "IntSlider(value=3)"  # not a bar: unchanged


def test_a_bar_that_hid_itself_is_removed_and_other_outputs_stay():
    """tqdm(leave=False) hides its bar at the end without redrawing its text: a fast loop left "0/400"."""
    nb = _notebook_showing("box", "fast:   0%|          | 0/400 [00:00<?, ?it/s]")
    nb.cells[0].outputs.insert(0, new_output("stream", name="stdout", text="before the loop\n"))
    finish_progress_bars(nb, _bar_states("fast:\u2007\u2007\u20070%", 400, 400, "\u20070/400\u2007[00:00&lt;?,\u2007?it/s]",
                                         hidden=True))
    assert [o.output_type for o in nb.cells[0].outputs] == ["stream"]
