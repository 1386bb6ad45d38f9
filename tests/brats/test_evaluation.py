"""BraTS evaluation: Dice and HD95 against hand-computed values, the empty-mask conventions, folders, the CLI."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_cggm.brats.evaluation import (
    HD95_EMPTY_MM,
    case_metrics,
    dice,
    evaluate_cases,
    evaluate_folders,
    hd95,
    main,
)

SHAPE = (10, 10, 10)
SPACING = (1.0, 1.0, 2.5)
AFFINE = np.diag([-1.0, -1.0, 2.5, 1.0])  # LPS, anisotropic


def _mask(*voxels: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    for v in voxels:
        mask[v] = True
    return mask


def test_dice_by_hand():
    cube = np.zeros(SHAPE, bool)
    cube[2:5, 2:5, 2:5] = True
    shifted = np.zeros(SHAPE, bool)
    shifted[2:5, 2:5, 3:6] = True
    assert dice(cube, shifted) == pytest.approx(2 * 18 / (27 + 27))
    assert dice(cube, cube) == 1.0
    assert dice(cube, ~cube) == 0.0


def test_hd95_by_hand_honours_spacing_and_percentile():
    pred = _mask((0, 0, 0), (0, 0, 4))
    ref = _mask((0, 0, 0))
    # directed distances pred -> ref: [0, 4 voxels]; 95th percentile (linear): 0.95 * 4 voxels; ref -> pred: [0]
    assert hd95(pred, ref) == pytest.approx(0.95 * 4, abs=1e-5)
    assert hd95(pred, ref, SPACING) == pytest.approx(0.95 * 4 * 2.5, abs=1e-5)
    assert hd95(ref, pred, SPACING) == pytest.approx(0.95 * 4 * 2.5, abs=1e-5)
    assert hd95(_mask((1, 2, 3)), _mask((4, 6, 3)), SPACING) == pytest.approx(5.0)  # 3-4-5 in plane
    assert hd95(_mask((1, 2, 3)), _mask((1, 2, 3))) == 0.0


def test_empty_mask_conventions():
    empty, some = np.zeros(SHAPE, bool), _mask((3, 3, 3))
    assert (dice(empty, empty), hd95(empty, empty)) == (1.0, 0.0)
    assert (dice(some, empty), hd95(some, empty)) == (0.0, HD95_EMPTY_MM)
    assert (dice(empty, some), hd95(empty, some)) == (0.0, HD95_EMPTY_MM)
    assert HD95_EMPTY_MM == pytest.approx(373.13)


def test_case_metrics_regions_from_labels():
    pred = np.zeros(SHAPE, np.uint8)
    ref = np.zeros(SHAPE, np.uint8)
    pred[1, 1, 1], ref[1, 1, 1] = 4, 1  # ET predicted where the reference has necrosis
    pred[5, 5, 5] = ref[5, 5, 5] = 2
    m = case_metrics(pred, ref, SPACING)
    assert (m["dice_et"], m["hd95_et"]) == (0.0, HD95_EMPTY_MM)
    assert (m["dice_tc"], m["hd95_tc"]) == (1.0, 0.0)
    assert (m["dice_wt"], m["hd95_wt"]) == (1.0, 0.0)
    # in the prediction's own convention: BraTS 2023 ET is 3; the reference stays BraTS 2021
    pred23 = np.where(pred == 4, 3, pred)
    assert case_metrics(pred23, ref, SPACING, "brats2023", "brats2021") == m


def _save(path: Path, labels: np.ndarray, dtype=np.uint8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels.astype(dtype), AFFINE), str(path))


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Predictions and BraTS-layout references: A perfect, B off by one voxel, C with a false ET; D and E unpaired."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    a = np.zeros(SHAPE, np.uint8)
    a[2:6, 2:6, 2:6] = 2
    a[3:5, 3:5, 3:5] = 1
    a[3, 3, 3] = 4
    _save(pred / "A.nii.gz", a)
    _save(ref / "A" / "A_seg.nii.gz", a, np.int16)
    b_ref = np.zeros(SHAPE, np.uint8)
    b_ref[2, 2, 2] = 2
    b_pred = b_ref.copy()
    b_pred[2, 2, 6] = 2
    _save(pred / "B.nii.gz", b_pred)
    _save(ref / "B" / "B_seg.nii.gz", b_ref)
    c_ref = np.zeros(SHAPE, np.uint8)
    c_ref[1, 1, 1] = 2
    _save(pred / "C.nii.gz", np.where(c_ref > 0, 4, 0))
    _save(ref / "C" / "C_seg.nii.gz", c_ref)
    _save(pred / "D.nii.gz", a)  # no reference
    _save(ref / "E" / "E_seg.nii.gz", a)  # no prediction
    return pred, ref


def _by_hand() -> dict[str, dict[str, float]]:
    hd_b = 0.95 * 4 * 2.5
    return {
        "A": dict.fromkeys(("dice_et", "dice_tc", "dice_wt"), 1.0)
        | dict.fromkeys(("hd95_et", "hd95_tc", "hd95_wt"), 0.0),
        "B": {"dice_et": 1.0, "dice_tc": 1.0, "dice_wt": 2 / 3, "hd95_et": 0.0, "hd95_tc": 0.0, "hd95_wt": hd_b},
        "C": {"dice_et": 0.0, "dice_tc": 0.0, "dice_wt": 1.0}
        | {"hd95_et": HD95_EMPTY_MM, "hd95_tc": HD95_EMPTY_MM, "hd95_wt": 0.0},
    }


def test_evaluate_folders_by_hand(folders: tuple[Path, Path]):
    result = evaluate_folders(*folders)
    assert [r["case_id"] for r in result.rows] == ["A", "B", "C", "D", "E"]
    assert result.ids("missing_reference") == ["D"] and result.ids("missing_prediction") == ["E"]
    assert not result.complete
    rows = {r["case_id"]: r for r in result.rows}
    for case, expected in _by_hand().items():
        assert rows[case]["status"] == "ok"
        for name, value in expected.items():
            assert rows[case][name] == pytest.approx(value, abs=1e-5), (case, name)


def test_cli_writes_csv_and_summary(folders: tuple[Path, Path], tmp_path: Path, capsys):
    out = tmp_path / "results"
    assert main([str(folders[0]), str(folders[1]), "--output-dir", str(out)]) == 1  # D and E are unpaired
    captured = capsys.readouterr()
    assert "3 of 5 cases evaluated" in captured.out
    assert "no prediction: E" in captured.err and "no reference: D" in captured.err

    with (out / "evaluation.csv").open() as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    assert rows["E"]["status"] == "missing_prediction" and rows["E"]["dice_wt"] == ""
    assert float(rows["B"]["hd95_wt"]) == pytest.approx(9.5, abs=1e-4)
    assert float(rows["C"]["hd95_et"]) == pytest.approx(HD95_EMPTY_MM)

    summary = json.loads((out / "evaluation_summary.json").read_text())
    assert summary["n_cases"] == 5 and summary["n_evaluated"] == 3
    assert summary["missing_predictions"] == ["E"] and summary["missing_references"] == ["D"]
    by_hand = _by_hand()
    for name in ("dice_et", "dice_wt", "hd95_et", "hd95_wt"):
        values = np.array([by_hand[c][name] for c in "ABC"])
        stats = summary["metrics"][name]
        assert stats["n"] == 3
        assert stats["mean"] == pytest.approx(values.mean(), abs=1e-4)
        assert stats["std"] == pytest.approx(values.std(), abs=1e-4)
        assert stats["median"] == pytest.approx(np.median(values), abs=1e-4)

    # existing results are not overwritten without --overwrite
    before = (out / "evaluation.csv").read_text()
    assert main([str(folders[0]), str(folders[1]), "--output-dir", str(out)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "evaluation.csv").read_text() == before
    assert main([str(folders[0]), str(folders[1]), "--output-dir", str(out), "--overwrite"]) == 1


def test_complete_evaluation_exits_0(tmp_path: Path, capsys):
    labels = np.zeros(SHAPE, np.uint8)
    labels[4:6, 4:6, 4:6] = 3  # BraTS 2023 ET
    _save(tmp_path / "pred" / "X.nii.gz", labels)
    _save(tmp_path / "ref" / "X.nii.gz", labels)
    argv = [str(tmp_path / "pred"), str(tmp_path / "ref"), "--labels", "brats2023"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "pred" / "evaluation_summary.json").read_text())
    assert summary["metrics"]["dice_et"]["mean"] == 1.0 and summary["label_convention"] == "brats2023"
    capsys.readouterr()
    # the results in PRED_DIR are not read as predictions on a second run
    assert main([*argv, "--overwrite"]) == 0


def test_msd_references_in_their_own_convention(msd_dataset: Path, tmp_path: Path):
    msd_to_brats = np.array([0, 2, 1, 4], dtype=np.uint8)  # ED 1 -> 2, NET 2 -> 1, ET 3 -> 4
    ref = msd_dataset / "labelsTr" / "BRATS_001.nii.gz"
    image = nib.load(str(ref))
    pred = tmp_path / "pred" / "BRATS_001.nii.gz"
    pred.parent.mkdir()
    nib.save(nib.Nifti1Image(msd_to_brats[np.asarray(image.dataobj).astype(int)], image.affine), str(pred))
    result = evaluate_folders(tmp_path / "pred", msd_dataset, "brats2021", "msd")
    assert result.ids("ok") == ["BRATS_001"]
    assert result.ids("missing_prediction") == ["BRATS_002", "BRATS_003"]
    row = result.rows[0]
    assert [row[f"dice_{r}"] for r in ("et", "tc", "wt")] == [1.0, 1.0, 1.0]


def test_bad_cases_are_reported_not_dropped(tmp_path: Path):
    good = np.zeros(SHAPE, np.uint8)
    good[2, 2, 2] = 2
    _save(tmp_path / "ref" / "bad_labels.nii.gz", good)
    _save(tmp_path / "pred" / "bad_labels.nii.gz", np.where(good > 0, 3, 0))  # 3 is not a BraTS 2021 label
    _save(tmp_path / "ref" / "bad_shape.nii.gz", good)
    _save(tmp_path / "pred" / "bad_shape.nii.gz", good[:-1])
    (tmp_path / "pred" / "corrupt.nii.gz").write_bytes(b"garbage")
    _save(tmp_path / "ref" / "corrupt.nii.gz", good)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    errors = {r["case_id"]: r["error"] for r in result.rows}
    assert result.ids("error") == ["bad_labels", "bad_shape", "corrupt"]
    assert "unexpected label values [3]" in errors["bad_labels"]
    assert "spatial shape (9, 10, 10) differs" in errors["bad_shape"]
    assert errors["corrupt"].startswith(str(tmp_path / "pred" / "corrupt.nii.gz"))


def test_evaluate_cases_missing_sides():
    result = evaluate_cases({"a": (None, "r.nii.gz"), "b": ("p.nii.gz", None)})
    assert result.ids("missing_prediction") == ["a"] and result.ids("missing_reference") == ["b"]


def test_cli_errors_and_help(tmp_path: Path, capsys):
    assert main([str(tmp_path / "nowhere"), str(tmp_path)]) == 1
    assert f"error: {tmp_path / 'nowhere'}: prediction folder does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "PRED_DIR" in capsys.readouterr().out.upper()
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path)])
    assert exc.value.code == 2


def _refuse_to_evaluate(*args, **kwargs):
    raise AssertionError("evaluated although the results could not be written")


@pytest.mark.parametrize("where", ["existing_file", "under_a_file"])
def test_unwritable_output_dir_fails_before_evaluating(
    folders: tuple[Path, Path], tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, where: str
):
    import brats_cggm.brats.evaluation as evaluation

    monkeypatch.setattr(evaluation, "evaluate_folders", _refuse_to_evaluate)
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    out = blocker if where == "existing_file" else blocker / "sub"
    pred, ref = folders
    assert main([str(pred), str(ref), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --output-dir {out}: ") and "not a folder" in err
    assert blocker.read_text() == "a file, not a folder"


def test_output_dir_without_write_permission(folders: tuple[Path, Path], tmp_path: Path, capsys, monkeypatch):
    """A folder the user may not write to (os.access says so; root passes permission bits, so it is simulated)."""
    import brats_cggm.brats.evaluation as evaluation

    out = tmp_path / "locked"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != out and real_access(path, mode, **kw))
    monkeypatch.setattr(evaluation, "evaluate_folders", _refuse_to_evaluate)
    pred, ref = folders
    assert main([str(pred), str(ref), "--output-dir", str(out / "new")]) == 1
    assert (
        capsys.readouterr().err == f"error: --output-dir {out / 'new'}: not writable (it would be created in {out})\n"
    )
    assert not any(out.iterdir())


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_output_dir(folders: tuple[Path, Path], tmp_path: Path, capsys):
    out = tmp_path / "read_only"
    out.mkdir()
    out.chmod(0o500)
    try:
        pred, ref = folders
        assert main([str(pred), str(ref), "--output-dir", str(out)]) == 1
        assert capsys.readouterr().err == f"error: --output-dir {out}: not writable\n"
    finally:
        out.chmod(0o700)


@pytest.mark.parametrize("tolerance", ["-1", "nan", "x"])
def test_bad_affine_tolerance_is_a_usage_error(folders: tuple[Path, Path], tolerance: str, capsys):
    pred, ref = folders
    with pytest.raises(SystemExit) as exc:
        main([str(pred), str(ref), f"--affine-tolerance={tolerance}"])
    assert exc.value.code == 2 and "--affine-tolerance" in capsys.readouterr().err
