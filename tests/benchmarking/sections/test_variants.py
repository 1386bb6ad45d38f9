"""The speed-option variants keep the training step correct."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from brats_cggm.benchmarking.sections.variants import variant_spec
from brats_cggm.benchmarking.steps import build_trainer, synthetic_batch
from tests.helpers.bench_tiny import one_thread, tiny_config  # noqa: F401


def test_speed_options_keep_the_step_correct():
    spec = dataclasses.replace(tiny_config().base, channels_last=True)
    trainer = build_trainer(spec, [synthetic_batch(spec)])
    conv = trainer.network.encoders[0].levels[0].conv1.conv
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    trainer.run()
    assert torch.isfinite(trainer.state.output["loss"])
    with pytest.raises(ValueError, match="unknown variant"):
        variant_spec(spec, "bf16+turbo")


def test_variant_names_combine_options():
    spec = variant_spec(tiny_config().base, "bf16+channels_last+compile")
    assert (spec.amp, spec.channels_last, spec.compile) == ("bf16", True, True)
    assert variant_spec(spec, "default") == dataclasses.replace(spec, amp=None, channels_last=False, compile=False)
