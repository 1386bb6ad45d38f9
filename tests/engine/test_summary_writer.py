"""DeferredSummaryWriter: building it writes nothing; its first event or open() creates the event file."""

from __future__ import annotations

from brats_cggm.core.events import read_scalars
from brats_cggm.engine.summary_writer import DeferredSummaryWriter


def test_building_writes_nothing_and_the_first_event_creates_the_file(tmp_path):
    log_dir = tmp_path / "run"
    writer = DeferredSummaryWriter(log_dir=str(log_dir))
    assert not log_dir.exists()
    writer.close()  # closing a writer that never wrote is a no-op
    assert not log_dir.exists()
    writer.add_scalar("train/loss", 0.5, 1)
    writer.close()
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1
    assert read_scalars(log_dir)["train/loss"] == [(1, 0.5)]


def test_open_creates_the_event_file_at_once(tmp_path):
    writer = DeferredSummaryWriter(log_dir=str(tmp_path / "run"))
    writer.open()
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 1
    writer.close()
