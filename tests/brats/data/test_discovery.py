from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_cggm.brats.data.discovery import (
    BRATS2023_PATTERNS,
    DEFAULT_MODALITIES,
    OUTSIDE_WARNING,
    DatasetSpec,
    DuplicateCaseError,
    check_unique_case_ids,
    detect_patterns,
    discover_brats_folders,
    discover_dataset,
    discover_msd,
)
from brats_cggm.brats.data.labels import check_labels
from brats_cggm.brats.phantoms.geometric import generate_phantom_case
from tests.helpers.msd_layouts import msd_with_duplicate_ids, msd_with_outside_entry, rewrite_training


@pytest.fixture
def brats_copy(phantom_dataset: Path, tmp_path: Path) -> Path:
    """A writable copy of the shared phantom data set."""
    return Path(shutil.copytree(phantom_dataset, tmp_path / "brats"))


@pytest.fixture
def msd_copy(msd_dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(msd_dataset, tmp_path / "msd"))


def _resave(path: Path, data: np.ndarray | None = None, affine: np.ndarray | None = None) -> None:
    image = nib.load(path)
    data = np.asanyarray(image.dataobj) if data is None else data
    nib.save(nib.Nifti1Image(data, image.affine if affine is None else affine), str(path))


def test_discover_brats(phantom_dataset: Path) -> None:
    spec = discover_dataset(phantom_dataset)
    assert isinstance(spec, DatasetSpec)
    assert spec.layout == "brats" and spec.label_convention == "brats2021" and spec.channel_order is None
    assert spec.modalities == DEFAULT_MODALITIES == ("flair", "t1ce", "t1", "t2")
    assert spec.root == phantom_dataset
    assert [item["case_id"] for item in spec.items] == [f"BraTS2021_{i:05d}" for i in range(4)]
    item = spec.items[2]
    assert [Path(p).name for p in item["image"]] == [
        f"BraTS2021_00002_{m}.nii.gz" for m in ("flair", "t1ce", "t1", "t2")
    ]
    assert Path(item["label"]).name == "BraTS2021_00002_seg.nii.gz"
    assert all(Path(p).is_file() for p in (*item["image"], item["label"]))


def test_discover_brats_custom_order_and_nii(brats_copy: Path) -> None:
    case = brats_copy / "BraTS2021_00001"
    gz = case / "BraTS2021_00001_t2.nii.gz"
    nib.save(nib.load(gz), str(case / "BraTS2021_00001_t2.nii"))
    gz.unlink()
    spec = discover_brats_folders(brats_copy, modalities=("t2", "flair"))
    assert [Path(p).name for p in spec.items[1]["image"]] == ["BraTS2021_00001_t2.nii", "BraTS2021_00001_flair.nii.gz"]


def test_hidden_and_non_nifti_folders_ignored(brats_copy: Path) -> None:
    (brats_copy / ".BraTS2021_00009.abc.tmp").mkdir()
    (brats_copy / "notes").mkdir()
    (brats_copy / "notes" / "readme.txt").write_text("x")
    assert len(discover_dataset(brats_copy).items) == 4


def test_brats2023_patterns(brats_copy: Path) -> None:
    old_to_new = {"flair": "t2f", "t1ce": "t1c", "t1": "t1n", "t2": "t2w", "seg": "seg"}
    for case in sorted(brats_copy.iterdir()):
        new_id = case.name.replace("BraTS2021_", "BraTS-GLI-") + "-000"
        for old, new in old_to_new.items():
            (case / f"{case.name}_{old}.nii.gz").rename(case / f"{new_id}-{new}.nii.gz")
        case.rename(brats_copy / new_id)
    spec = discover_dataset(brats_copy, patterns="brats2023")
    assert spec.label_convention == "brats2023"
    assert [Path(p).name for p in spec.items[0]["image"]] == [
        "BraTS-GLI-00000-000-t2f.nii.gz",
        "BraTS-GLI-00000-000-t1c.nii.gz",
        "BraTS-GLI-00000-000-t1n.nii.gz",
        "BraTS-GLI-00000-000-t2w.nii.gz",
    ]
    assert discover_dataset(brats_copy, patterns=BRATS2023_PATTERNS).items == spec.items
    # No patterns: the 2023 names, and with them the 2023 labels, are detected.
    assert detect_patterns(brats_copy) == "brats2023"
    detected = discover_dataset(brats_copy)
    assert detected.items == spec.items and detected.label_convention == "brats2023"
    # Explicit 2021 names win (and do not match); the error names the file it expected.
    with pytest.raises(FileNotFoundError, match=r"BraTS-GLI-00000-000_flair\.nii\.gz"):
        discover_dataset(brats_copy, patterns="brats2021")
    # A folder of unknown names: the BraTS 2021 names are expected, and the error says how to change them.
    for case in brats_copy.iterdir():
        for f in case.iterdir():
            f.rename(case / f.name.replace("-t2f", "-FLAIR"))
    assert detect_patterns(brats_copy) == "brats2021"
    with pytest.raises(FileNotFoundError, match=r"_flair\.nii\.gz \(file names detected as 'brats2021'"):
        discover_dataset(brats_copy)


