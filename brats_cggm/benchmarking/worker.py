"""The entry of the benchmark's worker subprocesses: ``python -m brats_cggm.benchmarking --worker KIND PAYLOAD``."""

from __future__ import annotations

import json

from brats_cggm.benchmarking.config import StepSpec

__all__ = ["worker_main"]


def worker_main(kind: str, payload_json: str) -> int:
    """A worker subprocess: run the worker ``kind`` on its JSON payload and print its result as one JSON line.

    Started by :func:`~brats_cggm.benchmarking.memory.run_worker` as ``python -m brats_cggm.benchmarking
    --worker KIND PAYLOAD``.

    Args:
        kind: ``"memory"``, ``"inference"`` or ``"scale_epoch"``.
        payload_json: the worker's arguments, a JSON object.

    Returns:
        0 (a failing worker raises, and the interpreter exits with 1).

    Raises:
        ValueError: an unknown ``kind``.
    """
    from brats_cggm.benchmarking.memory import memory_worker
    from brats_cggm.benchmarking.sections.inference import inference_worker

    payload = json.loads(payload_json)
    if kind == "memory":
        result = memory_worker(StepSpec.from_json(payload["spec"]), int(payload["steps"]))
    elif kind == "inference":
        result = inference_worker(payload)
    elif kind == "scale_epoch":
        from brats_cggm.benchmarking.sections.dataset_scale import scale_epoch_worker

        result = scale_epoch_worker(payload)
    else:
        raise ValueError(f"unknown worker {kind!r}")
    print(json.dumps(result), flush=True)
    return 0
