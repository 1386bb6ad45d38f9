from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from brats_cggm.brats.data.discovery import discover_dataset
from brats_cggm.brats.phantoms import anatomical as anatomical_phantoms
from brats_cggm.brats.phantoms.anatomical import (
    brats_grid_affine,
    brats_grid_shape,
    generate_anatomical_case,
    load_mni152_anatomy,
    write_anatomical_phantom_dataset,
)
from brats_cggm.brats.phantoms.geometric import MODALITIES, brats_affine

pytest.importorskip("nilearn", reason="the anatomy extra (nilearn) is needed")

COARSE = 5.0


def test_grid() -> None:
    assert brats_grid_shape(1) == (240, 240, 155)
    assert brats_grid_shape(2) == (120, 120, 78)
    assert brats_grid_shape((3, 3, 3)) == (80, 80, 52)
    np.testing.assert_array_equal(brats_grid_affine(1), brats_affine((240, 240, 155)))
    # At 2 mm voxel (0, 0, 0) is centred between 1 mm voxels 0 and 1: world (-0.5, 238.5, 0.5).
    affine = brats_grid_affine(2)
    np.testing.assert_allclose(affine @ [0, 0, 0, 1], [-0.5, 238.5, 0.5, 1])
    np.testing.assert_allclose(affine @ [1, 1, 1, 1], [-2.5, 236.5, 2.5, 1])
    for bad in (0.5, (1, 1), (1, 1, float("nan")), "2"):
        with pytest.raises(ValueError, match="spacing"):
            brats_grid_shape(bad)


def test_anatomy_on_the_grid() -> None:
    anatomy = load_mni152_anatomy([4, 4, 4])
    assert load_mni152_anatomy(4.0) is anatomy
    assert {k: v.shape for k, v in anatomy.items()} == {k: (60, 60, 39) for k in ("wm", "gm", "csf", "brain")}
    total = anatomy["wm"] + anatomy["gm"] + anatomy["csf"]
    np.testing.assert_allclose(total, anatomy["brain"], atol=1e-5)
    assert not anatomy["wm"].flags.writeable
    # The brain sits inside the field of view (nothing cut at the edges) and is about 1.3-1.9 litres.
    brain = anatomy["brain"]
    assert brain[0].max() == brain[-1].max() == brain[:, 0].max() == brain[:, -1].max() == 0
    assert 1.3e6 < brain.sum() * 64 < 1.9e6


_OFFLINE_CASE = """
import socket
import urllib.request


def refuse(*args, **kwargs):
    raise RuntimeError("network access attempted")


socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
urllib.request.urlopen = refuse
from brats_cggm.brats.phantoms.anatomical import generate_anatomical_case

print(int(generate_anatomical_case(0, spacing=6.0)["seg"].any()))
"""