def test_missing_modality_file(brats_copy: Path) -> None:
    (brats_copy / "BraTS2021_00002" / "BraTS2021_00002_t1ce.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"BraTS2021_00002.*BraTS2021_00002_t1ce\.nii\.gz") as info:
        discover_dataset(brats_copy)
    assert str(brats_copy / "BraTS2021_00002") in str(info.value)


def test_missing_label(brats_copy: Path) -> None:
    (brats_copy / "BraTS2021_00003" / "BraTS2021_00003_seg.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"BraTS2021_00003_seg\.nii\.gz"):
        discover_dataset(brats_copy)
    spec = discover_dataset(brats_copy, require_label=False)
    assert "label" not in spec.items[3] and "label" in spec.items[2]


def test_shape_mismatch(brats_copy: Path) -> None:
    t2 = brats_copy / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz"
    _resave(t2, data=np.zeros((32, 32, 30), dtype=np.int16))
    with pytest.raises(ValueError, match="shape") as info:
        discover_dataset(brats_copy)
    assert str(t2) in str(info.value) and "BraTS2021_00001_flair.nii.gz" in str(info.value)
    assert len(discover_dataset(brats_copy, validate="none").items) == 4


def test_affine_mismatch(brats_copy: Path) -> None:
    seg = brats_copy / "BraTS2021_00000" / "BraTS2021_00000_seg.nii.gz"
    affine = nib.load(seg).affine.copy()
    affine[0, 3] += 0.5
    _resave(seg, affine=affine)
    with pytest.raises(ValueError, match="affine differs") as info:
        discover_dataset(brats_copy)
    assert str(seg) in str(info.value) and "BraTS2021_00000_flair.nii.gz" in str(info.value)
    # Differences within the tolerance pass.
    affine[0, 3] -= 0.5 - 1e-5
    _resave(seg, affine=affine)
    discover_dataset(brats_copy)


def test_unexpected_labels_full_validation(brats_copy: Path) -> None:
    seg = brats_copy / "BraTS2021_00003" / "BraTS2021_00003_seg.nii.gz"
    data = np.asanyarray(nib.load(seg).dataobj).copy()
    data[0, 0, 0] = 3
    _resave(seg, data=data)
    discover_dataset(brats_copy)  # headers only: not caught
    with pytest.raises(ValueError, match=r"unexpected label values \[3\]") as info:
        discover_dataset(brats_copy, validate="full")
    assert str(seg) in str(info.value)
    # Under the BraTS 2023 convention the 3 is valid but the file's enhancing label 4 is not.
    with pytest.raises(ValueError, match=r"\[4\]"):
        discover_dataset(brats_copy, validate="full", label_convention="brats2023")


def test_empty_and_missing_dirs(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no cases found") as info:
        discover_dataset(empty)
    assert str(empty) in str(info.value)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        discover_dataset(missing)
    assert str(missing) in str(info.value)


def test_bad_settings(phantom_dataset: Path) -> None:
    with pytest.raises(ValueError, match="validate"):
        discover_dataset(phantom_dataset, validate="some")
    with pytest.raises(ValueError, match="layout"):
        discover_dataset(phantom_dataset, layout="nnunet")
    with pytest.raises(ValueError, match="unknown label convention"):
        discover_dataset(phantom_dataset, label_convention="brats2000")
    with pytest.raises(ValueError, match="patterns"):
        discover_dataset(phantom_dataset, patterns="brats2030")


def test_discover_msd(msd_dataset: Path) -> None:
    spec = discover_dataset(msd_dataset, validate="full")
    assert spec.layout == "msd" and spec.label_convention == "msd"
    assert [item["case_id"] for item in spec.items] == ["BRATS_001", "BRATS_002", "BRATS_003"]
    item = spec.items[0]
    assert item["image"] == str(msd_dataset / "imagesTr" / "BRATS_001.nii.gz")
    assert item["label"] == str(msd_dataset / "labelsTr" / "BRATS_001.nii.gz")
    # FLAIR, T1w, t1gd, T2w in the file; flair, t1ce, t1, t2 requested.
    assert spec.channel_order == [0, 2, 1, 3]
    check_labels(np.asanyarray(nib.load(item["label"]).dataobj), "msd", item["label"])


def test_msd_channel_order_selects_the_right_channels(msd_dataset: Path) -> None:
    modalities = ("t2", "t1ce", "flair")
    spec = discover_msd(msd_dataset, modalities=modalities)
    image = np.asanyarray(nib.load(spec.items[1]["image"]).dataobj)
    case = generate_phantom_case((32, 32, 32), seed=1)
    for modality, channel in zip(modalities, spec.channel_order, strict=True):
        np.testing.assert_array_equal(image[..., channel], case[modality])


def test_msd_modality_names_case_insensitive(msd_copy: Path) -> None:
    meta_path = msd_copy / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["modality"] = {"0": "t2w", "1": "T1GD", "2": "flair", "3": "t1w"}
    meta_path.write_text(json.dumps(meta))
    assert discover_dataset(msd_copy, validate="none").channel_order == [2, 1, 3, 0]
    meta["modality"] = {"0": "FLAIR", "1": "T1w", "2": "T2w"}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"dataset\.json.*'t1ce'") as info:
        discover_dataset(msd_copy)
    assert str(meta_path) in str(info.value)


def test_msd_errors(msd_copy: Path) -> None:
    missing = msd_copy / "labelsTr" / "BRATS_002.nii.gz"
    missing.unlink()
    with pytest.raises(FileNotFoundError) as info:
        discover_dataset(msd_copy)
    assert str(missing) in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"dataset\.json") as info:
        discover_msd(msd_copy / "imagesTr")
    assert str(msd_copy / "imagesTr") in str(info.value)


def test_msd_shape_mismatch(msd_copy: Path) -> None:
    label = msd_copy / "labelsTr" / "BRATS_003.nii.gz"
    _resave(label, data=np.zeros((32, 31, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape") as info:
        discover_dataset(msd_copy)
    assert str(label) in str(info.value)


def test_duplicate_msd_case_ids_are_refused_naming_both_files(msd_dataset: Path, tmp_path: Path) -> None:
    root, first, second = msd_with_duplicate_ids(msd_dataset, tmp_path / "msd")
    with pytest.raises(DuplicateCaseError) as info:
        discover_dataset(root, validate="none")
    assert str(info.value).startswith(f"{root / 'dataset.json'}: duplicate case id 'BRATS_001': {first} and {second}")


def test_msd_test_list_shares_the_case_ids(msd_copy: Path) -> None:
    meta = json.loads((msd_copy / "dataset.json").read_text())
    rewrite_training(msd_copy, meta["training"], test=["./imagesTs/BRATS_900.nii.gz", "./imagesTs/BRATS_900.nii"])
    with pytest.raises(DuplicateCaseError, match=r"duplicate case id 'BRATS_900': .*imagesTs/BRATS_900\.nii\.gz and "):
        discover_msd(msd_copy)
    rewrite_training(msd_copy, meta["training"], test=["./imagesTs/BRATS_002.nii.gz"])  # a training case's id
    with pytest.raises(DuplicateCaseError, match=r"'BRATS_002': .*imagesTr/BRATS_002\.nii\.gz and .*imagesTs/"):
        discover_msd(msd_copy)
    rewrite_training(msd_copy, meta["training"], test=[{"image": "./imagesTs/BRATS_900.nii.gz"}])
    assert len(discover_msd(msd_copy).items) == 3  # distinct ids: the test list is not read further
    rewrite_training(msd_copy, meta["training"], test=[7])
    with pytest.raises(ValueError, match="test entry 7 is neither an image path"):
        discover_msd(msd_copy)


def test_check_unique_case_ids_names_both_sources() -> None:
    check_unique_case_ids([("a", "x/a.nii.gz"), ("b", "x/b.nii.gz")], "x")
    with pytest.raises(DuplicateCaseError, match=r"^x: duplicate output file 'a': 1 and 2 \(1 more clash\(es\)\)"):
        check_unique_case_ids([("a", "1"), ("a", "2"), ("b", "3"), ("b", "4")], "x", what="output file")


def test_a_case_folder_linked_from_outside_is_read_with_one_warning(phantom_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    shutil.copytree(phantom_dataset / "BraTS2021_00000", root / "BraTS2021_00000")
    for case in ("BraTS2021_00001", "BraTS2021_00002"):
        (root / case).symlink_to(phantom_dataset / case, target_is_directory=True)
    with pytest.warns(UserWarning, match=OUTSIDE_WARNING) as caught:
        spec = discover_dataset(root, validate="none")
    assert len(spec.items) == 3 and len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(f"2 case(s) {OUTSIDE_WARNING} {root}: ")
    assert f"{root / 'BraTS2021_00001'} -> {phantom_dataset / 'BraTS2021_00001'}" in message
    assert "BraTS2021_00000" not in message


def test_an_msd_entry_outside_the_folder_is_read_with_one_warning(msd_dataset: Path, tmp_path: Path) -> None:
    root, outside = msd_with_outside_entry(msd_dataset, tmp_path)
    with pytest.warns(UserWarning, match=OUTSIDE_WARNING) as caught:
        spec = discover_dataset(root, validate="none")
    assert [item["case_id"] for item in spec.items] == ["BRATS_001", "BRATS_002", "BRATS_003"]
    assert len(caught) == 1 and str(caught[0].message) == f"1 case(s) {OUTSIDE_WARNING} {root}: {outside}"


def test_a_data_set_inside_its_folder_gives_no_warning(phantom_dataset: Path, msd_dataset: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        discover_dataset(phantom_dataset, validate="none")
        discover_dataset(msd_dataset, validate="none")
