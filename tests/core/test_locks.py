"""Lock files that name their holder: exclusion across processes, stale locks taken over, release deletes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from brats_cggm.core.locks import FileLock, LockHeldError

HOLD = textwrap.dedent(
    """
    import sys, time
    from brats_cggm.core.locks import FileLock
    lock = FileLock(sys.argv[1], "test").acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


def _holding_process(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_acquire_writes_the_holder_and_release_deletes_the_file(tmp_path):
    path = tmp_path / ".lock"
    with FileLock(path, "output_dir x") as lock:
        assert lock.held
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"]
    assert not path.exists() and not lock.held


def test_a_live_holder_in_another_process_is_named(tmp_path):
    path = tmp_path / ".lock"
    proc = _holding_process(path)
    try:
        with pytest.raises(LockHeldError, match=rf"output_dir x is in use by pid {proc.pid} on host "):
            FileLock(path, "output_dir x").acquire()
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holders_lock_is_stale_and_taken_over(tmp_path, caplog):
    path = tmp_path / ".lock"
    proc = _holding_process(path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path.exists()  # the file stays; the kernel lock died with the process
    with FileLock(path) as lock:
        assert lock.held and json.loads(path.read_text())["pid"] == os.getpid()
    assert f"stale lock of pid {proc.pid}" in caplog.text


def test_a_waiting_acquire_gets_the_lock_once_released(tmp_path):
    path = tmp_path / ".lock"
    first = FileLock(path).acquire()
    threading.Timer(0.3, first.release).start()
    second = FileLock(path).acquire(timeout_s=10)
    assert second.held and json.loads(path.read_text())["pid"] == os.getpid()
    second.release()


def test_a_wait_that_times_out_refuses(tmp_path):
    path = tmp_path / ".lock"
    with FileLock(path):
        with pytest.raises(LockHeldError):
            FileLock(path).acquire(timeout_s=0.2)
