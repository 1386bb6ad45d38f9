"""``prepare_output_dir``: a previous run is refused, resumed or (with overwrite) removed; other files stay.

A dead run's leftovers (no weights, no metrics) do not block its retry; a live run's lock refuses a second one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from brats_cggm.engine.output_dir import (
    ABORTED_DIR,
    LOCK_FILE,
    OutputDirInUseError,
    OutputDirLock,
    RunExistsError,
    find_run_files,
    launched_this_process,
    prepare_output_dir,
)


def _previous_run(root: Path) -> Path:
    (root / "models").mkdir(parents=True)
    for name in ("models/checkpoint.pt", "models/model.pt", "metrics.json", "events.out.tfevents.1.host"):
        (root / name).write_bytes(b"x")
    (root / "models" / ".checkpoint.pt.0123456789ab.tmp").touch()
    return root


def test_missing_empty_or_foreign_folders_are_fine(tmp_path: Path):
    assert prepare_output_dir(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    prepare_output_dir(tmp_path / "empty")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("mine")
    prepare_output_dir(tmp_path / "notes")


def test_a_previous_run_is_refused_resumed_or_overwritten(tmp_path: Path):
    out = _previous_run(tmp_path / "out")
    (out / "README.txt").write_text("mine")
    with pytest.raises(RunExistsError, match=r"--resume true.*--output_dir.*--overwrite true"):
        prepare_output_dir(out)
    with pytest.raises(RunExistsError):
        prepare_output_dir(out, resume="false", overwrite="false")
    assert len(find_run_files(out)) == 5
    for resume in (True, "true", str(out / "models" / "checkpoint.pt")):
        prepare_output_dir(out, resume=resume)
        assert len(find_run_files(out)) == 5
    prepare_output_dir(out, overwrite="true")
    assert find_run_files(out) == [] and (out / "README.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="overwrite='maybe'"):
        prepare_output_dir(out, overwrite="maybe")


def _dead_run(root: Path) -> Path:
    """What a run that died at its first draw leaves: configs, an event file, a killed write's temporary."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text("{}")
    (root / "events.out.tfevents.1.host.1.0").write_bytes(b"dead run")
    (root / "models" / ".checkpoint.pt.0123456789ab.tmp").write_bytes(b"x")
    return root


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_that_died_before_its_first_checkpoint_does_not_block_its_retry(tmp_path: Path, resume: bool):
    out = _dead_run(tmp_path / "out")
    assert prepare_output_dir(out, resume=resume) == out
    # nothing of the dead run is left where the new run writes: its steps cannot mix with the new run's
    assert find_run_files(out) == []
    moved = list((out / ABORTED_DIR).glob("*/events.out.tfevents.1.host.1.0"))
    assert len(moved) == 1 and moved[0].read_bytes() == b"dead run"
    assert (out / "configs" / "inference.json").read_text() == "{}"  # rewritten by the new run
    # a second dead run of the same folder is set aside beside the first, not over it
    (out / "events.out.tfevents.2.host.1.0").write_bytes(b"second")
    os.utime(out / "events.out.tfevents.2.host.1.0", (moved[0].stat().st_mtime + 5,) * 2)
    prepare_output_dir(out)
    assert len(list((out / ABORTED_DIR).iterdir())) == 2
    # --overwrite asks for the previous run's files to go: a dead run's too (a resumed run keeps them aside)
    out = _dead_run(tmp_path / "overwritten")
    prepare_output_dir(out, resume=resume, overwrite=True)
    assert find_run_files(out) == [] and (out / ABORTED_DIR).exists() is resume


def test_weights_or_metrics_alone_make_a_previous_run(tmp_path: Path):
    for name in ("models/model.pt", "metrics.json"):
        out = _dead_run(tmp_path / name.replace("/", "_"))
        (out / name).write_bytes(b"x")
        with pytest.raises(RunExistsError, match=name):
            prepare_output_dir(out)
        assert (out / "events.out.tfevents.1.host.1.0").exists()  # a refusal changes nothing
    out = _dead_run(tmp_path / "resumed")
    (out / "models" / "checkpoint.pt").write_bytes(b"x")
    prepare_output_dir(out, resume=True)  # continues the run: its event file stays with it
    assert (out / "events.out.tfevents.1.host.1.0").exists() and not (out / ABORTED_DIR).exists()


