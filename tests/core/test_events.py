"""``brats_cggm.core.events``: the one reader of TensorBoard scalars."""

from __future__ import annotations

from pathlib import Path

import pytest

from brats_cggm.core.events import read_scalars


def test_every_scalar_of_every_event_file_in_step_order(tmp_path: Path) -> None:
    tensorboard = pytest.importorskip("torch.utils.tensorboard")
    assert read_scalars(tmp_path) == {}  # no event file: nothing
    for steps in ((3, 1), (2,)):  # two writers: two event files, steps out of order
        writer = tensorboard.SummaryWriter(log_dir=str(tmp_path))
        for step in steps:
            writer.add_scalar("train/loss", step / 10, step)
        writer.add_scalar("val/dice", 0.5, steps[0])
        writer.close()
    scalars = read_scalars(tmp_path)
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3]
    assert scalars["train/loss"][0][1] == pytest.approx(0.1)
    assert sorted(scalars["val/dice"]) == [(2, 0.5), (3, 0.5)]
    many = tensorboard.SummaryWriter(log_dir=str(tmp_path / "many"))
    for step in range(12000):  # more than TensorBoard's default reservoir of 10000: none sampled away
        many.add_scalar("x", 1.0, step)
    many.close()
    assert len(read_scalars(tmp_path / "many")["x"]) == 12000
