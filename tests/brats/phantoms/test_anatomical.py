from __future__ import annotations

import hashlib
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


def _features(
    case: dict[str, np.ndarray], modalities: list[str], sigmas: tuple[float, ...] = (0.0,)
) -> tuple[np.ndarray, np.ndarray]:
    """Per brain voxel: each modality normalised by its brain median and IQR, as is (sigma 0) or locally averaged
    (Gaussian of ``sigma`` voxels, over the brain only)."""
    brain = case["flair"] > 0
    columns = []
    for modality in modalities:
        image = case[modality].astype(np.float64)
        q25, q50, q75 = np.percentile(image[brain], [25, 50, 75])
        for sigma in sigmas:
            if sigma > 0:
                weight = ndimage.gaussian_filter(brain.astype(np.float64), sigma)
                image_at = ndimage.gaussian_filter(image * brain, sigma) / np.maximum(weight, 1e-3)
            else:
                image_at = image
            columns.append((image_at[brain] - q50) / (q75 - q25))
    return np.stack(columns, axis=1), case["seg"][brain]


def _bayes_dice(
    train: list[dict[str, np.ndarray]],
    test: list[dict[str, np.ndarray]],
    feature_sets: dict[str, list[str]],
    sigmas: tuple[float, ...] = (0.0,),
    regions: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """Dice of a per-voxel Bayes classifier (Gaussian classes, QDA) fitted on ``train``, scored on ``test``.

    Args:
        train: cases to fit on.
        test: cases to score.
        feature_sets: row name -> modalities.
        sigmas: the features of each modality (:func:`_features`).
        regions: extra rows' masks: name -> boolean mask over the test cases' brain voxels (concatenated); the
            Dice of label 2 within that mask, reported as ``ED <name>``.

    Returns:
        Row name -> region (``NCR``, ``ED``, ``ET``, ``ED <name>``) -> Dice.
    """
    qda = pytest.importorskip("sklearn.discriminant_analysis", reason="scikit-learn (the adapters extra) is needed")
    dice: dict[str, dict[str, float]] = {}
    for name, modalities in feature_sets.items():
        fit = [_features(c, modalities, sigmas) for c in train]
        score = [_features(c, modalities, sigmas) for c in test]
        x_train, y_train = (np.concatenate(a) for a in zip(*fit, strict=True))
        x_test, y_test = (np.concatenate(a) for a in zip(*score, strict=True))
        classifier = qda.QuadraticDiscriminantAnalysis(reg_param=1e-3).fit(x_train, y_train)
        predicted = classifier.predict(x_test)
        masks = {"NCR": (1, None), "ED": (2, None), "ET": (4, None)}
        masks.update({f"ED {region}": (2, mask) for region, mask in (regions or {}).items()})
        dice[name] = {}
        for region, (label, mask) in masks.items():
            p, t = predicted == label, y_test == label
            if mask is not None:
                p, t = p & mask, t & mask
            dice[name][region] = 2 * (p & t).sum() / (p.sum() + t.sum())
    return dice


def test_no_single_modality_suffices() -> None:
    """A per-voxel Bayes classifier (Gaussian classes, QDA) fitted on two cases, Dice on two others (3 mm)."""
    train = [generate_anatomical_case(seed, spacing=3.0) for seed in (0, 1)]
    test = [generate_anatomical_case(seed, spacing=3.0) for seed in (2, 3)]
    dice = _bayes_dice(train, test, {**{m: [m] for m in MODALITIES}, "all": list(MODALITIES)})
    print(dice)
    singles = list(MODALITIES)
    # Every single modality is clearly below the four together for some region.
    for modality in singles:
        assert max(dice["all"][r] - dice[modality][r] for r in dice["all"]) > 0.05, modality
    # Edema is best seen on FLAIR, enhancing tumour on T1ce; necrosis needs the four together.
    assert max(singles, key=lambda m: dice[m]["ED"]) == "flair"
    assert max(singles, key=lambda m: dice[m]["ET"]) == "t1ce"
    assert dice["all"]["NCR"] > max(dice[m]["NCR"] for m in singles) + 0.2


# Recorded from the phantoms before variants existed (commit 38eee6c): the default variant must not change them.
_DEFAULT_CASE_SHA256_6MM = {
    0: "8bbef39040b7fc0a4b9dbfb6c7b1ffd05aaafed8c1f6d486d5579e112094999d",
    1: "f947493b84b164909827078970bf9a3a1e5cf6903f556c24d8514b97a7938753",
}


def _case_digest(case: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(case):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(case[key]).tobytes())
    return digest.hexdigest()


def test_default_variant_is_bit_identical() -> None:
    for seed, expected in _DEFAULT_CASE_SHA256_6MM.items():
        assert _case_digest(generate_anatomical_case(seed, spacing=6.0)) == expected
        assert _case_digest(generate_anatomical_case(seed, spacing=6.0, variant="default")) == expected
    with pytest.raises(ValueError, match="variant must be one of"):
        generate_anatomical_case(0, spacing=6.0, variant="mismatch")


def test_mismatch_variant_changes_only_the_images_near_the_edema() -> None:
    default = generate_anatomical_case(2, spacing=4.0)
    control = generate_anatomical_case(2, spacing=4.0, variant="t2-flair-mismatch")
    np.testing.assert_array_equal(control["seg"], default["seg"])
    assert _case_digest(control) == _case_digest(generate_anatomical_case(2, spacing=4.0, variant="t2-flair-mismatch"))
    # Far from the tumour (beyond the blur and misregistration) every image is the default's, up to the float32
    # rounding of the filters, which can move a voxel by one count.
    far = ndimage.distance_transform_edt(default["seg"] == 0, sampling=4.0) > 30.0
    for modality in MODALITIES:
        difference = np.abs(control[modality][far].astype(np.int32) - default[modality][far])
        assert difference.max() <= 1 and (difference == 0).mean() > 0.999, modality
    # The outer edema: no longer bright on FLAIR; on T2 brighter than the brain (grey matter and CSF included).
    core_distance = ndimage.distance_transform_edt(~np.isin(default["seg"], (1, 4)), sampling=4.0)
    outer = (default["seg"] == 2) & (core_distance > 2 * anatomical_phantoms.SHORTCUT_MM)
    assert outer.sum() > 20
    assert np.median(control["flair"][outer]) < 0.75 * np.median(default["flair"][outer])
    assert np.median(control["t2"][outer]) > 1.2 * np.median(control["t2"][control["flair"] > 0])


#: The positive control's probe: the rows of docs/phantoms.md ("Positive control").
_CONTROL_FEATURE_SETS = {
    "flair": ["flair"],
    "t1": ["t1"],
    "t1ce": ["t1ce"],
    "t2": ["t2"],
    "t1+t2": ["t1", "t2"],
    "all": list(MODALITIES),
    "all but flair": ["t1", "t1ce", "t2"],
    "all but t1": ["flair", "t1ce", "t2"],
    "all but t1ce": ["flair", "t1", "t2"],
    "all but t2": ["flair", "t1", "t1ce"],
}


@pytest.mark.parametrize(("train_seeds", "test_seeds"), [((0, 1), (2, 3)), ((4, 5), (6, 7))])
def test_mismatch_variant_needs_t2_for_the_outer_edema(train_seeds, test_seeds) -> None:
    """The positive control at 4 mm: the outer edema is out of reach without T2, the FLAIR shortcut covers the rest."""
    variant = "t2-flair-mismatch"
    train = [generate_anatomical_case(seed, spacing=4.0, variant=variant) for seed in train_seeds]
    test = [generate_anatomical_case(seed, spacing=4.0, variant=variant) for seed in test_seeds]
    outer = []
    for case in test:
        core_distance = ndimage.distance_transform_edt(~np.isin(case["seg"], (1, 4)), sampling=4.0)
        outer.append((core_distance > anatomical_phantoms.SHORTCUT_MM)[case["flair"] > 0])
    regions = {"outer": np.concatenate(outer), "inner": ~np.concatenate(outer)}
    labels = np.concatenate([case["seg"][case["flair"] > 0] for case in test])
    print(f"outer share of ED: {(regions['outer'] & (labels == 2)).sum() / (labels == 2).sum():.3f}")
    for sigmas in ((0.0,), (0.0, 1.0, 2.0)):
        dice = _bayes_dice(train, test, _CONTROL_FEATURE_SETS, sigmas, regions)
        print(f"sigmas {sigmas}")
        for name, row in dice.items():
            print(f"| {name} | " + " | ".join(f"{row[r]:.3f}" for r in ("NCR", "ED", "ED outer", "ED inner", "ET")))
        # (b) the FLAIR shortcut reaches the inner edema, far less of the outer.
        assert dice["flair"]["ED inner"] > dice["flair"]["ED outer"] + 0.2
        # (c) without T2 the outer edema is clearly lower; with it, T1 (blind to it) adds only anatomy.
        assert dice["all"]["ED outer"] > dice["all but t2"]["ED outer"] + 0.15
        assert dice["t1"]["ED"] < 0.05
        assert dice["t1+t2"]["ED outer"] > dice["all but t2"]["ED outer"] + 0.1
        if sigmas == (0.0,):
            assert dice["all"]["ED outer"] > dice["all but t2"]["ED outer"] + 0.5
    # The default phantoms of the same seeds (same labels): FLAIR, not T2, carries the outer edema there.
    train = [generate_anatomical_case(seed, spacing=4.0) for seed in train_seeds]
    test = [generate_anatomical_case(seed, spacing=4.0) for seed in test_seeds]
    sets = {k: _CONTROL_FEATURE_SETS[k] for k in ("flair", "t2", "t1+t2", "all", "all but t2")}
    for sigmas in ((0.0,), (0.0, 1.0, 2.0)):
        dice = _bayes_dice(train, test, sets, sigmas, regions)
        print(f"default variant, sigmas {sigmas}")
        for name, row in dice.items():
            print(f"| {name} | " + " | ".join(f"{row[r]:.3f}" for r in ("NCR", "ED", "ED outer", "ED inner", "ET")))
        assert dice["all but t2"]["ED outer"] > dice["all"]["ED outer"] - 0.05


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
