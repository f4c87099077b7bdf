"""How closely an ONNX graph must reproduce the eager model, by what its output means: class
scores as softmax percentages (and a top-1 answer that must not change where it is clear), images
in 8-bit levels (at most one apart) — the same on every CPU, whatever its kernels round."""

from __future__ import annotations

import pytest
import torch

from dlwp_models.models.onnx_graphs import LEVEL_TOLERANCE, PERCENT_TOLERANCE, disagreement


def test_class_scores_compare_as_percentages():
    logits = torch.tensor([[4.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    same, tolerance, unit = disagreement(logits + 1e-4, logits, "logits")
    assert same < 1e-2 and tolerance == PERCENT_TOLERANCE and unit == "percentage points of the class scores"
    shifted, _, _ = disagreement(logits + 7.0, logits, "logits")  # the same softmax: the same answer
    assert shifted < 1e-4
    moved, _, _ = disagreement(logits + torch.tensor([[0.0, 0.05, 0.0], [0.0, 0.0, 0.0]]), logits, "logits")
    assert PERCENT_TOLERANCE < moved < 1.0


def test_a_changed_clear_top1_is_infinitely_far_but_a_tie_may_swap():
    clear = torch.tensor([[2.0, 1.0, 0.0]])
    swapped = torch.tensor([[1.0, 2.0, 0.0]])
    assert disagreement(swapped, clear, "logits")[0] == float("inf")
    tie = torch.tensor([[1.0, 1.0 + 1e-6, 0.0]])
    assert disagreement(tie[:, [1, 0, 2]], tie, "logits")[0] < PERCENT_TOLERANCE


@pytest.mark.parametrize("meaning", ["pixels01", "pixels11"])
def test_images_compare_in_8_bit_levels(meaning):
    low = 0.0 if meaning == "pixels01" else -1.0
    span = 1.0 if meaning == "pixels01" else 2.0
    image = low + span * torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    level = span / 255
    rounding, tolerance, _ = disagreement(image + 1e-4 * span, image, meaning)  # a rounding edge moves by one
    assert rounding <= 1 and tolerance == LEVEL_TOLERANCE
    assert disagreement(image, image, meaning)[0] == 0.0
    worst, _, unit = disagreement((image + 2.2 * level).clamp(low, low + span), image, meaning)
    assert worst >= 2 and worst > LEVEL_TOLERANCE and unit == "8-bit pixel levels"


def test_an_unknown_meaning_is_refused():
    with pytest.raises(ValueError, match="unknown output meaning"):
        disagreement(torch.zeros(1), torch.zeros(1), "features")