def test_no_download(tmp_path) -> None:
    """nilearn is imported and the template loaded with every socket refused and an empty data folder."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[3]), os.environ.get("PYTHONPATH")])
        ),
        "HOME": str(tmp_path),
        "NILEARN_DATA": str(tmp_path / "nilearn_data"),
        "NILEARN_SHARED_DATA": str(tmp_path / "nilearn_shared"),
    }
    result = subprocess.run([sys.executable, "-c", _OFFLINE_CASE], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    assert not (tmp_path / "nilearn_data").exists() and not (tmp_path / "nilearn_shared").exists()


def test_missing_nilearn_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "nilearn", None)
    anatomical_phantoms._load_mni152_anatomy.cache_clear()
    with pytest.raises(ImportError, match=r"brats-cggm\[anatomy\]"):
        load_mni152_anatomy((6.0, 6.0, 6.0))
    with pytest.raises(ImportError, match=r"brats-cggm\[anatomy\]"):
        write_anatomical_phantom_dataset(tmp_path / "data", n=1, spacing=6)
    assert not (tmp_path / "data").exists()
    anatomical_phantoms._load_mni152_anatomy.cache_clear()


def test_case_content() -> None:
    case = generate_anatomical_case(3, spacing=COARSE)
    shape = brats_grid_shape(COARSE)
    assert set(case) == {*MODALITIES, "seg"}
    for modality in MODALITIES:
        assert case[modality].dtype == np.int16 and case[modality].shape == shape
    assert case["seg"].dtype == np.uint8 and case["seg"].shape == shape
    brain = case["flair"] > 0
    for modality in MODALITIES:
        assert np.array_equal(case[modality] > 0, brain)
    assert set(np.unique(case["seg"]).tolist()) <= {0, 1, 2, 4} and case["seg"].any()
    assert not case["seg"][~brain].any()


def test_deterministic() -> None:
    a, b = generate_anatomical_case(11, spacing=COARSE), generate_anatomical_case(11, spacing=COARSE)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes()
    c = generate_anatomical_case(12, spacing=COARSE)
    assert not np.array_equal(a["seg"], c["seg"]) and not np.array_equal(a["t1"], c["t1"])


def test_lesions_vary_stay_in_the_brain_and_are_sometimes_several() -> None:
    centroids, counts = [], []
    for seed in range(10):
        case = generate_anatomical_case(seed, spacing=4.0)
        tumour = case["seg"] > 0
        assert tumour.sum() > 20
        assert not (tumour & (case["t1ce"] == 0)).any()
        centroids.append(np.argwhere(tumour).mean(axis=0))
        counts.append(ndimage.label(tumour, structure=np.ones((3, 3, 3)))[1])
    assert np.ptp(np.asarray(centroids), axis=0).min() > 5  # voxels of 4 mm
    assert max(counts) >= 2 and min(counts) == 1


def test_mass_effect_displacement_by_hand() -> None:
    spacing = (1.0, 1.0, 1.0)
    shape = (41, 41, 41)
    x = np.broadcast_to(np.arange(41, dtype=np.float32)[:, None, None], shape)
    maps = {"x": np.array(x)}
    lesion = anatomical_phantoms._Lesion(
        centre=np.array([20.0, 20.0, 20.0]),
        rotation=np.eye(3),
        axis_ratios=np.ones(3),
        r_enhancing=6.0,
        r_necrosis=0.0,
        r_edema=8.0,
        r_push=5.0,
        profiles=(),
    )
    anatomical_phantoms._push_anatomy(maps, lesion, spacing)
    # Linear interpolation of a linear map is exact: the voxel at radius r shows the x of radius r0 on its ray.
    for r in (3.0, 6.0, 10.0, 16.0):
        r0 = np.cbrt(max(r**3 - 5.0**3 * math.exp(-((r / 12.5) ** 2)), 0.0))
        assert maps["x"][20 + int(r), 20, 20] == pytest.approx(20 + r0, abs=1e-3)
    # Fold-free: the source position never decreases along the ray (constant only in the pushing core, where
    # the tumour is pasted), and the far field does not move.
    ray = maps["x"][20:, 20, 20]
    assert np.all(np.diff(ray) >= 0) and np.all(np.diff(ray[4:]) > 0)
    assert maps["x"][0, 0, 0] == pytest.approx(0.0, abs=1e-3)


def _features(case: dict[str, np.ndarray], modalities: list[str]) -> tuple[np.ndarray, np.ndarray]:
    brain = case["flair"] > 0
    columns = []
    for modality in modalities:
        values = case[modality][brain].astype(np.float64)
        q25, q50, q75 = np.percentile(values, [25, 50, 75])
        columns.append((values - q50) / (q75 - q25))
    return np.stack(columns, axis=1), case["seg"][brain]


def test_no_single_modality_suffices() -> None:
    """A per-voxel Bayes classifier (Gaussian classes, QDA) fitted on two cases, Dice on two others (3 mm)."""
    qda = pytest.importorskip("sklearn.discriminant_analysis", reason="scikit-learn (the adapters extra) is needed")
    train = [generate_anatomical_case(seed, spacing=3.0) for seed in (0, 1)]
    test = [generate_anatomical_case(seed, spacing=3.0) for seed in (2, 3)]
    dice: dict[str, dict[str, float]] = {}
    for name, modalities in [*((m, [m]) for m in MODALITIES), ("all", list(MODALITIES))]:
        x_train, y_train = (np.concatenate(a) for a in zip(*(_features(c, modalities) for c in train), strict=True))
        x_test, y_test = (np.concatenate(a) for a in zip(*(_features(c, modalities) for c in test), strict=True))
        classifier = qda.QuadraticDiscriminantAnalysis(reg_param=1e-3).fit(x_train, y_train)
        predicted = classifier.predict(x_test)
        dice[name] = {}
        for region, label in (("NCR", 1), ("ED", 2), ("ET", 4)):
            p, t = predicted == label, y_test == label
            dice[name][region] = 2 * (p & t).sum() / (p.sum() + t.sum())
    print(dice)
    singles = list(MODALITIES)
    # Every single modality is clearly below the four together for some region.
    for modality in singles:
        assert max(dice["all"][r] - dice[modality][r] for r in dice["all"]) > 0.05, modality
    # Edema is best seen on FLAIR, enhancing tumour on T1ce; necrosis needs the four together.
    assert max(singles, key=lambda m: dice[m]["ED"]) == "flair"
    assert max(singles, key=lambda m: dice[m]["ET"]) == "t1ce"
    assert dice["all"]["NCR"] > max(dice[m]["NCR"] for m in singles) + 0.2


def test_write_dataset(tmp_path) -> None:
    out = tmp_path / "data"
    case_dirs = write_anatomical_phantom_dataset(out, n=2, seed=5, spacing=6)
    assert [d.name for d in case_dirs] == ["BraTS2021_00000", "BraTS2021_00001"]
    expected = generate_anatomical_case(6, spacing=6)
    for key in (*MODALITIES, "seg"):
        image = nib.load(case_dirs[1] / f"BraTS2021_00001_{key}.nii.gz")
        np.testing.assert_array_equal(image.affine, brats_grid_affine(6))
        assert image.get_data_dtype() == expected[key].dtype
        np.testing.assert_array_equal(np.asarray(image.dataobj), expected[key])
    # The project's data set reader accepts the folder, values and grids checked.
    assert len(discover_dataset(out, validate="full").items) == 2
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(FileExistsError, match="BraTS2021_00000 already exists"):
        write_anatomical_phantom_dataset(out, n=3, spacing=6)
    assert sorted(p.name for p in out.rglob("*")) == before
    with pytest.raises(ValueError, match="n must be a positive integer"):
        write_anatomical_phantom_dataset(out, n=0)
    with pytest.raises(ValueError, match="spacing"):
        write_anatomical_phantom_dataset(tmp_path / "other", n=1, spacing=0)
    assert not (tmp_path / "other").exists()
