"""Progress bars in executed notebooks: the saved plain text shows where each bar ended, not 0%.

tqdm's notebook bar is a widget. A saved notebook keeps the widget's state (for Jupyter) and a text/plain
copy taken when the bar was first displayed: "0%|          | 0/1000". GitHub and every text viewer show
that copy, so `python -m utils.course run` rewrites it from the widget's final state. A bar made with
`leave=False` hides itself when its loop ends, so Jupyter shows nothing there; its saved copy goes too (its
text would be stale: tqdm does not redraw the text of a bar it hides).
"""

from __future__ import annotations

import html
from typing import Any

from nbformat import NotebookNode


def _plain(widget: dict[str, Any]) -> str:
    """An HTML widget's text as tqdm wrote it: HTML escapes undone, U+2007 figure spaces back to spaces."""
    return html.unescape(widget.get("value") or "").replace("\u2007", " ")


def _finished_bar_text(hbox: dict[str, Any], states: dict[str, dict[str, Any]]) -> str | None:
    """The text of a tqdm notebook bar in its last state, or None if `hbox` is not a tqdm bar.

    tqdm.notebook draws a bar as an HBox of (HTML left text, progress, HTML right text); the right text
    holds "5/5 [00:01<00:00, 4.9it/s]". tqdm escaped both texts for HTML and replaced spaces by U+2007.
    """
    from tqdm.std import Bar

    children = [states.get(str(ref).removeprefix("IPY_MODEL_"), {}) for ref in hbox.get("children", [])]
    names = [child.get("_model_name") for child in children]
    if len(names) != 3 or not names[0] == names[2] == "HTMLModel" or "Progress" not in str(names[1]):
        return None
    left, progress, right = _plain(children[0]), children[1], _plain(children[2])
    if not left:  # no total known: tqdm draws no bar, only "12it [00:01, 9.8it/s]"
        return right
    fraction = min(max((progress.get("value") or 0) / (progress.get("max") or 1), 0.0), 1.0)
    return f"{left}|{format(Bar(fraction, 10), '')}|{right}"  # 10 cells wide, as tqdm's text fallback


def _hidden(widget: dict[str, Any], states: dict[str, dict[str, Any]]) -> bool:
    """Whether a widget's layout hides it, as tqdm.notebook does on closing a `leave=False` bar."""
    layout = states.get(str(widget.get("layout", "")).removeprefix("IPY_MODEL_"), {})
    return layout.get("visibility") == "hidden"


def finish_progress_bars(nb: NotebookNode, states: dict[str, dict[str, Any]]) -> None:
    """Set each tqdm bar's text/plain (what GitHub and text viewers show) to its final state.

    A bar that hid itself at the end (`leave=False`) is removed, as it is from Jupyter's view.
    `states` maps widget model ids to their last state, as nbclient's `NotebookClient.widget_state` does.
    """
    for cell in nb.cells:
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            view = data.get("application/vnd.jupyter.widget-view+json")
            if view and states.get(view.get("model_id")):
                bar = states[view["model_id"]]
                text = _finished_bar_text(bar, states)
                if text is not None and _hidden(bar, states):
                    continue
                if text is not None:
                    data["text/plain"] = text
            kept.append(output)
        if "outputs" in cell:
            cell.outputs = kept
