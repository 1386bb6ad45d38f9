"""Validation overlays: the slice, the colours, the panel, and the handler's TensorBoard images (0 writes none)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from brats_cggm.brats.validation_images import (
    GAP,
    IMAGE_TAG,
    REGION_COLOURS,
    ValidationImagesHandler,
    overlay_slice,
    tumour_slice,
    validation_panel,
)
from tests.helpers.bundle_runs import train_tiny_run

SHAPE = (6, 5, 4)  # X, Y, Z


def _case() -> dict[str, torch.Tensor]:
    image = torch.ones((4, *SHAPE))
    image[0, 1:5, 1:4] = 2.0  # the head of the FLAIR channel brighter inside
    label = torch.zeros((3, *SHAPE))
    label[1, 1:3, 1:3, 2] = 1  # WT on slice 2 only
    label[0, 1, 1, 2] = 1  # TC
    pred = torch.zeros((3, *SHAPE))
    pred[1, 4, 3, 2] = 1
    return {"image": image, "label": label, "pred": pred}


def _images(log_dir: Path) -> dict[str, list]:
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    return {tag: events.Images(tag) for tag in events.Tags()["images"]}


def test_tumour_slice_is_the_one_with_most_tumour():
    regions = np.zeros((3, *SHAPE))
    regions[1, :2, :2, 1] = 1
    regions[1, :3, :3, 3] = 1
    assert tumour_slice(regions) == 3
    assert tumour_slice(np.zeros((3, *SHAPE))) == SHAPE[2] // 2


def test_overlay_colours_the_regions_where_they_are():
    image = np.full(SHAPE[:2], 5.0)
    regions = np.zeros((3, *SHAPE[:2]))
    regions[1, 0, 0] = 1  # WT at x=0, y=0: bottom left (rows run from the largest y)
    regions[1, 5, 4] = regions[0, 5, 4] = regions[2, 5, 4] = 1  # ET at x=5, y=4: top right
    rgb = overlay_slice(image, regions)
    assert rgb.shape == (SHAPE[1], SHAPE[0], 3) and rgb.dtype == np.uint8
    wt, et = np.asarray(REGION_COLOURS["wt"]), np.asarray(REGION_COLOURS["et"])
    assert np.argmax(rgb[-1, 0]) == np.argmax(wt) == 1  # green
    assert np.argmax(rgb[0, -1]) == np.argmax(et) == 0  # red painted last
    assert (rgb[2, 2] == rgb[2, 2, 0]).all()  # grey elsewhere


def test_panel_has_labels_left_and_prediction_right():
    case = _case()
    panel = validation_panel(case["image"], case["label"], case["pred"], channel=0)
    assert panel.shape == (SHAPE[1], 2 * SHAPE[0] + GAP, 3)
    left, right = panel[:, : SHAPE[0]], panel[:, SHAPE[0] + GAP :]
    coloured = lambda half: int((half.max(-1) != half.min(-1)).sum())  # noqa: E731
    assert coloured(left) == 4 and coloured(right) == 1  # 2x2 WT box; one predicted voxel


@pytest.mark.parametrize("count", [0, 2])
def test_handler_draws_the_first_cases_of_each_validation(count: int, tmp_path: Path):
    writer = SummaryWriter(str(tmp_path))
    evaluator = Engine(lambda engine, batch: [_case() for _ in range(batch)])
    ValidationImagesHandler(writer, count=count).attach(evaluator)
    for epoch in (1, 2):
        evaluator.state.epoch = epoch - 1
        evaluator.run([1, 2], max_epochs=epoch)  # three cases a validation
    writer.close()
    images = _images(tmp_path)
    assert sorted(images) == [f"{IMAGE_TAG}/{i}" for i in range(count)]
    for events in images.values():
        assert [e.step for e in events] == [1, 2]
        assert (events[0].height, events[0].width) == (SHAPE[1], 2 * SHAPE[0] + GAP)


def test_handler_refuses_a_negative_count():
    with pytest.raises(ValueError, match="0 or more"):
        ValidationImagesHandler(None, count=-1)


def test_training_run_writes_overlays_and_zero_turns_them_off(
    tiny_run_dir: Path, phantom_dataset: Path, tmp_path: Path
):
    images = _images(tiny_run_dir)  # the default: 2 cases (the tiny split validates one)
    assert list(images) == [f"{IMAGE_TAG}/0"]
    event = images[f"{IMAGE_TAG}/0"][0]
    assert event.step == 1 and 0 < event.height <= 32 and (event.width - GAP) == 2 * ((event.width - GAP) // 2)

    run = train_tiny_run(tmp_path / "run", phantom_dataset, tensorboard_images=0)
    assert _images(run) == {}
