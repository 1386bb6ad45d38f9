"""``inference.yaml`` with post-processing on: the run config's ``postprocessing_rules``, as ``brats-cggm-infer``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import run as bundle_run

from brats_cggm.cli.infer import main as infer_main

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "brats_cggm" / "configs"

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file")

RULES = {"min_component_size": {"wt": 40.0, "et": 3.0}, "min_enhancing_size": 30.0, "unit": "mm3"}


def _labels(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def test_inference_yaml_postprocess_matches_the_cli(phantom_dataset: Path, tiny_run_dir: Path, tmp_path: Path):
    case = "BraTS2021_00000"
    cases = tmp_path / "cases"
    shutil.copytree(phantom_dataset / case, cases / case)
    run = Path(shutil.copytree(tiny_run_dir, tmp_path / "run"))
    config_path = run / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    config["postprocessing_rules"] = RULES
    config_path.write_text(json.dumps(config))

    def bundle(out: Path, postprocess: bool) -> np.ndarray:
        bundle_run(
            config_file=[str(CONFIGS / "inference.yaml"), str(config_path)],
            meta_file=str(CONFIGS / "metadata.json"),
            logging_file=str(CONFIGS / "logging.conf"),
            bundle_root=str(run),
            dataset_dir=str(cases),
            output_dir=str(out),
            device="cpu",
            postprocess=postprocess,
        )
        return _labels(out / f"{case}.nii.gz")

    raw, processed = bundle(tmp_path / "raw", False), bundle(tmp_path / "pp", True)
    assert (
        infer_main(
            ["--input", str(cases), "--bundle", str(run), "--output-dir", str(tmp_path / "cli"), "--device", "cpu"]
        )
        == 0
    )
    argv = ["--input", str(cases), "--bundle", str(run), "--output-dir", str(tmp_path / "cli_pp"), "--postprocess"]
    assert infer_main([*argv, "--device", "cpu"]) == 0
    # off by default: the bundle writes what the command writes without --postprocess; on, what it writes with it
    np.testing.assert_array_equal(raw, _labels(tmp_path / "cli" / f"{case}.nii.gz"))
    np.testing.assert_array_equal(processed, _labels(tmp_path / "cli_pp" / f"{case}.nii.gz"))
    assert not np.array_equal(raw, processed)  # the rules changed something: the comparison above can fail


def test_evaluate_yaml_with_challenge_metrics_and_postprocessing(
    phantom_dataset: Path, tiny_run_dir: Path, tmp_path: Path
):
    import csv

    run = Path(shutil.copytree(tiny_run_dir, tmp_path / "run"))
    config_path = run / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    config["postprocessing_rules"] = RULES
    config_path.write_text(json.dumps(config))
    out = tmp_path / "eval"
    bundle_run(
        config_file=[str(CONFIGS / "inference.yaml"), str(CONFIGS / "evaluate.yaml"), str(config_path)],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(run),
        dataset_dir=str(phantom_dataset),
        output_dir=str(out),
        device="cpu",
        postprocess=True,
        challenge_hd95="pooled",
    )
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["status"] == "ok"  # the validation case of 4 (val_fraction 0.2)
    assert 0.0 <= float(rows[0]["global_dsc_wt"]) <= 1.0 and "lesionwise_penalised_dsc_snfh" in rows[0]
    summary = json.loads((out / "metrics_summary.json").read_text())
    assert summary["hd95"] == "pooled" and summary["regions"] == ["et", "tc", "wt", "netc", "snfh"]
    assert "| WT |" in (out / "metrics.md").read_text()
    # the predictions it evaluated are post-processed: no WT component under 40 mm3 (1 mm voxels)
    from scipy import ndimage

    prediction = _labels(next((out / "predictions").glob("*.nii.gz")))
    components, n = ndimage.label(prediction > 0, np.ones((3, 3, 3)))
    assert n == 0 or np.bincount(components.ravel())[1:].min() >= 40
