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
