from __future__ import annotations

import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_cggm.brats.phantoms.geometric import (
    MODALITIES,
    PHANTOM_MODALITY_INFO,
    brats_affine,
    ensure_phantom_dataset,
    generate_phantom_case,
    write_brats_case,
    write_phantom_dataset,
)

SHAPE = (32, 32, 32)


def test_case_content() -> None:
    case = generate_phantom_case(SHAPE, seed=0)
    assert set(case) == {*MODALITIES, "seg"} and set(PHANTOM_MODALITY_INFO) == set(MODALITIES)
    for modality in MODALITIES:
        assert case[modality].dtype == np.int16 and case[modality].shape == SHAPE
    assert case["seg"].dtype == np.uint8 and case["seg"].shape == SHAPE
    brain = case["flair"] > 0
    # Skull-stripped: background exactly 0, the same for every modality, the tumour inside the brain.
    for modality in MODALITIES:
        assert np.array_equal(case[modality] > 0, brain)
    assert not np.any(case["seg"][~brain])
    assert 0.1 < brain.mean() < 0.5


@pytest.mark.parametrize("seed", range(5))
def test_every_label_present(seed: int) -> None:
    seg = generate_phantom_case(SHAPE, seed=seed)["seg"]
    assert set(np.unique(seg).tolist()) == {0, 1, 2, 4}


def test_smallest_shape_has_every_label() -> None:
    seg = generate_phantom_case((24, 24, 24), seed=3)["seg"]
    assert set(np.unique(seg).tolist()) == {0, 1, 2, 4}


def test_deterministic() -> None:
    a, b = generate_phantom_case(SHAPE, seed=7), generate_phantom_case(SHAPE, seed=7)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes()
    c = generate_phantom_case(SHAPE, seed=8)
    assert not np.array_equal(a["seg"], c["seg"]) and not np.array_equal(a["flair"], c["flair"])


def test_bad_shape() -> None:
    with pytest.raises(ValueError, match="at least 24"):
        generate_phantom_case((16, 32, 32))
    with pytest.raises(ValueError, match="three integers"):
        generate_phantom_case((32, 32))


def _contrasts(case: dict[str, np.ndarray], modality: str) -> tuple[float, float]:
    """(WT vs normal brain, ET vs NCR), both in units of the normal brain's std."""
    image, seg = case[modality].astype(np.float64), case["seg"]
    normal = image[(seg == 0) & (image > 0)]
    wt = (image[seg > 0].mean() - normal.mean()) / normal.std()
    et_ncr = (image[seg == 4].mean() - image[seg == 1].mean()) / normal.std()
    return float(wt), float(et_ncr)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_modalities_imbalanced(seed: int) -> None:
    case = generate_phantom_case((48, 48, 48), seed=seed)
    flair, t1, t1ce, t2 = (_contrasts(case, m) for m in ("flair", "t1", "t1ce", "t2"))
    # WT: FLAIR dominant, T2 partial, T1 nearly blind.
    assert flair[0] > 2.5
    assert flair[0] > 4 * abs(t1[0]) and abs(t1[0]) < 0.6
    assert 0.7 < t2[0] < flair[0]
    # ET vs NCR: only T1ce separates them.
    assert t1ce[1] > 2.5
    assert abs(flair[1]) < 0.5 and abs(t2[1]) < 0.5 and abs(t1[1]) < 0.5


