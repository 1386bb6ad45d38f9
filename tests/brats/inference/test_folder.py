"""The stages of one case of a folder (``brats_cggm.brats.inference.folder``); the whole command is tested in
``tests/cli/test_infer.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brats_cggm.brats.inference.case_io import CaseInput
from brats_cggm.brats.inference.folder import CaseStages, OutputOptions


class _StageRecorder:
    """A segmenter that records which of its stages ran, with its preprocessing on ``device``."""

    def __init__(self, device: str | None) -> None:
        self.preprocess_device = None if device is None else torch.device(device)  # only its type is read
        self.calls: list[str] = []

    def check(self, case, times=None):
        self.calls.append("check")
        return {"flair": "image"}

    def case_record(self, case, target):
        return {"modalities_used": ["flair"], "modalities_missing": []}

    def prepare(self, case, images):
        self.calls.append(f"prepare {images['flair']}")
        return {"image": "item"}

    def predict(self, case, data):
        self.calls.append(f"predict {data['image']}")
        return {"pred": "logits"}


@pytest.mark.parametrize(
    ("device", "detach", "in_load"),
    [("cuda", True, False), ("cuda", False, True), ("cpu", True, True), (None, True, True)],
)
def test_workers_never_preprocess_on_a_gpu(device, detach, in_load, tmp_path: Path):
    segmenter = _StageRecorder(device)
    stages = CaseStages(segmenter, OutputOptions(tmp_path), detach=detach)  # type: ignore[arg-type]
    case = CaseInput("case", [str(tmp_path / "flair.nii.gz")])
    loaded = stages.load(case)
    assert segmenter.calls == (["check", "prepare image"] if in_load else ["check"])
    stages.predict(loaded)
    assert segmenter.calls == ["check", "prepare image", "predict item"]
    assert loaded.data == {"pred": "logits"} and loaded.images is None and "preprocess" in loaded.times
