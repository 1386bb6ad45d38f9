"""Modality dropout's counts as activity statistics (docs/methods.md §0.3)."""

from __future__ import annotations

import pytest
import torch

from brats_cggm.engine.modality_dropout import ModalityDropout


def test_activity_is_the_fraction_of_samples_without_each_modality():
    torch.manual_seed(0)
    dropout = ModalityDropout(("flair", "t1ce", "t1"), p=0.4)
    masks = [dropout.draw(16) for _ in range(3)]
    absent = (~torch.cat(masks)).float().mean(0)
    activity = dropout.activity()
    assert activity["modality_dropout/samples"] == 48.0
    assert [activity[f"modality_dropout/dropped/{m}"] for m in ("flair", "t1ce", "t1")] == pytest.approx(
        absent.tolist()
    )
    resumed = ModalityDropout(("flair", "t1ce", "t1"), p=0.4)
    resumed.load_state_dict(dropout.state_dict())
    assert resumed.activity() == activity


def test_no_activity_when_the_option_is_off():
    assert ModalityDropout(("flair", "t1ce"), p=0.0).activity() == {}