def test_write_layout(tmp_path: Path) -> None:
    case_dirs = write_phantom_dataset(tmp_path / "data", n=2, shape=SHAPE, seed=5)
    assert [d.name for d in case_dirs] == ["BraTS2021_00000", "BraTS2021_00001"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["BraTS2021_00000", "BraTS2021_00001"]
    expected = generate_phantom_case(SHAPE, seed=6)
    for name in (*MODALITIES, "seg"):
        image = nib.load(case_dirs[1] / f"BraTS2021_00001_{name}.nii.gz")
        dtype = np.asanyarray(image.dataobj).dtype
        assert dtype == (np.int16 if name != "seg" else np.uint8)
        np.testing.assert_array_equal(np.asanyarray(image.dataobj), expected[name])
        assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
        np.testing.assert_allclose(np.abs(np.diag(image.affine)), 1.0)
        assert image.affine[1, 3] == SHAPE[1] - 1
        assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1
        np.testing.assert_allclose(image.get_qform(), image.get_sform())


def test_cases_do_not_depend_on_n(tmp_path: Path) -> None:
    write_phantom_dataset(tmp_path / "a", n=1, shape=SHAPE, seed=3)
    write_phantom_dataset(tmp_path / "b", n=2, shape=SHAPE, seed=3)
    a = nib.load(tmp_path / "a" / "BraTS2021_00000" / "BraTS2021_00000_t1ce.nii.gz").get_fdata()
    b = nib.load(tmp_path / "b" / "BraTS2021_00000" / "BraTS2021_00000_t1ce.nii.gz").get_fdata()
    np.testing.assert_array_equal(a, b)


def test_no_overwrite_without_flag(tmp_path: Path) -> None:
    write_phantom_dataset(tmp_path, n=1, shape=SHAPE, seed=0)
    flair = tmp_path / "BraTS2021_00000" / "BraTS2021_00000_flair.nii.gz"
    before = flair.read_bytes()
    with pytest.raises(FileExistsError, match="BraTS2021_00000"):
        write_phantom_dataset(tmp_path, n=2, shape=SHAPE, seed=1)
    assert flair.read_bytes() == before and not (tmp_path / "BraTS2021_00001").exists()
    write_phantom_dataset(tmp_path, n=1, shape=SHAPE, seed=1, overwrite=True)
    assert flair.read_bytes() != before
    # Atomic writes leave no temporary folders behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BraTS2021_00000"]


def test_write_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must be"):
        write_phantom_dataset(tmp_path, n=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="file"):
        write_phantom_dataset(tmp_path / "file", n=1, shape=SHAPE)


def test_ensure_phantom_dataset(tmp_path: Path) -> None:
    root = ensure_phantom_dataset(tmp_path / "default", n=2, shape=(24, 24, 24), seed=0)
    assert sorted(p.name for p in root.iterdir()) == ["BraTS2021_00000", "BraTS2021_00001"]
    # A folder with content is left alone.
    ensure_phantom_dataset(root, n=3, shape=(24, 24, 24))
    assert len(list(root.iterdir())) == 2
    (tmp_path / "empty").mkdir()
    ensure_phantom_dataset(tmp_path / "empty", n=1, shape=(24, 24, 24))
    assert (tmp_path / "empty" / "BraTS2021_00000").is_dir()


def test_case_folders_follow_the_umask(tmp_path: Path) -> None:
    """A case folder is written under a temporary name and renamed: it must still get mkdir's mode."""
    previous = os.umask(0o027)
    try:
        case_dirs = write_phantom_dataset(tmp_path / "data", n=1, shape=SHAPE, seed=0)
        # the anatomical phantoms go through the same writer
        replaced = write_brats_case(case_dirs[0], generate_phantom_case(SHAPE, seed=1), brats_affine(SHAPE), True)
    finally:
        os.umask(previous)
    for case_dir in (case_dirs[0], replaced):
        assert stat.S_IMODE(case_dir.stat().st_mode) == 0o750
        assert {stat.S_IMODE(f.stat().st_mode) for f in case_dir.iterdir()} == {0o640}
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["BraTS2021_00000"]  # no temporary left


def test_random_rotation_is_orthogonal_and_seeded() -> None:
    from brats_cggm.brats.phantoms.geometric import random_rotation

    rotation = random_rotation(np.random.default_rng(3))
    assert rotation.shape == (3, 3)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_array_equal(rotation, random_rotation(np.random.default_rng(3)))
    assert not np.allclose(rotation, random_rotation(np.random.default_rng(4)))
