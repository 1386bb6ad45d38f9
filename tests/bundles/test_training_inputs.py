"""Bad training and inference inputs through the BraTS bundle: each fails before training starts, naming the file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow
from monai.bundle import run as bundle_run

from tests.helpers.bundle_runs import error_messages

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "brats_cggm" / "configs"
TINY = {
    "max_epochs": 1,
    "val_interval": 1,
    "patch_size": [16, 16, 16],
    "network_def#features": [4, 8, 16],
    "num_samples": 1,
    "sw_batch_size": 2,
    "device": "cpu",
}

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file")


@pytest.fixture
def brats_copy(phantom_dataset: Path, tmp_path: Path) -> Path:
    """A writable copy of the shared 4-case phantom set (BraTS 2021 names and labels)."""
    return Path(shutil.copytree(phantom_dataset, tmp_path / "brats"))


def _rewrite(path: Path, change) -> None:
    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj).copy()
    data = change(data)
    nib.save(nib.Nifti1Image(data, image.affine), str(path))


def _train_in_process(dataset_dir: Path, output_dir: Path, **overrides) -> None:
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.yaml"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        **{**TINY, "dataset_dir": str(dataset_dir), "output_dir": str(output_dir), **overrides},
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def _fails_before_training(dataset_dir: Path, output_dir: Path, **overrides) -> str:
    with pytest.raises(Exception) as excinfo:
        _train_in_process(dataset_dir, output_dir, **overrides)
    assert not (output_dir / "models").exists(), "no iteration may run (and no checkpoint be written)"
    return error_messages(excinfo.value)


@pytest.mark.parametrize(
    ("relabel", "expected"),
    [
        # BraTS 2021 names, BraTS 2023 labels: ET (4) written as 3
        (lambda seg: np.where(seg == 4, 3, seg), "unexpected label values [3] for label convention 'brats2021'"),
        (lambda seg: np.where(seg == 2, 5, seg), "unexpected label values [5] for label convention 'brats2021'"),
    ],
    ids=["brats2023_labels", "label_5"],
)
def test_training_rejects_labels_outside_the_convention(brats_copy: Path, tmp_path: Path, relabel, expected: str):
    # The last case: the check must cover every case (training and validation), not the first one only.
    seg = brats_copy / "BraTS2021_00003" / "BraTS2021_00003_seg.nii.gz"
    _rewrite(seg, relabel)
    messages = _fails_before_training(brats_copy, tmp_path / "out")
    assert f"{seg}: {expected}" in messages
    fit = "fit label convention 'brats2023' or 'msd'" if "[3]" in expected else "fit no known label convention"
    assert fit in messages


def test_training_rejects_a_nan_voxel(brats_copy: Path, tmp_path: Path):
    t1ce = brats_copy / "BraTS2021_00002" / "BraTS2021_00002_t1ce.nii.gz"

    def put_nan(data: np.ndarray) -> np.ndarray:
        data = data.astype(np.float32)
        data[16, 16, 16] = np.nan
        return data

    _rewrite(t1ce, put_nan)
    assert f"{t1ce}: contains NaN or infinite values" in _fails_before_training(brats_copy, tmp_path / "out")


def test_training_rejects_a_nan_affine(brats_copy: Path, tmp_path: Path):
    case = brats_copy / "BraTS2021_00001"
    for f in sorted(case.iterdir()):  # every file of the case alike: no grid mismatch to give it away
        image = nib.load(str(f))
        affine = image.affine.copy()
        affine[0, 3] = np.nan
        nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), affine), str(f))
    messages = _fails_before_training(brats_copy, tmp_path / "out")
    assert "affine (voxel-to-world matrix) has NaN or infinite entries" in messages
    assert str(case / "BraTS2021_00001_flair.nii.gz") in messages


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def test_truncated_file_stops_training_with_its_name(brats_copy: Path, tmp_path: Path):
    bad = brats_copy / "BraTS2021_00001" / "BraTS2021_00001_t1.nii.gz"
    _truncate(bad)
    assert f"{bad}: truncated or corrupt" in _fails_before_training(brats_copy, tmp_path / "out")


@pytest.mark.slow
def test_truncated_file_exits_1_through_the_bundle_command(tmp_path: Path):
    """``python -m monai.bundle run``: exit status 1, the file named; no abort (SIGABRT, 134) at exit.

    The abort came from MONAI's cache thread still running the next cases' transforms when the error
    ended the process: several good cases follow the bad one here.
    """
    from brats_cggm.brats.phantoms.geometric import write_phantom_dataset

    dataset = tmp_path / "brats"
    write_phantom_dataset(dataset, n=6, shape=(32, 32, 32), seed=0)
    bad = dataset / "BraTS2021_00001" / "BraTS2021_00001_t1.nii.gz"
    _truncate(bad)
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "train.yaml")]
    command += ["--dataset_dir", str(dataset), "--output_dir", str(tmp_path / "out")]
    for key, value in TINY.items():
        command += [f"--{key}", str(value).replace(" ", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"{bad}: truncated or corrupt" in done.stderr
    assert not (tmp_path / "out" / "models").exists()


def _to_brats2023_names(root: Path) -> None:
    names = {"flair": "t2f", "t1ce": "t1c", "t1": "t1n", "t2": "t2w", "seg": "seg"}
    for case in sorted(root.iterdir()):
        new_id = case.name.replace("BraTS2021_", "BraTS-GLI-") + "-000"
        for old, new in names.items():
            (case / f"{case.name}_{old}.nii.gz").rename(case / f"{new_id}-{new}.nii.gz")
        case.rename(root / new_id)


def test_training_reads_brats2023_names_and_labels(brats_copy: Path, tmp_path: Path):
    _to_brats2023_names(brats_copy)
    segs = sorted(brats_copy.glob("*/*-seg.nii.gz"))
    for seg in segs:
        _rewrite(seg, lambda s: np.where(s == 4, 3, s))
    # patterns: null (the default) detects the names, and the labels follow them
    _train_in_process(brats_copy, tmp_path / "detected")
    assert (tmp_path / "detected" / "models" / "checkpoint.pt").is_file()
    # explicit patterns, BraTS 2021 labels left in one file: named, with the convention they fit
    _rewrite(segs[0], lambda s: np.where(s == 3, 4, s))
    messages = _fails_before_training(brats_copy, tmp_path / "explicit", patterns="brats2023")
    assert f"{segs[0]}: unexpected label values [4] for label convention 'brats2023'" in messages
    assert "fit label convention 'brats2021'" in messages


def test_inference_bundle_rejects_a_nan_case(phantom_dataset: Path, tiny_run_dir: Path, tmp_path: Path):
    cases = tmp_path / "cases"
    for case in ("BraTS2021_00000", "BraTS2021_00001"):
        shutil.copytree(phantom_dataset / case, cases / case)
    flair = cases / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz"
    _rewrite(flair, lambda a: np.where(a > 0, np.nan, a).astype(np.float32))
    out = tmp_path / "out"
    with pytest.raises(Exception) as excinfo:
        bundle_run(
            config_file=[str(CONFIGS / "inference.yaml"), str(tiny_run_dir / "configs" / "inference.json")],
            meta_file=str(CONFIGS / "metadata.json"),
            logging_file=str(CONFIGS / "logging.conf"),
            bundle_root=str(tiny_run_dir),
            dataset_dir=str(cases),
            output_dir=str(out),
            device="cpu",
        )
    assert f"{flair}: contains NaN or infinite values" in error_messages(excinfo.value)
    assert not (out / "BraTS2021_00001.nii.gz").exists()


def test_infer_cli_names_a_nan_affine(phantom_dataset: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    from brats_cggm.cli.infer import main as infer_main

    case = Path(shutil.copytree(phantom_dataset / "BraTS2021_00000", tmp_path / "in" / "BraTS2021_00000"))
    t2 = case / "BraTS2021_00000_t2.nii.gz"
    image = nib.load(str(t2))
    affine = image.affine.copy()
    affine[1, 3] = np.nan
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), affine), str(t2))
    out = tmp_path / "out"
    assert infer_main(["--input", str(case), "--bundle", str(tiny_run_dir), "--output-dir", str(out)]) == 1
    assert f"error: BraTS2021_00000: {t2}: affine (voxel-to-world matrix) has NaN" in capsys.readouterr().err
    assert not out.exists()
