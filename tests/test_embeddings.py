"""utils.embeddings: the promoted mean pooling equals the notebook's, and refuses mismatched shapes."""

from pathlib import Path

import pytest
import torch

from utils.embeddings import mean_pooling
from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[1] / "02_transformers" / "07_pretrained_models_bert_gpt_t5.ipynb"


def test_same_as_the_notebook_and_padding_free():
    hidden = torch.randn(3, 6, 5, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    ours = mean_pooling(hidden, mask)
    torch.testing.assert_close(ours, notebook_definitions(NOTEBOOK)["mean_pooling"](hidden, mask))
    torch.testing.assert_close(ours[1], hidden[1, :3].mean(dim=0))  # the mean over real tokens only
    torch.testing.assert_close(ours[2], hidden[2, 0])


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="share"):
        mean_pooling(torch.zeros(2, 4, 3), torch.ones(2, 5))