# another run, as far as the lock goes: OutputDirLock's file through core.locks alone (no torch: starts fast)
_HOLDER = """
import sys
from brats_cggm.core.locks import FileLock
FileLock(sys.argv[1]).acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_a_second_run_into_the_folder_of_a_live_one_is_refused_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    out = _previous_run(tmp_path / "out")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(out / LOCK_FILE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(find_run_files(out))
        for resume, overwrite in ((True, False), (False, True), (False, False)):
            with pytest.raises(OutputDirInUseError, match=rf"output_dir {out} is in use by pid {holder.pid} on host"):
                prepare_output_dir(out, resume=resume, overwrite=overwrite, lock=OutputDirLock(out))
        assert sorted(find_run_files(out)) == before  # not even --overwrite touched the live run's files
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    # the holder died without releasing: its lock file is stale, taken over with a line naming it
    lock = OutputDirLock(out)
    with caplog.at_level(logging.WARNING):
        prepare_output_dir(out, overwrite=True, lock=lock)
    assert f"stale lock of pid {holder.pid}" in caplog.text
    assert lock.held and find_run_files(out) == []  # the lock file is no run file
    lock.release()
    assert not (out / LOCK_FILE).exists()


def test_a_refused_run_releases_the_lock_and_leaves_nothing(tmp_path: Path):
    out = _previous_run(tmp_path / "out")
    before = sorted(p for p in out.rglob("*"))
    lock = OutputDirLock(out)
    with pytest.raises(RunExistsError):
        prepare_output_dir(out, lock=lock)
    assert not lock.held and sorted(p for p in out.rglob("*")) == before
    # the refused run's process goes on to the right command: the folder is free
    prepare_output_dir(out, resume=True, lock=lock)
    assert lock.held and (out / LOCK_FILE).exists()
    lock.release()
    assert not (out / LOCK_FILE).exists()


# a run started by the process holding the lock: prepare_output_dir in a child, on two folders the parent holds
_LAUNCHED = """
import sys
from pathlib import Path
from brats_cggm.engine.output_dir import OutputDirLock, RunExistsError, prepare_output_dir
for folder in sys.argv[1:]:
    try:
        prepare_output_dir(folder, lock=OutputDirLock(folder))
        print("went on", flush=True)
    except RunExistsError:
        print("refused", flush=True)
"""


def test_a_run_launched_by_the_lock_holder_goes_on_under_its_lock(tmp_path: Path):
    # the MONAI Model Zoo's distributed test: its process initialises the config (takes the lock, its summary
    # writer writes an event file), then runs the same config under torchrun in a child, and waits for it
    harness = tmp_path / "harness"
    harness.mkdir()
    (harness / "events.out.tfevents.1.host.1.0").write_bytes(b"x")
    previous = _previous_run(tmp_path / "previous")
    locks = [OutputDirLock(harness).acquire(), OutputDirLock(previous).acquire()]
    try:
        child = subprocess.run(
            [sys.executable, "-c", _LAUNCHED, str(harness), str(previous)], capture_output=True, text=True, timeout=300
        )
        assert child.stdout.split() == ["went", "on", "refused"], child.stderr
        # the harness's event file set aside as a dead run's, the lock still the harness's
        assert not (harness / "events.out.tfevents.1.host.1.0").exists() and (harness / ABORTED_DIR).is_dir()
        assert all(lock.held for lock in locks)
        assert json.loads((harness / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        for lock in locks:
            lock.release()


def test_only_the_processes_that_launched_this_one_count():
    host = socket.gethostname()
    assert launched_this_process({"host": host, "pid": os.getppid()})
    assert not launched_this_process({"host": host, "pid": os.getpid()})  # itself: OutputDirLock's own business
    assert not launched_this_process({"host": host + "-other", "pid": os.getppid()})
    assert not launched_this_process({"host": host})
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:  # a live process that did not launch this one (here: one this process launched)
        assert not launched_this_process({"host": host, "pid": other.pid})
    finally:
        other.kill()
        other.wait()
