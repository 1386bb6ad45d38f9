"""``brats-cggm-infer`` command line: arguments, bad inputs, batch mode, overwriting (tiny random network)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from brats_cggm.cli.infer import main
from tests.helpers.crafted_files import code_running_checkpoint, unsafe_advice
from tests.helpers.inference_cases import RegionThreshold
from tests.helpers.msd_layouts import msd_with_duplicate_ids, msd_with_outside_entry

CASE = "BraTS2021_00000"
NO_T1CE, NO_T2 = "BraTS2021_00001", "BraTS2021_00002"


@pytest.fixture
def case_dir(phantom_dataset: Path, tmp_path: Path) -> Path:
    """A writable copy of one phantom case folder."""
    return Path(shutil.copytree(phantom_dataset / CASE, tmp_path / "in" / CASE))


def _run(inputs: list[str], model: list[str], out: Path, *extra: str) -> int:
    return main([*inputs, *model, "--output-dir", str(out), "--device", "cpu", *extra])


def _bundle(run_dir: Path) -> list[str]:
    return ["--bundle", str(run_dir)]


def _file(case: Path, modality: str) -> Path:
    return case / f"{case.name}_{modality}.nii.gz"


def _rewrite(path: Path, transform: Callable[[np.ndarray], np.ndarray], affine: np.ndarray | None = None) -> None:
    image = nib.load(str(path))
    data = transform(np.asarray(image.get_fdata(), np.float32))
    nib.save(nib.Nifti1Image(data, image.affine if affine is None else affine), str(path))


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def test_help(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--input", "--bundle", "--checkpoint", "--torchscript", "--missing-modality", "--tta", "--roi"):
        assert option in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--output-dir", "o", "--bundle", "b"], "either --input or explicit modality files"),
        (["--input", "i", "--flair", "f", "--output-dir", "o", "--bundle", "b"], "either --input"),
        (["--input", "i", "--output-dir", "o"], "give a model"),
        (["--input", "i", "--output-dir", "o", "--torchscript", "t", "--checkpoint", "c"], "--checkpoint goes with"),
        (["--input", "i", "--output-dir", "o", "--bundle", "b", "--name-template", "{case_id}.png"], "name-template"),
        (["--input", "i", "--output-dir", "o", "--bundle", "b", "--device", "tpu"], "--device"),
        (["--input", "i", "--output-dir", "o", "--bundle", "b", "--labels", "brats2020"], "invalid choice"),
        # case ids name output files: nothing that leaves the output folder or hides the file
        (["--flair", "f", "--case-id", "../x", "--output-dir", "o", "--bundle", "b"], "bad case id '../x'"),
        (["--flair", "f", "--case-id", ".hidden", "--output-dir", "o", "--bundle", "b"], "must not start with '.'"),
        (["--flair", "f", "--case-id", "", "--output-dir", "o", "--bundle", "b"], "bad case id"),
        (["--flair", "f", "--case-id", "a/b", "--output-dir", "o", "--bundle", "b"], "path separators"),
        # numbers are checked when parsing, not once per case
        (["--input", "i", "--output-dir", "o", "--bundle", "b", "--overlap", "1.5"], "must be in [0, 1)"),
        (["--input", "i", "--output-dir", "o", "--bundle", "b", "--overlap", "1"], "must be in [0, 1)"),
        (["--input", "i", "--output-dir", "o", "--bundle", "b", "--overlap=-0.1"], "must be in [0, 1)"),
        (["--input", "i", "--output-dir", "o", "--bundle", "b", "--overlap", "nan"], "finite"),
        (["--input", "i", "--output-dir", "o", "--bundle", "b", "--sw-batch-size", "0"], "must be at least 1"),
        (["--input", "i", "--output-dir", "o", "--bundle", "b", "--roi", "16", "0", "16"], "must be at least 1"),
        (["--input", "i", "--output-dir", "o", "--bundle", "b", "--roi", "16", "16", "x"], "expected an integer"),
        (["--input", "i", "--output-dir", "o", "--bundle", "b", "--affine-tolerance=-1"], "must be at least 0"),
        (["--input", "i", "--output-dir", "o", "--bundle", "b", "--skip-existing", "--overwrite"], "give one of them"),
    ],
)
def test_bad_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_case_folder_with_checkpoint_and_overwrite(case_dir: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    model = [*_bundle(tiny_run_dir), "--checkpoint", str(tiny_run_dir / "models" / "checkpoint.pt")]
    assert _run(["--input", str(case_dir)], model, out) == 0
    target = out / f"{CASE}.nii.gz"
    reference = nib.load(str(_file(case_dir, "flair")))
    written = nib.load(str(target))
    assert written.shape == reference.shape and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, reference.affine)
    assert set(np.unique(np.asanyarray(written.dataobj))) <= {0, 1, 2, 4}
    log = capsys.readouterr()
    assert "summary: 1 segmented, 0 failed" in log.out and f"[1/1] {CASE}:" in log.out

    # the same run again: refused, the file untouched; with --overwrite: replaced
    target.write_bytes(b"sentinel")
    assert _run(["--input", str(case_dir)], model, out) == 1
    assert target.read_bytes() == b"sentinel"
    assert any("exists; pass --overwrite" in line for line in _error_lines(capsys.readouterr().err))
    assert _run(["--input", str(case_dir)], model, out, "--overwrite") == 0
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(target)).dataobj), np.asanyarray(written.dataobj))


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _corrupt(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-8:-4] = bytes(255 - b for b in raw[-8:-4])
    path.write_bytes(bytes(raw))


def _with_nan(path: Path) -> None:
    def put_nan(a):
        a[5, 5, 5] = np.nan
        return a

    _rewrite(path, put_nan)


def _moved(path: Path) -> None:
    affine = nib.load(str(path)).affine.copy()
    affine[:3, 3] += 0.5
    _rewrite(path, lambda a: a, affine)


#: modality -> (how it is broken, the message expected)
BAD_FILES = {
    "truncated_gzip": ("t1", _truncate, "truncated or corrupt gzip data"),
    "corrupt_gzip": ("t1", _corrupt, "truncated or corrupt gzip data"),
    "four_d": ("t2", lambda p: _rewrite(p, lambda a: np.stack([a, a], -1)), "4-D, expected a 3-D volume"),
    "shape": ("t1ce", lambda p: _rewrite(p, lambda a: a[:-1]), "spatial shape (31, 32, 32) differs"),
    "affine": ("flair", _moved, "affine differs"),
    "nan": ("t2", _with_nan, "NaN or infinite"),
    "all_zero": ("t1", lambda p: _rewrite(p, np.zeros_like), "every voxel is 0"),
    "not_nifti": ("t2", lambda p: p.write_text("not an image"), "truncated or corrupt gzip data"),
}


@pytest.mark.parametrize("problem", sorted(BAD_FILES))
def test_bad_input_file(problem: str, case_dir: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    modality, breaker, message = BAD_FILES[problem]
    bad = _file(case_dir, modality)
    if problem == "affine":  # the reference is the first modality: move another one
        bad = _file(case_dir, "t1ce")
    breaker(bad)
    out = tmp_path / "out"
    assert _run(["--input", str(case_dir)], _bundle(tiny_run_dir), out) == 1
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1, errors
    # one line: the case, the file at fault, the problem
    assert errors[0].startswith(f"error: {CASE}: {bad}: ") and message in errors[0]
    assert not out.exists() or not any(out.iterdir())


def test_missing_paths_and_non_nifti(tiny_run_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert _run(["--input", str(tmp_path / "nowhere")], _bundle(tiny_run_dir), out) == 1
    assert f"error: {tmp_path / 'nowhere'}: does not exist\n" == capsys.readouterr().err
    text = tmp_path / "scan.txt"
    text.write_text("x")
    assert _run(["--input", str(text)], _bundle(tiny_run_dir), out) == 1
    assert capsys.readouterr().err.startswith(f"error: {text}: is not a NIfTI file")
    assert _run(["--flair", str(tmp_path / "f.nii.gz")], _bundle(tiny_run_dir), out) == 1
    assert f"{tmp_path / 'f.nii.gz'}: does not exist" in capsys.readouterr().err
    assert not out.exists()


def _incomplete_batch(phantom_dataset: Path, root: Path) -> Path:
    """Three cases: complete, without T1ce, without T2."""
    for case in (CASE, NO_T1CE, NO_T2):
        shutil.copytree(phantom_dataset / case, root / case)
    _file(root / NO_T1CE, "t1ce").unlink()
    _file(root / NO_T2, "t2").unlink()
    return root


def test_missing_file_is_an_error_naming_it_and_the_flag(
    phantom_dataset: Path, tiny_run_dir: Path, tmp_path: Path, capsys
):
    batch = _incomplete_batch(phantom_dataset, tmp_path / "batch")
    out = tmp_path / "out"
    assert _run(["--input", str(batch)], _bundle(tiny_run_dir), out) == 1
    log = capsys.readouterr()
    assert "summary: 1 segmented, 2 failed" in log.out
    for case, modality in ((NO_T1CE, "t1ce"), (NO_T2, "t2")):
        line = next(line for line in _error_lines(log.err) if line.startswith(f"error: {case}: "))
        assert f"no {modality} file (expected {_file(batch / case, modality)})" in line
        assert "--missing-modality drop" in line
    # nothing written for the refused cases; the complete one is done
    assert sorted(p.name for p in out.iterdir()) == [f"{CASE}.json", f"{CASE}.nii.gz"]


def test_missing_modality_drop_records_the_sequences(phantom_dataset: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    batch = _incomplete_batch(phantom_dataset, tmp_path / "batch")
    out = tmp_path / "out"
    assert _run(["--input", str(batch)], _bundle(tiny_run_dir), out, "--missing-modality", "drop") == 0
    log = capsys.readouterr()
    assert "summary: 3 segmented, 0 failed" in log.out and "warning" not in log.err
    modalities = ["flair", "t1ce", "t1", "t2"]  # the network's order
    for case, missing in ((CASE, []), (NO_T1CE, ["t1ce"]), (NO_T2, ["t2"])):
        used = [m for m in modalities if m not in missing]
        record = json.loads((out / f"{case}.json").read_text())
        assert record["case_id"] == case and record["segmentation"] == f"{case}.nii.gz"
        assert record["modalities_used"] == used and record["modalities_missing"] == missing
        assert record["missing_modality"] == "drop" and len(record["inputs"]) == len(used)
        note = ",".join(used) + (f" ({missing[0]} missing: drop)" if missing else "")
        header = nib.load(str(out / f"{case}.nii.gz")).header
        assert header["descrip"].item().decode() == f"brats-cggm seq={note}"
        assert f"{case}: " in log.out and f"sequences {note} -> {out / case}.nii.gz" in log.out

    # the record follows the --overwrite rule of the other outputs
    (out / f"{NO_T2}.nii.gz").unlink()
    assert _run(["--input", str(batch / NO_T2)], _bundle(tiny_run_dir), out, "--missing-modality", "drop") == 1
    assert f"{out / NO_T2}.json: exists; pass --overwrite" in capsys.readouterr().err
    assert not (out / f"{NO_T2}.nii.gz").exists()


def test_missing_modality_zero_is_the_legacy_zero_input(case_dir: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    _file(case_dir, "t1").unlink()
    out = tmp_path / "out"
    assert _run(["--input", str(case_dir)], _bundle(tiny_run_dir), out, "--missing-modality", "zero") == 0
    assert "that branch gets zeros" in capsys.readouterr().err
    record = json.loads((out / f"{CASE}.json").read_text())
    assert record["modalities_missing"] == ["t1"] and record["missing_modality"] == "zero"
    assert (
        nib.load(str(out / f"{CASE}.nii.gz")).header["descrip"].item()
        == b"brats-cggm seq=flair,t1ce,t2 (t1 missing: zero)"
    )


@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated")
def test_drop_with_torchscript_is_refused(case_dir: Path, tmp_path: Path, capsys):
    ts = tmp_path / "threshold.ts"
    torch.jit.save(torch.jit.script(RegionThreshold()), str(ts))
    out = tmp_path / "out"
    argv = ["--input", str(case_dir), "--torchscript", str(ts), "--roi", "16", "16", "16", "--missing-modality", "drop"]
    assert _run(argv, [], out) == 1
    err = capsys.readouterr().err
    assert "--missing-modality drop" in err and "TorchScript" in err
    assert not out.exists()


def test_batch_runs_past_failures(phantom_dataset: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    batch = tmp_path / "batch"
    for case in ("BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"):
        shutil.copytree(phantom_dataset / case, batch / case)
    _corrupt(batch / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz")
    out = tmp_path / "out"
    assert _run(["--input", str(batch)], _bundle(tiny_run_dir), out) == 1
    log = capsys.readouterr()
    assert "summary: 2 segmented, 1 failed" in log.out
    failed = log.err.split("failed:")[1]
    assert "BraTS2021_00001:" in failed and "BraTS2021_00000" not in failed
    assert failed.count("BraTS2021_00001: ") == 1 and "truncated or corrupt gzip data" in failed
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"BraTS2021_0000{i}{ext}" for i in (0, 2) for ext in (".json", ".nii.gz")]


def test_skip_existing_continues_an_interrupted_run(phantom_dataset: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    batch, out = tmp_path / "batch", tmp_path / "out"
    cases = ("BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002")
    for case in cases:
        shutil.copytree(phantom_dataset / case, batch / case)
    model = [*_bundle(tiny_run_dir), "--save-probabilities"]
    assert _run(["--input", str(batch)], model, out) == 0
    capsys.readouterr()
    # a plain rerun refuses the finished cases and says how to go on
    assert _run(["--input", str(batch)], model, out) == 1
    assert "exists; pass --overwrite to replace it, or --skip-existing to keep it" in capsys.readouterr().err
    done = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob(f"{cases[0]}*")}
    # interrupted: case 1 between its two files (the label map is written last), case 2 not begun
    (out / f"{cases[1]}.nii.gz").unlink()
    for p in out.glob(f"{cases[2]}*"):
        p.unlink()

    assert _run(["--input", str(batch)], model, out, "--skip-existing") == 0
    log = capsys.readouterr()
    assert "summary: 2 segmented, 1 skipped (outputs exist), 0 failed" in log.out
    assert f"[1/3] {cases[0]}: skipped, its outputs exist -> {out / cases[0]}.nii.gz" in log.out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob(f"{cases[0]}*")} == done  # untouched
    expected = sorted(f"{c}{s}" for c in cases for s in (".json", ".nii.gz", "_probabilities.nii.gz"))
    assert sorted(p.name for p in out.iterdir()) == expected

    # a label map without the probabilities asked for is not a finished case: reported, not half-redone
    (out / f"{cases[0]}_probabilities.nii.gz").unlink()
    assert _run(["--input", str(batch)], model, out, "--skip-existing") == 1
    log = capsys.readouterr()
    assert "summary: 0 segmented, 2 skipped (outputs exist), 1 failed" in log.out
    assert f"error: {cases[0]}: {out / cases[0]}.nii.gz: exists without its probabilities" in log.err
    assert not (out / f"{cases[0]}_probabilities.nii.gz").exists()


def test_msd_file_and_channel_checks(msd_dataset: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    image = msd_dataset / "imagesTr" / "BRATS_001.nii.gz"
    out = tmp_path / "out"
    assert _run(["--input", str(image)], _bundle(tiny_run_dir), out) == 0
    assert nib.load(str(out / "BRATS_001.nii.gz")).shape == nib.load(str(image)).shape[:3]

    bad = tmp_path / "BRATS_002.nii.gz"
    data = nib.load(str(image)).get_fdata().astype(np.float32)
    data[..., 2] = 0  # T1gd
    nib.save(nib.Nifti1Image(data, nib.load(str(image)).affine), str(bad))
    assert _run(["--input", str(bad)], _bundle(tiny_run_dir), out) == 1
    assert f"error: BRATS_002: {bad}: channel 2 (t1ce) is empty" in capsys.readouterr().err
    assert not (out / "BRATS_002.nii.gz").exists()


def _refuse_to_segment(*args, **kwargs):
    raise AssertionError("segmented although the output could not be written")


@pytest.mark.parametrize("where", ["existing_file", "under_a_file"])
def test_unwritable_output_fails_before_segmenting(
    where: str, case_dir: Path, tiny_run_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    from brats_cggm.brats.inference.segmenter import BratsSegmenter

    monkeypatch.setattr(BratsSegmenter, "__call__", _refuse_to_segment)
    blocker = tmp_path / "out"
    blocker.write_text("a file, not a folder")
    out = blocker if where == "existing_file" else blocker / "sub"
    assert _run(["--input", str(case_dir)], _bundle(tiny_run_dir), out) == 1
    log = capsys.readouterr()
    assert log.out == ""  # not even the model line: nothing was loaded
    assert log.err.count("\n") == 1 and log.err.startswith(f"error: --output-dir {out}: ") and "not a folder" in log.err
    assert blocker.read_text() == "a file, not a folder"


def test_output_without_write_permission(case_dir: Path, tiny_run_dir: Path, tmp_path: Path, capsys, monkeypatch):
    """A folder the user may not write to (os.access says so; root passes permission bits, so it is simulated)."""
    import os

    from brats_cggm.brats.inference.segmenter import BratsSegmenter

    out = tmp_path / "locked"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != out and real_access(path, mode, **kw))
    monkeypatch.setattr(BratsSegmenter, "__call__", _refuse_to_segment)
    assert _run(["--input", str(case_dir)], _bundle(tiny_run_dir), out) == 1
    assert capsys.readouterr().err == f"error: --output-dir {out}: not writable\n"
    assert not any(out.iterdir())


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_output(case_dir: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "read_only"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert _run(["--input", str(case_dir)], _bundle(tiny_run_dir), out / "new") == 1
        assert (
            capsys.readouterr().err
            == f"error: --output-dir {out / 'new'}: not writable (it would be created in {out})\n"
        )
    finally:
        out.chmod(0o700)


def test_case_ids_from_folder_names_stay_in_the_output(case_dir: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    """A case folder whose name would make a hidden output file is refused with one line; nothing is written."""
    hidden = case_dir.rename(case_dir.parent / ".hidden")  # its files keep their names: found by suffix
    out = tmp_path / "out"
    assert _run(["--input", str(hidden)], _bundle(tiny_run_dir), out) == 1
    errors = _error_lines(capsys.readouterr().err)
    assert errors == ["error: .hidden: bad case id '.hidden': must not start with '.'"]
    assert not out.exists() or not any(out.iterdir())


def test_old_output_spelling_is_refused(case_dir: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    argv = ["--input", str(case_dir), *_bundle(tiny_run_dir), "--output", str(tmp_path / "old"), "--device", "cpu"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "--output-dir" in capsys.readouterr().err
    assert not (tmp_path / "old").exists()


def test_output_dir_is_required_and_hidden_alias_not_in_help(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exc:
        main(["--input", "i", "--bundle", "b"])
    assert exc.value.code == 2
    assert "the following arguments are required: --output-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "--output-dir" in text and "--output " not in text and "--output\n" not in text


def _run_with_rules(run_dir: Path, tmp_path: Path, rules: dict | None) -> Path:
    """A writable copy of a run whose configs/inference.json holds ``rules`` as its postprocessing_rules."""
    import json

    copy = Path(shutil.copytree(run_dir, tmp_path / f"run{len(list(tmp_path.glob('run*')))}"))
    if rules is not None:
        config_path = copy / "configs" / "inference.json"
        config = json.loads(config_path.read_text())
        config["postprocessing_rules"] = rules
        config_path.write_text(json.dumps(config))
    return copy


def test_postprocess_applies_the_run_config_rules(case_dir: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    from brats_cggm.brats.inference.postprocessing import postprocess_labels

    def labels(path: Path) -> np.ndarray:
        return np.asanyarray(nib.load(str(path)).dataobj)

    assert _run(["--input", str(case_dir)], _bundle(tiny_run_dir), tmp_path / "raw") == 0
    raw = labels(tmp_path / "raw" / f"{CASE}.nii.gz")
    assert raw.any()  # the tiny network predicts some tumour: the rules have something to act on
    # --postprocess without rules in the config: one error line, nothing segmented
    assert _run(["--input", str(case_dir)], _bundle(tiny_run_dir), tmp_path / "none", "--postprocess") == 1
    err = capsys.readouterr().err
    assert "no postprocessing_rules entry" in err and "brats-cggm-fit-postprocessing" in err
    assert not (tmp_path / "none").exists()

    rules = {"min_component_size": {"wt": 30.0, "et": 5.0}, "min_enhancing_size": 40.0, "unit": "voxels"}
    run = _run_with_rules(tiny_run_dir, tmp_path, rules)
    assert _run(["--input", str(case_dir)], _bundle(run), tmp_path / "pp", "--postprocess") == 0
    assert '"min_component_size": {"wt": 30.0, "et": 5.0}' in capsys.readouterr().out
    expected = postprocess_labels(raw, "brats2021", {"wt": 30.0, "et": 5.0}, 40.0, "voxels")
    np.testing.assert_array_equal(labels(tmp_path / "pp" / f"{CASE}.nii.gz"), expected)
    # without --postprocess the rules of the config are not applied
    assert _run(["--input", str(case_dir)], _bundle(run), tmp_path / "off") == 0
    np.testing.assert_array_equal(labels(tmp_path / "off" / f"{CASE}.nii.gz"), raw)
    # every component smaller than the volume: nothing left
    everything = _run_with_rules(tiny_run_dir, tmp_path, {"min_component_size": {"wt": 1e9}, "unit": "mm3"})
    assert _run(["--input", str(case_dir)], _bundle(everything), tmp_path / "all", "--postprocess") == 0
    assert not labels(tmp_path / "all" / f"{CASE}.nii.gz").any()


def test_postprocess_bad_rules_name_the_config(case_dir: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    run = _run_with_rules(tiny_run_dir, tmp_path, {"min_component_size": {"ed": 10}})
    assert _run(["--input", str(case_dir)], _bundle(run), tmp_path / "out", "--postprocess") == 1
    err = capsys.readouterr().err
    assert str(run / "configs" / "inference.json") in err and "unknown regions ['ed']" in err


def test_a_crafted_checkpoint_is_refused_without_unsafe_advice(
    case_dir: Path, tiny_run_dir: Path, tmp_path: Path, capsys
):
    crafted = code_running_checkpoint(tmp_path / "crafted.pt", tmp_path / "code_ran", network={})
    out = tmp_path / "out"
    assert _run(["--input", str(case_dir)], [*_bundle(tiny_run_dir), "--checkpoint", str(crafted)], out) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {crafted}: refused, it holds more than tensors and plain types")
    assert unsafe_advice(err) == [] and not (tmp_path / "code_ran").exists() and not out.exists()


def test_duplicate_case_ids_are_refused_before_any_work(msd_dataset: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    # two dataset.json entries imagesTr/a/BRATS_001.nii.gz and imagesTr/b/BRATS_001.nii.gz: one output file
    root, first, second = msd_with_duplicate_ids(msd_dataset, tmp_path / "msd")
    out = tmp_path / "out"
    assert _run(["--input", str(root)], _bundle(tiny_run_dir), out) == 1
    err = capsys.readouterr().err
    assert f"duplicate case id 'BRATS_001': {first} and {second}" in err and not out.exists()
    # a folder of 4-D files holding x.nii and x.nii.gz
    folder = tmp_path / "files"
    folder.mkdir()
    shutil.copy(root / "imagesTr" / "BRATS_003.nii.gz", folder / "BRATS_003.nii.gz")
    nib.save(nib.load(str(folder / "BRATS_003.nii.gz")), str(folder / "BRATS_003.nii"))
    assert _run(["--input", str(folder)], _bundle(tiny_run_dir), out) == 1
    err = capsys.readouterr().err
    assert f"duplicate case id 'BRATS_003': {folder / 'BRATS_003.nii'} and {folder / 'BRATS_003.nii.gz'}" in err
    # a name template without {case_id} gives every case one file
    images = msd_dataset / "imagesTr"
    assert _run(["--input", str(images)], _bundle(tiny_run_dir), out, "--name-template", "seg.nii.gz") == 1
    expected = f"duplicate output file 'seg.nii.gz': {images / 'BRATS_001.nii.gz'} and {images / 'BRATS_002.nii.gz'}"
    assert f"--name-template 'seg.nii.gz': {expected}" in capsys.readouterr().err
    assert not out.exists()


def test_an_msd_entry_outside_its_folder_is_warned_about(msd_dataset: Path, tiny_run_dir: Path, tmp_path: Path, capsys):
    root, outside = msd_with_outside_entry(msd_dataset, tmp_path)
    # a template giving the cases one file stops the run after discovery, before anything is segmented
    assert _run(["--input", str(root)], _bundle(tiny_run_dir), tmp_path / "out", "--name-template", "x.nii.gz") == 1
    err = capsys.readouterr().err
    assert f"warning: 1 case(s) read from outside the data set folder {root}: {outside}" in err


def _outputs(out: Path) -> dict[str, bytes]:
    """The bytes of every output file; the records' ``inputs`` and output names are the same in both runs."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_pipelined_folder_writes_what_the_case_loop_writes(
    phantom_dataset: Path, tiny_run_dir: Path, tmp_path: Path, capsys
):
    model = [*_bundle(tiny_run_dir), "--save-probabilities"]
    runs = {}
    for workers in ("0", "2"):
        out = tmp_path / f"out_{workers}"
        assert _run(["--input", str(phantom_dataset)], model, out, "--workers", workers) == 0
        runs[workers] = (_outputs(out), capsys.readouterr().out)
    assert len(runs["0"][0]) == 4 * 3
    assert runs["2"][0] == runs["0"][0]  # label maps, probabilities and JSON records, byte for byte
    for workers, (_, log) in runs.items():
        lines = [line for line in log.splitlines() if line.startswith("[")]
        assert [line.split(":")[0] for line in lines] == [f"[{i}/4] BraTS2021_0000{i - 1}" for i in range(1, 5)]
        for line in lines:  # every stage timed, none negative
            stages = dict(part.rsplit(" ", 1) for part in line.split("(", 1)[1].split(")")[0].split(", "))
            assert list(stages) == ["read", "check", "preprocess", "network", "invert", "postprocess", "write"]
            assert all(float(s) >= 0.0 for s in stages.values()), (workers, line)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_bad_case_in_the_middle_fails_alone(
    workers: str, phantom_dataset: Path, tiny_run_dir: Path, tmp_path: Path, capsys
):
    batch = tmp_path / "batch"
    cases = [f"BraTS2021_0000{i}" for i in range(4)]
    for case in cases:
        shutil.copytree(phantom_dataset / case, batch / case)
    _corrupt(batch / cases[1] / f"{cases[1]}_t2.nii.gz")
    _with_nan(batch / cases[2] / f"{cases[2]}_flair.nii.gz")
    out = tmp_path / "out"
    assert _run(["--input", str(batch)], _bundle(tiny_run_dir), out, "--workers", workers) == 1
    log = capsys.readouterr()
    assert "summary: 2 segmented, 2 failed" in log.out
    errors = _error_lines(log.err)
    assert len(errors) == 2 and errors[0].startswith(f"error: {cases[1]}: ") and "corrupt gzip" in errors[0]
    assert errors[1].startswith(f"error: {cases[2]}: ")
    assert f"[4/4] {cases[3]}:" in log.out
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"{c}{ext}" for c in (cases[0], cases[3]) for ext in (".json", ".nii.gz")]


