"""The bundle's ``inference.yaml`` on cases lacking a modality file: its ``missing_modality`` key.

``error`` (default) refuses before segmenting anything; ``drop`` predicts from the sequences present through
the availability mask, as ``brats-cggm-infer --missing-modality drop``; ``zero`` gives the plain network zeros.
Each output has its record of the sequences used, in the NIfTI ``descrip`` and in a JSON file beside it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import run as bundle_run
from monai.data import MetaTensor

from brats_cggm.brats.data.discovery import discover_dataset
from brats_cggm.brats.inference.model_loading import save_run_config
from brats_cggm.brats.inference.segmenter import (
    AVAILABLE_META_KEY,
    InsertZeroChannelsd,
    MissingModalityInferer,
    inference_items,
)
from brats_cggm.brats.model import AvailabilityPredictor, MultiEncoderUNet
from brats_cggm.cli.infer import main as infer_main
from tests.helpers.bundle_runs import error_messages
from tests.helpers.inference_cases import MODALITIES, ROI, write_brats_case
from tests.helpers.tiny_setup import trained_norms

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "brats_cggm" / "configs"
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file")


def _network() -> MultiEncoderUNet:
    torch.manual_seed(0)
    return trained_norms(MultiEncoderUNet(MODALITIES, features=(4, 8, 16)).eval())


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle folder: ``configs/inference.json`` and ``models/model.pt`` of a small random network."""
    root = tmp_path_factory.mktemp("bundle")
    network = _network()
    save_run_config(root, network, {"pixdim": [1.0, 1.0, 1.0]}, roi_size=ROI, sw_batch_size=8)
    (root / "models").mkdir()
    torch.save(network.state_dict(), root / "models" / "model.pt")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two cases, ``b`` without its t1ce file."""
    root = tmp_path_factory.mktemp("cases")
    write_brats_case(root, "a", "ras")
    write_brats_case(root, "b", "oblique", skip=("t1ce",))
    return root


def _run(bundle_dir: Path, dataset: Path, output_dir: Path, **overrides) -> None:
    bundle_run(
        config_file=[str(CONFIGS / "inference.yaml"), str(bundle_dir / "configs" / "inference.json")],
        meta_file=META,
        logging_file=LOGGING,
        bundle_root=str(bundle_dir),
        dataset_dir=str(dataset),
        output_dir=str(output_dir),
        device="cpu",
        **overrides,
    )


def _labels(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def test_error_is_the_default_and_names_the_file_and_the_key(bundle_dir: Path, dataset: Path, tmp_path: Path):
    out = tmp_path / "out"
    with pytest.raises(Exception) as excinfo:
        _run(bundle_dir, dataset, out)
    message = error_messages(excinfo.value)
    assert f"b: no t1ce file (expected {dataset / 'b' / 'b_t1ce.nii.gz'})" in message
    assert "--missing_modality drop" in message
    assert not out.exists() or not any(out.iterdir())


def test_drop_segments_every_case_as_the_cli_does(bundle_dir: Path, dataset: Path, tmp_path: Path):
    out, cli_out = tmp_path / "bundle", tmp_path / "cli"
    _run(bundle_dir, dataset, out, missing_modality="drop")
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.nii.gz", "b.json", "b.nii.gz"]
    record = json.loads((out / "b.json").read_text())
    assert record["case_id"] == "b" and record["segmentation"] == "b.nii.gz"
    assert record["modalities_used"] == ["flair", "t1", "t2"] and record["modalities_missing"] == ["t1ce"]
    assert record["missing_modality"] == "drop"
    assert record["inputs"] == [str(dataset / "b" / f"b_{m}.nii.gz") for m in ("flair", "t1", "t2")]
    assert nib.load(str(out / "b.nii.gz")).header["descrip"].tobytes().rstrip(b"\0") == (
        b"brats-cggm seq=flair,t1,t2 (t1ce missing: drop)"
    )
    assert json.loads((out / "a.json").read_text())["modalities_missing"] == []

    cli = ["--input", str(dataset), "--bundle", str(bundle_dir), "--output-dir", str(cli_out), "--device", "cpu"]
    assert infer_main([*cli, "--missing-modality", "drop"]) == 0
    for case in ("a", "b"):
        np.testing.assert_array_equal(_labels(out / f"{case}.nii.gz"), _labels(cli_out / f"{case}.nii.gz"))
        cli_record = json.loads((cli_out / f"{case}.json").read_text())
        bundle_record = json.loads((out / f"{case}.json").read_text())
        for key in ("modalities_used", "modalities_missing", "missing_modality", "inputs"):
            assert bundle_record[key] == cli_record[key]


def test_report_key_writes_the_clis_report(bundle_dir: Path, dataset: Path, tmp_path: Path):
    jsonschema = pytest.importorskip("jsonschema")
    image = pytest.importorskip("PIL.Image")
    from brats_cggm.brats.reporting.case_report import SCHEMA_FILE
    from brats_cggm.brats.reporting.overlay import overlay_size

    out, cli_out = tmp_path / "bundle", tmp_path / "cli"
    _run(bundle_dir, dataset, out, missing_modality="drop", report=True)
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.nii.gz", "a.png", "b.json", "b.nii.gz", "b.png"]
    cli = ["--input", str(dataset), "--bundle", str(bundle_dir), "--output-dir", str(cli_out), "--device", "cpu"]
    assert infer_main([*cli, "--missing-modality", "drop", "--report"]) == 0
    schema = json.loads(SCHEMA_FILE.read_text())
    for case in ("a", "b"):
        bundle_record = json.loads((out / f"{case}.json").read_text())
        cli_record = json.loads((cli_out / f"{case}.json").read_text())
        jsonschema.validate(bundle_record, schema)
        for key in ("regions", "grid", "intensities", "flags", "overlay", "report_version"):
            assert bundle_record[key] == cli_record[key], key
        assert bundle_record["model_details"]["weights_sha256"] == cli_record["model_details"]["weights_sha256"]
        assert (out / f"{case}.png").read_bytes() == (cli_out / f"{case}.png").read_bytes()
        assert image.open(out / f"{case}.png").size == overlay_size()
    assert "missing_sequences" in [f["name"] for f in json.loads((out / "b.json").read_text())["flags"]]


def test_zero_runs_the_plain_network(bundle_dir: Path, dataset: Path, tmp_path: Path):
    out = tmp_path / "zero"
    run = functools.partial(_run, bundle_dir, dataset, out, missing_modality="zero")
    run()
    assert json.loads((out / "b.json").read_text())["missing_modality"] == "zero"
    assert b"(t1ce missing: zero)" in nib.load(str(out / "b.nii.gz")).header["descrip"].tobytes()


def test_inferer_masks_only_under_drop():
    network = _network()
    x = MetaTensor(torch.randn(1, 4, 16, 16, 16))
    x[:, 1] = 0
    x.meta[AVAILABLE_META_KEY] = torch.tensor([[True, False, True, True]])
    drop = MissingModalityInferer(ROI, missing_modality="drop")
    predictor = drop.predictor(x, network)
    assert isinstance(predictor, AvailabilityPredictor) and predictor.present == (0, 2, 3)
    with torch.no_grad():
        expected = network.forward_features(x.as_tensor(), available=x.meta[AVAILABLE_META_KEY]).logits
        torch.testing.assert_close(torch.as_tensor(drop(x, network)), expected, atol=1e-5, rtol=1e-5)
    assert MissingModalityInferer(ROI, missing_modality="zero").predictor(x, network) is network
    x.meta[AVAILABLE_META_KEY] = torch.ones(1, 4, dtype=torch.bool)
    assert drop.predictor(x, network) is network
    with pytest.raises(ValueError, match="InsertZeroChannelsd"):
        drop.predictor(torch.zeros(1, 4, 16, 16, 16), network)


def test_zero_channels_from_the_item_and_their_availability():
    image = MetaTensor(torch.ones(3, 2, 2, 2))
    out = InsertZeroChannelsd(keys="image", positions_key="missing")({"image": image, "missing": [1]})["image"]
    assert out.shape == (4, 2, 2, 2) and float(out[1].abs().sum()) == 0.0
    assert out.meta[AVAILABLE_META_KEY].tolist() == [True, False, True, True]
    whole = InsertZeroChannelsd(keys="image", positions_key="missing")({"image": image, "missing": []})["image"]
    assert whole.shape == (3, 2, 2, 2) and bool(whole.meta[AVAILABLE_META_KEY].all())


def test_items_keep_the_present_files_and_refuse_under_error(dataset: Path):
    items = discover_dataset(dataset, MODALITIES, require_label=False, allow_missing_modalities=True).items
    drop = inference_items(items, "drop", MODALITIES)
    assert [i["missing"] for i in drop] == [[], [1]]
    assert drop[1]["image"] == [str(dataset / "b" / f"b_{m}.nii.gz") for m in ("flair", "t1", "t2")]
    with pytest.raises(FileNotFoundError, match=r"b: no t1ce file .*--missing_modality drop"):
        inference_items(items, "error", MODALITIES)
    with pytest.raises(FileNotFoundError, match="has no t1ce file"):
        discover_dataset(dataset, MODALITIES, require_label=False)
