"""What a report takes from a case's images, and the report built from them
(``brats_cggm.brats.reporting.report_inputs``)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_cggm.brats.reporting.overlay import overlay_size
from brats_cggm.brats.reporting.report_inputs import (
    build_report,
    inputs_from_files,
    model_description,
    read_sequences,
    report_inputs,
)

SHAPE = (12, 10, 8)


def _image(data: np.ndarray, spacing=(1.2, 1.2, 3.0)) -> nib.Nifti1Image:
    return nib.Nifti1Image(data.astype(np.float32), np.diag([*spacing, 1.0]))


def test_sequences_of_files_and_of_a_4d_file(tmp_path: Path):
    rng = np.random.default_rng(0)
    flair, t2 = rng.uniform(1, 2, SHAPE), rng.uniform(3, 4, SHAPE)
    images = {"f.nii.gz": _image(flair)}
    nib.save(_image(t2), str(tmp_path / "t2.nii.gz"))  # not among the images read: read from disk
    found = read_sequences(images, ["flair", "t1ce", "t2"], ["f.nii.gz", None, str(tmp_path / "t2.nii.gz")])
    assert list(found) == ["flair", "t2"] and np.allclose(found["t2"], t2, atol=1e-6)
    stack = _image(np.stack([flair, t2], axis=-1))
    found = read_sequences({"s.nii.gz": stack}, ["t2", "flair"], "s.nii.gz", channel_order=[1, 0])
    assert np.allclose(found["t2"], t2, atol=1e-6) and np.allclose(found["flair"], flair, atol=1e-6)


def test_inputs_and_report_of_a_case():
    pytest.importorskip("PIL")
    flair = np.random.default_rng(0).uniform(1, 2, SHAPE)
    inputs = report_inputs(_image(flair), {"flair": flair, "t2": flair}, (1.0, 1.0, 1.0), "RAS")
    assert inputs.grid["spacing_mm"] == pytest.approx([1.2, 1.2, 3.0]) and inputs.grid["resampled"] is True
    assert list(inputs.intensities) == ["flair", "t2"] and list(inputs.display) == ["flair"]
    labels = np.zeros(SHAPE, np.uint8)
    labels[4:7, 4:7, 3:5] = 2
    report = build_report(labels, inputs, "brats2021", "P01", "P01.png", ["t1ce"], "drop", {"bundle": "b"})
    assert report.fields["regions"]["WT"]["volume_ml"] == pytest.approx(18 * 1.2 * 1.2 * 3.0 / 1000)
    assert report.fields["overlay"] == "P01.png" and report.fields["model_details"] == {"bundle": "b"}
    import PIL.Image

    assert PIL.Image.open(io.BytesIO(report.png)).size == overlay_size()


def test_model_description_hashes_the_weights(tmp_path: Path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    described = model_description(weights, tmp_path, "cfg.json", {"unit": "mm3"})
    assert described == {
        "bundle": str(tmp_path),
        "weights": str(weights),
        "weights_sha256": hashlib.sha256(b"weights").hexdigest(),
        "config": "cfg.json",
        "postprocessing": {"unit": "mm3"},
    }
    assert model_description(None)["weights_sha256"] is None


def test_inputs_read_again_from_a_records_files(tmp_path: Path):
    rng = np.random.default_rng(0)
    flair, t2 = rng.uniform(1, 2, SHAPE), rng.uniform(30, 40, SHAPE)
    for name, data in (("f", flair), ("t2", t2)):
        nib.save(_image(data), str(tmp_path / f"{name}.nii.gz"))
    record = {"inputs": [str(tmp_path / "f.nii.gz"), str(tmp_path / "t2.nii.gz")], "modalities_missing": ["t1ce"]}
    taken = inputs_from_files(tmp_path / "f.nii.gz", record, ["flair", "t1ce", "t2"], None, (1.2, 1.2, 3.0))
    assert list(taken.intensities) == ["flair", "t2"] and taken.intensities["t2"]["min"] >= 30
    assert list(taken.display) == ["flair"] and taken.grid["resampled"] is False
    nib.save(_image(np.stack([t2, flair], axis=-1)), str(tmp_path / "stack.nii.gz"))
    record = {"inputs": [str(tmp_path / "stack.nii.gz")], "modalities_missing": []}
    taken = inputs_from_files(tmp_path / "stack.nii.gz", record, ["flair", "t2"], [1, 0])
    assert taken.intensities["t2"]["min"] >= 30 and taken.intensities["flair"]["max"] <= 2