def test_workers_must_not_be_negative(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exc:
        main(["--input", "x", "--bundle", "b", "--output-dir", "o", "--workers", "-1"])
    assert exc.value.code == 2 and "--workers: must be at least 0" in capsys.readouterr().err


def test_reports_are_the_pipelines_and_never_a_failed_cases(
    phantom_dataset: Path, tiny_run_dir: Path, tmp_path: Path, capsys
):
    jsonschema = pytest.importorskip("jsonschema")
    image = pytest.importorskip("PIL.Image")
    from brats_cggm.brats.reporting.case_report import SCHEMA_FILE
    from brats_cggm.brats.reporting.overlay import overlay_size

    batch = tmp_path / "batch"
    cases = [f"BraTS2021_0000{i}" for i in range(3)]
    for case in cases:
        shutil.copytree(phantom_dataset / case, batch / case)
    _corrupt(batch / cases[1] / f"{cases[1]}_t2.nii.gz")
    runs = {}
    for workers in ("0", "2"):
        out = tmp_path / f"out_{workers}"
        assert _run(["--input", str(batch)], _bundle(tiny_run_dir), out, "--workers", workers, "--report") == 1
        runs[workers] = _outputs(out)
        runs[workers]["index.html"] = runs[workers]["index.html"].replace(out.name.encode(), b"OUT")  # the title
    assert "corrupt gzip" in capsys.readouterr().err
    assert runs["2"] == runs["0"]  # label maps, records with their reports and pictures, byte for byte
    reports = [f"{c}{ext}" for c in (cases[0], cases[2]) for ext in (".json", ".nii.gz", ".png")]
    assert sorted(runs["0"]) == [*reports, "index.html"]
    page = runs["0"]["index.html"].decode()
    assert cases[0] in page and cases[2] in page and cases[1] not in page
    schema = json.loads(SCHEMA_FILE.read_text())
    weights = hashlib.sha256((tiny_run_dir / "models" / "model.pt").read_bytes()).hexdigest()
    for case in (cases[0], cases[2]):
        record = json.loads(runs["0"][f"{case}.json"])
        jsonschema.validate(record, schema)
        assert record["report_version"] == 1 and record["overlay"] == f"{case}.png"
        assert record["model_details"]["weights_sha256"] == weights
        segmentation = nib.load(str(tmp_path / "out_0" / f"{case}.nii.gz"))
        labels = np.asarray(segmentation.dataobj)
        voxel_ml = float(np.prod(segmentation.header.get_zooms()[:3])) / 1000
        assert record["regions"]["WT"]["volume_ml"] == pytest.approx(np.count_nonzero(labels) * voxel_ml)
        assert "non_brain_field_of_view" in [f["name"] for f in record["flags"]]  # a 32 mm phantom is no head
        assert image.open(tmp_path / "out_0" / f"{case}.png").size == overlay_size()


def test_no_report_writes_no_picture_and_a_report_follows_the_overwrite_rules(
    case_dir: Path, tiny_run_dir: Path, tmp_path: Path, capsys
):
    pytest.importorskip("PIL")
    out = tmp_path / "out"
    assert _run(["--input", str(case_dir)], _bundle(tiny_run_dir), out, "--no-report") == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{CASE}.json", f"{CASE}.nii.gz"]
    assert "report_version" not in json.loads((out / f"{CASE}.json").read_text())
    assert _run(["--input", str(case_dir)], _bundle(tiny_run_dir), out, "--report") == 1
    assert f"{out / CASE}.nii.gz: exists; pass --overwrite" in capsys.readouterr().err
    assert not (out / f"{CASE}.png").exists()
    assert _run(["--input", str(case_dir)], _bundle(tiny_run_dir), out, "--report", "--overwrite") == 0
    assert json.loads((out / f"{CASE}.json").read_text())["overlay"] == f"{CASE}.png"
    assert (out / f"{CASE}.png").is_file() and CASE in (out / "index.html").read_text()
    capsys.readouterr()
    page_written = (out / "index.html").stat().st_mtime_ns
    assert _run(["--input", str(case_dir)], _bundle(tiny_run_dir), out, "--report") == 1
    assert f"{out / 'index.html'}: exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "index.html").stat().st_mtime_ns == page_written


def test_report_without_pillow_fails_before_any_work(case_dir: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "PIL.ImageDraw", None)
    out = tmp_path / "out"
    assert _run(["--input", str(case_dir)], ["--bundle", str(tmp_path / "no_bundle")], out, "--report") == 1
    assert "needs Pillow: pip install Pillow" in capsys.readouterr().err
    assert not out.exists()


def test_a_case_whose_report_fails_leaves_no_file(
    case_dir: Path, tiny_run_dir: Path, tmp_path: Path, monkeypatch, capsys
):
    def broken_report(*args, **kwargs):
        raise RuntimeError("report broke")

    monkeypatch.setattr("brats_cggm.brats.inference.folder.build_report", broken_report)
    out = tmp_path / "out"
    assert _run(["--input", str(case_dir)], _bundle(tiny_run_dir), out, "--report", "--save-probabilities") == 1
    assert f"error: {CASE}: RuntimeError: report broke" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_report_of_an_msd_4d_file_shows_its_channels(msd_dataset: Path, tiny_run_dir: Path, tmp_path: Path):
    pytest.importorskip("PIL")
    image = msd_dataset / "imagesTr" / "BRATS_001.nii.gz"
    out = tmp_path / "out"
    assert _run(["--input", str(image)], _bundle(tiny_run_dir), out, "--report", "--labels", "brats2023") == 0
    record = json.loads((out / "BRATS_001.json").read_text())
    data = np.asarray(nib.load(str(image)).dataobj)
    # MSD channels are FLAIR, T1w, T1gd, T2w: the record's t1ce is channel 2
    assert record["intensities"]["t1ce"]["max"] == pytest.approx(float(data[..., 2].max()))
    assert record["intensities"]["flair"]["max"] == pytest.approx(float(data[..., 0].max()))
    assert list(record["regions"]) == ["ET", "TC", "WT", "NETC", "SNFH", "RC"]
    assert record["regions"]["RC"]["volume_ml"] == 0.0 and (out / "BRATS_001.png").is_file()
