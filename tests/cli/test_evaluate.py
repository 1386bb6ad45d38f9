"""``brats-cggm-evaluate PRED_DIR REF_DIR``: the files it writes, refusals, unwritable outputs, usage errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from brats_cggm.brats.metrics.case_scores import HD95_EMPTY_MM
from brats_cggm.cli.evaluate import main
from tests.helpers.segmentation_folders import SHAPE, by_hand, save_labels, write_folders


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """See :func:`tests.helpers.segmentation_folders.write_folders`."""
    return write_folders(tmp_path)


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        return {r["case_id"]: r for r in csv.DictReader(f)}


#: Hand-computed challenge metrics of the cases of write_folders (spacing 1 x 1 x 2.5 mm).
#: B, WT: reference voxel (2, 2, 2), predicted voxels (2, 2, 2) and (2, 2, 6), two lesions 10 mm apart. Surface
#: distances reference -> prediction [0], prediction -> reference [0, 10]: pooled HD95 = percentile([0, 0, 10], 95)
#: = 9.0; directed = max(0, percentile([0, 10], 95)) = 9.5. Lesions: one match (Dice 1), one false positive:
#: F1 = 1 / (1 + 1/2) = 2/3, PQ = 2/3, penalised lesion Dice mean(1, 0) = 0.5, HD95 mean(0, 373) = 186.5.
#: C, ET: predicted, not in the reference: Dice 0, HD95 373, NSD 0 (WT: the same voxel, 1, 0, 1).
BY_HAND = {
    "A": {f"global_{m}_{r}": v for r in ("et", "tc", "wt") for m, v in (("dsc", 1.0), ("hd95", 0.0), ("nsd", 1.0))},
    "B": {
        "global_dsc_wt": 2 / 3,
        "global_hd95_wt": 9.0,
        "global_nsd_wt": 0.5 * (1 + 1 / 2),
        "all_instance_tp_wt": 1,
        "all_instance_fp_wt": 1,
        "all_instance_fn_wt": 0,
        "all_instance_prec_wt": 0.5,
        "all_instance_rec_wt": 1.0,
        "all_instance_f1_wt": 2 / 3,
        "pq_dsc_wt": 2 / 3,
        "lesionwise_dsc_mean_wt": 1.0,
        "lesionwise_hd95_mean_wt": 0.0,
        "lesionwise_penalised_dsc_wt": 0.5,
        "lesionwise_penalised_hd95_wt": 186.5,
        "lesionwise_penalised_nsd_wt": 0.5,
        "global_dsc_et": 1.0,
        "global_hd95_et": 0.0,
    },
    "C": {
        "global_dsc_et": 0.0,
        "global_hd95_et": 373.0,
        "global_nsd_et": 0.0,
        "global_dsc_wt": 1.0,
        "global_nsd_wt": 1.0,
    },
}


def test_cli_writes_csv_summary_and_table(folders: tuple[Path, Path], tmp_path: Path, capsys):
    out = tmp_path / "results"
    assert main([str(folders[0]), str(folders[1]), "--output-dir", str(out)]) == 1  # D and E are unpaired
    captured = capsys.readouterr()
    assert "3 of 5 cases evaluated" in captured.out
    assert "no prediction: E" in captured.err and "no reference: D" in captured.err

    rows = _rows(out / "evaluation.csv")
    assert rows["E"]["status"] == "missing_prediction" and rows["E"]["global_dsc_wt"] == ""
    for case, expected in BY_HAND.items():
        for name, value in expected.items():
            assert float(rows[case][name]) == pytest.approx(value, abs=1e-4), (case, name)
    # a region empty on both sides: global 1 / 0 / 1, lesion-wise NaN (empty cells), as the official evaluator
    assert rows["B"]["all_instance_prec_et"] == "" and rows["B"]["lesionwise_penalised_dsc_et"] == ""
    assert not any(name.endswith("_rc") for name in rows["A"])  # 2021 labels: no resection cavity

    summary = json.loads((out / "evaluation_summary.json").read_text())
    assert summary["n_cases"] == 5 and summary["n_evaluated"] == 3
    assert summary["missing_predictions"] == ["E"] and summary["missing_references"] == ["D"]
    assert summary["regions"] == ["et", "tc", "wt", "netc", "snfh"] and summary["hd95"] == "pooled"
    # references without ET, TC, NETC: B and C; B's prediction has none of them, C's has ET (so TC) but no NETC
    assert summary["empty_reference"] == {"et": 2, "tc": 2, "wt": 0, "netc": 2, "snfh": 0}
    assert summary["empty_both"] == {"et": 1, "tc": 1, "wt": 0, "netc": 2, "snfh": 0}
    for name in ("global_dsc_et", "global_hd95_et", "global_dsc_wt", "global_hd95_wt"):
        values = np.array([BY_HAND[c].get(name, 0.0 if "hd95" in name else 1.0) for c in "ABC"])
        stats = summary["metrics"][name]
        assert stats["n"] == 3
        assert stats["mean"] == pytest.approx(values.mean(), abs=1e-4)
        assert stats["std"] == pytest.approx(values.std(), abs=1e-4)
        assert stats["median"] == pytest.approx(np.median(values), abs=1e-4)
    # NaN is left out of the statistics: WT has lesions in every reference, ET only in A's
    assert summary["metrics"]["lesionwise_penalised_dsc_wt"]["n"] == 3
    assert summary["metrics"]["all_instance_prec_et"]["n"] == 2  # A (1/1) and C (0/1); B has no lesion at all
    table = (out / "evaluation.md").read_text()
    assert "| WT | 0.8889 ± 0.1571 |" in table and table.count("\n| ") == 6  # header and five regions

    # existing results are not overwritten without --overwrite
    before = (out / "evaluation.csv").read_text()
    assert main([str(folders[0]), str(folders[1]), "--output-dir", str(out)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "evaluation.csv").read_text() == before
    assert main([str(folders[0]), str(folders[1]), "--output-dir", str(out), "--overwrite"]) == 1


def test_directed_hd95_is_the_legacy_monai_one(folders: tuple[Path, Path], tmp_path: Path, capsys):
    out = tmp_path / "directed"
    assert main([str(folders[0]), str(folders[1]), "--output-dir", str(out), "--hd95", "directed"]) == 1
    rows = _rows(out / "evaluation.csv")
    legacy = by_hand()
    assert float(rows["B"]["global_hd95_wt"]) == pytest.approx(legacy["B"]["hd95_wt"], abs=1e-4)  # 9.5
    # the one documented difference: no overlap is 373 mm (official CSV), not the 373.13 mm diagonal
    assert float(rows["C"]["global_hd95_et"]) == 373.0 and legacy["C"]["hd95_et"] == pytest.approx(HD95_EMPTY_MM)
    assert json.loads((out / "evaluation_summary.json").read_text())["hd95"] == "directed"


def test_2023_labels_add_the_resection_cavity(tmp_path: Path, capsys):
    ref = np.zeros(SHAPE, np.uint8)
    ref[2:4, 2:4, 2:4] = 3  # ET
    ref[6:8, 6:8, 6:8] = 4  # resection cavity
    pred = ref.copy()
    pred[6:8, 6:8, 6:8] = 0  # the cavity missed
    save_labels(tmp_path / "pred" / "X.nii.gz", pred)
    save_labels(tmp_path / "ref" / "X.nii.gz", ref)
    assert main([str(tmp_path / "pred"), str(tmp_path / "ref")]) == 0
    rows = _rows(tmp_path / "pred" / "evaluation.csv")
    assert float(rows["X"]["global_dsc_et"]) == 1.0 and float(rows["X"]["global_dsc_wt"]) == 1.0  # RC is not tumour
    assert float(rows["X"]["global_dsc_rc"]) == 0.0 and float(rows["X"]["global_hd95_rc"]) == 373.0
    assert rows["X"]["all_instance_fn_rc"] == "1"
    summary = json.loads((tmp_path / "pred" / "evaluation_summary.json").read_text())
    assert summary["regions"] == ["et", "tc", "wt", "netc", "snfh", "rc"]
    assert summary["detected_label_conventions"] == {"X": ["brats2023", "brats2023"]}
    capsys.readouterr()
    # told 2021 labels, the 3s are an error naming the file
    argv = [str(tmp_path / "pred"), str(tmp_path / "ref"), "--labels", "brats2021", "--overwrite"]
    assert main(argv) == 1
    assert "unexpected label values [3]" in capsys.readouterr().err


def test_complete_evaluation_exits_0(tmp_path: Path, capsys):
    labels = np.zeros(SHAPE, np.uint8)
    labels[4:6, 4:6, 4:6] = 3  # BraTS 2023 ET
    save_labels(tmp_path / "pred" / "X.nii.gz", labels)
    save_labels(tmp_path / "ref" / "X.nii.gz", labels)
    argv = [str(tmp_path / "pred"), str(tmp_path / "ref"), "--labels", "brats2023"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "pred" / "evaluation_summary.json").read_text())
    assert summary["metrics"]["global_dsc_et"]["mean"] == 1.0 and summary["label_convention"] == "brats2023"
    capsys.readouterr()
    # the results in PRED_DIR are not read as predictions on a second run
    assert main([*argv, "--overwrite"]) == 0


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
    import brats_cggm.cli.evaluate as evaluation

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
    import brats_cggm.cli.evaluate as evaluation

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


@pytest.mark.parametrize("side", ["pred", "ref"])
def test_duplicate_case_ids_are_refused_naming_both_files(folders: tuple[Path, Path], tmp_path: Path, side, capsys):
    pred, ref = folders
    if side == "pred":  # x.nii next to x.nii.gz: one case id
        first, second = pred / "A.nii", pred / "A.nii.gz"
        shutil.copy(second, first)
    else:  # a label file next to the case folder of the same id
        first, second = ref / "A.nii.gz", ref / "A" / "A_seg.nii.gz"
        shutil.copy(second, first)
    out = tmp_path / "results"
    assert main([str(pred), str(ref), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"duplicate case id 'A': {first} and {second}" in err and not out.exists()
