"""The folder pipeline: stages overlap across cases, results come back in order, a failure stays with its case."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from monai.data import MetaTensor
from monai.utils import TraceKeys

from brats_cggm.brats.inference.pipeline import Finished, detach_item, run_pipeline, worker_threads


def _load(item: int) -> dict:
    if item == 3:
        raise ValueError("unreadable")
    if item == 5:
        return Finished(f"{item}: skipped")  # type: ignore[return-value]
    return {"item": item, "pid": os.getpid(), "threads": torch.get_num_threads()}


def _predict(loaded: dict) -> dict:
    if loaded["item"] == 4:
        raise RuntimeError("out of memory")
    return {**loaded, "predict_thread": threading.current_thread().name}


def _finish(predicted: dict) -> str:
    if predicted["item"] == 6:
        raise OSError("disk full")
    return f"{predicted['item']}: ok"


def _describe(item: int, exc: Exception) -> str:
    return f"{item}: {type(exc).__name__}: {exc}"


EXPECTED = [
    "0: ok",
    "1: ok",
    "2: ok",
    "3: ValueError: unreadable",
    "4: RuntimeError: out of memory",
    "5: skipped",
    "6: OSError: disk full",
    "7: ok",
]


@pytest.mark.parametrize("workers", [0, 2])
def test_results_in_order_and_failures_alone(workers: int):
    assert list(run_pipeline(range(8), _load, _predict, _finish, _describe, workers=workers)) == EXPECTED


def test_stages_run_where_they_should():
    seen: list[dict] = []

    def finish(predicted: dict) -> str:
        seen.append({**predicted, "finish_thread": threading.current_thread().name})
        return "ok"

    results = list(run_pipeline([0, 1, 2], _load, _predict, finish, _describe, workers=2, threads_per_worker=1))
    assert results == ["ok"] * 3
    assert all(s["pid"] != os.getpid() and s["threads"] == 1 for s in seen)  # loaded in workers, 1 thread each
    assert all(s["predict_thread"] == threading.main_thread().name for s in seen)  # the network: main thread
    assert all(s["finish_thread"] == "case-writer" for s in seen)


def test_workers_zero_is_the_plain_loop():
    order: list[str] = []

    def load(item: int) -> int:
        order.append(f"load {item}")
        return item

    def predict(item: int) -> int:
        order.append(f"predict {item}")
        return item

    def finish(item: int) -> int:
        order.append(f"finish {item}")
        return item

    assert list(run_pipeline([0, 1], load, predict, finish, _describe, workers=0)) == [0, 1]
    assert order == ["load 0", "predict 0", "finish 0", "load 1", "predict 1", "finish 1"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="workers"):
        list(run_pipeline([0], _load, _predict, _finish, _describe, workers=-1))
    with pytest.raises(ValueError, match="queue_size"):
        list(run_pipeline([0], _load, _predict, _finish, _describe, queue_size=0))


def test_worker_threads_share_the_cores_left():
    assert worker_threads(1, cpu_count=8) == 7
    assert worker_threads(2, cpu_count=8) == 3
    assert worker_threads(4, cpu_count=2) == 1


def test_detach_item_drops_the_chain_and_the_ids():
    image = MetaTensor(torch.zeros(1, 2, 2, 2))
    image.applied_operations = [{TraceKeys.ID: 123, TraceKeys.EXTRA_INFO: {"nested": [{TraceKeys.ID: 456}]}}]
    data = {"image": image, "chain": object()}
    out = detach_item(data, "chain")
    assert "chain" not in out and out["image"] is image
    op = image.applied_operations[0]
    assert op[TraceKeys.ID] == TraceKeys.NONE and op[TraceKeys.EXTRA_INFO]["nested"][0][TraceKeys.ID] == TraceKeys.NONE


def test_an_error_that_is_no_case_failure_stops_the_run():
    def finish(predicted: dict) -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(run_pipeline(range(6), _load, _predict, finish, _describe, workers=1, queue_size=1))
