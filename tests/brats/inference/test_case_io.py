"""brats.inference_io: finding the cases of an input folder, naming and writing the label maps."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_cggm.brats.data.discovery import BRATS2023_PATTERNS
from brats_cggm.brats.data.nifti_checks import InputFileError
from brats_cggm.brats.inference.case_io import (
    DESCRIP_BYTES,
    find_cases,
    nifti_description,
    output_path,
    record_path,
    save_case_record,
    save_like_reference,
    sequences_note,
)
from tests.helpers.inference_cases import MODALITIES, SHAPE, write_brats_case, write_msd_file


def test_find_cases_layouts(tmp_path: Path):
    write_brats_case(tmp_path / "batch", "A", "ras")
    write_brats_case(tmp_path / "batch", "B", "oblique")
    cases, problems = find_cases(tmp_path / "batch")
    assert [c.case_id for c in cases] == ["A", "B"] and problems == []
    assert cases[0].image == [str(tmp_path / "batch" / "A" / f"A_{m}.nii.gz") for m in MODALITIES]

    # BraTS 2023 names with a preset, and with per-modality suffixes
    write_brats_case(tmp_path / "b23", "BraTS-GLI-00001-000", "ras", patterns=BRATS2023_PATTERNS)
    cases, _ = find_cases(tmp_path / "b23", patterns="brats2023")
    assert cases[0].case_id == "BraTS-GLI-00001-000" and cases[0].missing == []
    assert cases[0].image[1].endswith("-t1c.nii.gz")

    # a folder of MSD 4-D files
    write_msd_file(tmp_path / "msd" / "BRATS_001.nii.gz", "ras")
    write_msd_file(tmp_path / "msd" / "BRATS_002.nii", "ras")
    cases, _ = find_cases(tmp_path / "msd")
    assert [c.case_id for c in cases] == ["BRATS_001", "BRATS_002"]
    assert all(c.channel_order == [0, 2, 1, 3] for c in cases)

    with pytest.raises(InputFileError, match="does not exist"):
        find_cases(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="holds no NIfTI"):
        find_cases(tmp_path / "empty")


def test_find_cases_msd_folder(msd_dataset: Path):
    cases, _ = find_cases(msd_dataset)
    assert [c.case_id for c in cases] == ["BRATS_001", "BRATS_002", "BRATS_003"]
    assert cases[0].channel_order == [0, 2, 1, 3]


def test_output_path_templates(tmp_path: Path):
    assert output_path(tmp_path, "X") == tmp_path / "X.nii.gz"
    assert output_path(tmp_path, "X", "seg_{case_id}.nii") == tmp_path / "seg_X.nii"
    for bad in ("{case_id}.png", "{other}.nii.gz", "sub/{case_id}.nii.gz", ".{case_id}.nii.gz"):
        with pytest.raises(ValueError, match="name-template"):
            output_path(tmp_path, "X", bad)
    # case ids (from --case-id, file or folder names) never name a file outside the folder, nor a hidden one
    for bad in ("../X", "..", ".X", "a/b", "", "a\nb"):
        with pytest.raises(ValueError, match="bad case id"):
            output_path(tmp_path, bad)


def test_save_refuses_to_overwrite_and_leaves_no_temporary(tmp_path: Path):
    case_dir = write_brats_case(tmp_path, "c", "ras")
    reference = case_dir / "c_flair.nii.gz"
    target = tmp_path / "out" / "c.nii.gz"
    save_like_reference(np.zeros(SHAPE, np.uint8), reference, target)
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_like_reference(np.ones(SHAPE, np.uint8), reference, target)
    assert not np.asanyarray(nib.load(str(target)).dataobj).any()
    save_like_reference(np.ones(SHAPE, np.uint8), reference, target, overwrite=True)
    assert np.asanyarray(nib.load(str(target)).dataobj).all()
    with pytest.raises(ValueError, match="differs"):
        save_like_reference(np.ones((3, 3, 3), np.uint8), reference, tmp_path / "out" / "d.nii.gz")
    assert sorted(p.name for p in target.parent.iterdir()) == ["c.nii.gz"]


def test_sequences_note_and_descrip_fit_the_header(tmp_path: Path):
    note = sequences_note(["flair", "t1", "t2"], ["t1ce"], "drop")
    assert note == "flair,t1,t2 (t1ce missing: drop)" and sequences_note(["flair"], [], "error") == "flair"
    assert nifti_description(f"brats-cggm seq={note}") == b"brats-cggm seq=flair,t1,t2 (t1ce missing: drop)"
    long = nifti_description("x" * 200)
    assert len(long) == DESCRIP_BYTES and long.endswith(b"...")
    case = find_cases(write_brats_case(tmp_path, "c", "ras"))[0][0]
    target = save_like_reference(np.zeros(SHAPE, np.uint8), case.reference, tmp_path / "c.nii.gz", description="y" * 90)
    assert nib.load(str(target)).header["descrip"].item() == b"y" * 77 + b"..."


def test_case_record_is_written_once_unless_overwrite(tmp_path: Path):
    path = record_path(tmp_path / "P01.nii.gz")
    assert path == tmp_path / "P01.json" and record_path("out/P01_seg.nii") == Path("out/P01_seg.json")
    save_case_record({"case_id": "P01"}, path)
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        save_case_record({"case_id": "other"}, path)
    save_case_record({"case_id": "P02"}, path, overwrite=True)
    assert path.read_text() == '{\n  "case_id": "P02"\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P01.json"]  # no temporary left


def _series_case(root: Path, case_id: str, names: dict[str, str]) -> Path:
    """A case folder of (empty) series folders: located only, never read, by find_cases."""
    for name in names.values():
        (root / case_id / name).mkdir(parents=True)
    return root / case_id


def test_find_cases_dicom_series_folders(tmp_path: Path):
    # one case folder, sub-folders named for their modality (either case) or with the file name suffix
    names = {"flair": "FLAIR", "t1ce": "t1ce", "t1": "A_t1", "t2": "t2"}
    case = _series_case(tmp_path, "A", names)
    cases, problems = find_cases(case)
    assert problems == [] and [c.case_id for c in cases] == ["A"]
    assert cases[0].image == [str(case / names[m]) for m in MODALITIES]

    # a folder of such case folders, beside a NIfTI case; BraTS 2023 suffixes as bare names
    write_brats_case(tmp_path / "batch", "B", "ras")
    _series_case(tmp_path / "batch", "C", {"flair": "t2f", "t1ce": "t1c", "t1": "t1n", "t2": "t2w"})
    cases, problems = find_cases(tmp_path / "batch", patterns="brats2023")
    assert problems == [] and [c.case_id for c in cases] == ["B", "C"]
    assert cases[1].image[0] == str(tmp_path / "batch" / "C" / "t2f")
    # a folder that names no modality is not a case; a missing modality is reported as for files
    (tmp_path / "batch" / "C" / "t2w").rmdir()
    (tmp_path / "batch" / "notes").mkdir()
    cases, _ = find_cases(tmp_path / "batch", patterns="brats2023")
    assert [c.case_id for c in cases] == ["B", "C"] and cases[1].missing == [3]


def test_find_cases_refuses_ambiguous_series_folders(tmp_path: Path):
    _series_case(tmp_path / "batch", "A", {m: m for m in MODALITIES})
    (tmp_path / "batch" / "A" / "A_flair").mkdir()
    write_brats_case(tmp_path / "batch", "B", "ras")
    (tmp_path / "batch" / "B" / "t1").mkdir()
    cases, problems = find_cases(tmp_path / "batch")
    assert [c.case_id for c in cases] == []
    messages = dict(problems)
    assert "several DICOM series folders for flair: A_flair/, flair/" in messages["A"]
    assert "both a file (B_t1.nii.gz) and a folder (t1)" in messages["B"]
