"""The BraTS bundle's inference and evaluation configs through ``monai.bundle``, and its exports.

``inference.yaml`` / ``evaluate.yaml`` run through ``monai.bundle.run`` (what ``python -m monai.bundle run``
calls) on a training ``output_dir``; ``verify_net_in_out`` and ``ckpt_export`` work on the inference network,
and the exported TorchScript file segments like the eager network through ``brats-cggm-infer``.
"""

from __future__ import annotations

import csv
import functools
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from monai.bundle import ckpt_export, verify_net_in_out
from monai.bundle import run as bundle_run

from brats_cggm.brats.data.discovery import discover_dataset
from brats_cggm.brats.data.splits import split_datalist
from brats_cggm.brats.model import build_network
from brats_cggm.cli.infer import main as infer_main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "brats_cggm" / "configs"
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.(save|load|trace)` is deprecated"),
    # MONAI's notice that configs can run code: these are the repository's own
    pytest.mark.filterwarnings("ignore:parsing config_file"),
]


def _labels(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def _run_config(run_dir: Path) -> str:
    return str(run_dir / "configs" / "inference.json")


def _messages(error: BaseException | None) -> str:
    text = ""
    while error is not None:
        text += f"{error}\n"
        error = error.__cause__ or error.__context__
    return text


@pytest.fixture(scope="module")
def two_cases(phantom_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two phantom cases (BraTS layout, with labels). Read-only."""
    root = tmp_path_factory.mktemp("two") / "brats"
    for case in ("BraTS2021_00000", "BraTS2021_00001"):
        shutil.copytree(phantom_dataset / case, root / case)
    return root


def test_inference_yaml_on_a_run_dir_matches_the_cli(two_cases: Path, tiny_run_dir: Path, tmp_path: Path):
    bundle_out, cli_out = tmp_path / "bundle", tmp_path / "cli"
    run_inference = functools.partial(
        bundle_run,
        config_file=[str(CONFIGS / "inference.yaml"), _run_config(tiny_run_dir)],
        meta_file=META,
        logging_file=LOGGING,
        bundle_root=str(tiny_run_dir),
        dataset_dir=str(two_cases),
        output_dir=str(bundle_out),
        device="cpu",
    )
    run_inference()
    cases = sorted(p.name for p in two_cases.iterdir())
    # each segmentation with its record of the sequences used
    expected_files = sorted(f"{c}{ext}" for c in cases for ext in (".json", ".nii.gz"))
    assert sorted(p.name for p in bundle_out.iterdir()) == expected_files
    cli = ["--input", str(two_cases), "--bundle", str(tiny_run_dir), "--output-dir", str(cli_out), "--device", "cpu"]
    assert infer_main(cli) == 0
    for case in cases:
        written = nib.load(str(bundle_out / f"{case}.nii.gz"))
        reference = nib.load(str(two_cases / case / f"{case}_flair.nii.gz"))
        assert written.shape == reference.shape and written.get_data_dtype() == np.uint8
        np.testing.assert_allclose(written.affine, reference.affine)
        # same preprocessing, window and postprocessing: the same labels as the command line tool
        np.testing.assert_array_equal(_labels(bundle_out / f"{case}.nii.gz"), _labels(cli_out / f"{case}.nii.gz"))

    # a second run does not overwrite the predictions unless told to
    with pytest.raises(Exception) as excinfo:
        run_inference()
    assert f"{bundle_out / cases[0]}.nii.gz: exists; pass --overwrite" in _messages(excinfo.value)


# evaluate.yaml on inference.yaml (the README's command) or on train.yaml (as the MONAI Model Zoo composes it)
@pytest.mark.parametrize(
    ("base", "split"), [("inference", "all"), ("inference", "validation"), ("train", "validation")]
)
def test_evaluate_yaml_writes_per_case_metrics(
    two_cases: Path, tiny_run_dir: Path, tmp_path: Path, base: str, split: str
):
    out = tmp_path / "eval"
    bundle_run(
        config_file=[str(CONFIGS / f"{base}.yaml"), str(CONFIGS / "evaluate.yaml"), _run_config(tiny_run_dir)],
        meta_file=META,
        logging_file=LOGGING,
        bundle_root=str(tiny_run_dir),
        dataset_dir=str(two_cases),
        output_dir=str(out),
        eval_split=split,
        device="cpu",
    )
    items = discover_dataset(two_cases).items
    expected = items if split == "all" else split_datalist(items, val_fraction=0.2, seed=0)[1]
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == sorted(i["case_id"] for i in expected)
    for row in rows:
        assert row["status"] == "ok"
        for region in ("et", "tc", "wt"):
            assert 0.0 <= float(row[f"dice_{region}"]) <= 1.0
            assert float(row[f"hd95_{region}"]) >= 0.0
    summary = json.loads((out / "metrics_summary.json").read_text())
    assert summary["n_evaluated"] == len(expected)
    dice_wt = [float(r["dice_wt"]) for r in rows]
    assert summary["metrics"]["dice_wt"]["mean"] == pytest.approx(np.mean(dice_wt), abs=1e-5)
    # each segmentation with its record of the sequences used
    written = sorted(p.name for p in (out / "predictions").iterdir())
    assert written == sorted(f"{r['case_id']}{ext}" for r in rows for ext in (".json", ".nii.gz"))


def test_verify_net_in_out(tiny_run_dir: Path):
    # the bundle's own network, and the network of a training run
    verify_net_in_out(net_id="network_def", meta_file=META, config_file=str(CONFIGS / "inference.yaml"), device="cpu")
    verify_net_in_out(
        net_id="network_def",
        meta_file=META,
        config_file=[str(CONFIGS / "inference.yaml"), _run_config(tiny_run_dir)],
        device="cpu",
    )
    with pytest.raises(ValueError, match="output channel number"):
        verify_net_in_out(
            net_id="network_def",
            meta_file=META,
            config_file=[str(CONFIGS / "inference.yaml"), _run_config(tiny_run_dir)],
            device="cpu",
            **{"_meta_#network_data_format#outputs#pred#num_channels": 4},
        )


def test_ckpt_export_of_a_run_and_torchscript_inference(two_cases: Path, tiny_run_dir: Path, tmp_path: Path):
    ts = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(tiny_run_dir / "models" / "checkpoint.pt"),
        key_in_ckpt="network",
        meta_file=META,
        config_file=_run_config(tiny_run_dir),
    )
    scripted = torch.jit.load(str(ts))
    eager = build_network("cpu", features=(4, 8, 16))
    eager.load_state_dict(torch.load(tiny_run_dir / "models" / "model.pt", weights_only=True))
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager.eval()(x))

    # brats-cggm-infer --torchscript: settings from the embedded config, the same labels as --bundle
    case = two_cases / "BraTS2021_00001"
    assert infer_main(["--input", str(case), "--torchscript", str(ts), "--output-dir", str(tmp_path / "ts")]) == 0
    assert (
        infer_main(["--input", str(case), "--bundle", str(tiny_run_dir), "--output-dir", str(tmp_path / "eager")]) == 0
    )
    name = "BraTS2021_00001.nii.gz"
    np.testing.assert_array_equal(_labels(tmp_path / "ts" / name), _labels(tmp_path / "eager" / name))


@pytest.mark.slow
def test_ckpt_export_of_the_bundle_folder(two_cases: Path, tmp_path: Path):
    """A bundle folder (the configs plus models/model.pt) exports with its own inference.yaml embedded."""
    bundle = tmp_path / "brats_cggm"
    shutil.copytree(CONFIGS, bundle / "configs")
    (bundle / "models").mkdir()
    torch.manual_seed(1)
    torch.save(build_network("cpu").state_dict(), bundle / "models" / "model.pt")
    ckpt_export(
        net_id="network_def",
        bundle_root=str(bundle),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.yaml"),
    )
    ts = bundle / "models" / "model.ts"
    assert ts.is_file()
    case = two_cases / "BraTS2021_00000"
    out_ts, out_bundle = tmp_path / "ts", tmp_path / "bundle_out"
    assert infer_main(["--input", str(case), "--torchscript", str(ts), "--output-dir", str(out_ts)]) == 0
    assert infer_main(["--input", str(case), "--bundle", str(bundle), "--output-dir", str(out_bundle)]) == 0
    name = "BraTS2021_00000.nii.gz"
    np.testing.assert_array_equal(_labels(out_ts / name), _labels(out_bundle / name))


@pytest.mark.slow
def test_train_then_infer_on_the_output_dir(tmp_path: Path):
    """train.yaml writes configs/inference.json: its output_dir works as --bundle and as bundle_root."""
    output_dir = tmp_path / "run"
    phantoms = tmp_path / "phantoms"
    bundle_run(
        config_file=str(CONFIGS / "train.yaml"),
        meta_file=META,
        logging_file=LOGGING,
        output_dir=str(output_dir),
        phantom_dir=str(phantoms),
        phantoms={"n": 3, "shape": [32, 32, 32], "seed": 0},
        max_epochs=1,
        val_interval=1,
        patch_size=[16, 16, 16],
        num_samples=1,
        device="cpu",
        **{"network_def#features": [4, 8, 16]},
    )
    run_config = json.loads((output_dir / "configs" / "inference.json").read_text())
    assert run_config["patch_size"] == [16, 16, 16] and run_config["network_def"]["features"] == [4, 8, 16]
    assert run_config["data_options"]["pixdim"] == [1.0, 1.0, 1.0]  # inference resamples as training did
    assert (output_dir / "models" / "model.pt").is_file()
    bundle_run(
        config_file=[str(CONFIGS / "inference.yaml"), str(output_dir / "configs" / "inference.json")],
        meta_file=META,
        logging_file=LOGGING,
        bundle_root=str(output_dir),
        dataset_dir=str(phantoms),
        output_dir=str(tmp_path / "bundle_out"),
        device="cpu",
    )
    cli_out = tmp_path / "cli"
    cli = ["--input", str(phantoms), "--bundle", str(output_dir), "--output-dir", str(cli_out), "--device", "cpu"]
    assert infer_main(cli) == 0
    for case in sorted(p.name for p in phantoms.iterdir() if p.is_dir()):
        a, b = tmp_path / "bundle_out" / f"{case}.nii.gz", cli_out / f"{case}.nii.gz"
        np.testing.assert_array_equal(_labels(a), _labels(b))


# ------------------------------------------------------------------------------------ voxel spacing

#: A thick-slice acquisition (0.5 x 0.5 x 5 mm), LPS, slightly oblique.
THICK_SLICE_AFFINE = np.array(
    [[-0.5, 0.0, 0.0, 12.0], [0.0, -0.49, 0.5, -9.0], [0.0, 0.05, 4.97, 3.0], [0.0, 0.0, 0.0, 1.0]]
)


def _thick_slice_cases(root: Path, n: int = 1) -> Path:
    """BraTS-layout cases of 40 x 40 x 8 voxels at 0.5 x 0.5 x 5 mm (a head, a tumour box, its labels)."""
    for i in range(n):
        case = f"Thick_{i:03d}"
        (root / case).mkdir(parents=True)
        head = np.zeros((40, 40, 8), np.float32)
        head[4:36, 4:36, 1:7] = 100.0
        seg = np.zeros(head.shape, np.uint8)
        seg[12:28, 10:26, 2:6] = 2
        seg[16:24, 14:22, 3:5] = 1
        seg[18:22, 16:20, 3:5] = 4
        for k, m in enumerate(("flair", "t1ce", "t1", "t2")):
            image = head + 300.0 * np.isin(seg, ((1, 2, 4), (1, 4), (4,), (2,))[k]) + k
            nib.save(nib.Nifti1Image(image * (head > 0), THICK_SLICE_AFFINE), str(root / case / f"{case}_{m}.nii.gz"))
        nib.save(nib.Nifti1Image(seg, THICK_SLICE_AFFINE), str(root / case / f"{case}_seg.nii.gz"))
    return root


def _spacing(image) -> np.ndarray:
    return np.asarray(image.pixdim, dtype=np.float64)


def test_training_resamples_to_1mm(tmp_path: Path):
    """train.yaml brings image and label of a 0.5 x 0.5 x 5 mm case to 1 mm before the network sees them."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser["dataset_dir"] = str(_thick_slice_cases(tmp_path / "data"))
    assert parser.get_parsed_content("data_options#pixdim") == [1.0, 1.0, 1.0]
    item = parser.get_parsed_content("dataset").items[0]
    validation = parser.get_parsed_content("validate#preprocessing")(item)
    for key in ("image", "label"):
        np.testing.assert_allclose(_spacing(validation[key]), 1.0, atol=1e-6)
    assert validation["image"].shape[1:] == validation["label"].shape[1:]
    # 16 x 16 x 4 voxels of whole tumour at 0.5 x 0.5 x 5 mm: about 8 x 8 x 20 at 1 mm
    assert 0.7 < float(validation["label"][1].sum()) / (8 * 8 * 20) < 1.3
    patches = parser.get_parsed_content("train#preprocessing")(item)
    for patch in patches:
        assert tuple(patch["image"].shape[1:]) == tuple(parser.get_parsed_content("patch_size"))
        np.testing.assert_allclose(_spacing(patch["image"]), 1.0, atol=1e-6)


def test_inference_yaml_resamples_to_1mm_by_default(tmp_path: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.yaml"))
    parser["dataset_dir"] = str(_thick_slice_cases(tmp_path / "data"))
    item = parser.get_parsed_content("dataset_data")[0]
    image = parser.get_parsed_content("preprocessing")(item)["image"]
    np.testing.assert_allclose(_spacing(image), 1.0, atol=1e-6)


def test_thick_slices_through_inference_yaml_and_the_cli(tiny_run_dir: Path, tmp_path: Path):
    """A run that stored pixdim: the bundle and the CLI resample alike, and write on the input's grid."""
    run = Path(shutil.copytree(tiny_run_dir, tmp_path / "run"))
    config = json.loads((run / "configs" / "inference.json").read_text())
    config["data_options"]["pixdim"] = [1.0, 1.0, 1.0]
    (run / "configs" / "inference.json").write_text(json.dumps(config))
    data = _thick_slice_cases(tmp_path / "data")
    bundle_out, cli_out = tmp_path / "bundle", tmp_path / "cli"
    bundle_run(
        config_file=[str(CONFIGS / "inference.yaml"), _run_config(run)],
        meta_file=META,
        logging_file=LOGGING,
        bundle_root=str(run),
        dataset_dir=str(data),
        output_dir=str(bundle_out),
        device="cpu",
    )
    assert (
        infer_main(["--input", str(data), "--bundle", str(run), "--output-dir", str(cli_out), "--device", "cpu"]) == 0
    )
    reference = nib.load(str(data / "Thick_000" / "Thick_000_flair.nii.gz"))
    for out in (bundle_out, cli_out):
        written = nib.load(str(out / "Thick_000.nii.gz"))
        assert written.shape == reference.shape
        for getter in ("get_qform", "get_sform"):
            np.testing.assert_allclose(getattr(written.header, getter)(), getattr(reference.header, getter)())
    np.testing.assert_array_equal(_labels(bundle_out / "Thick_000.nii.gz"), _labels(cli_out / "Thick_000.nii.gz"))


def test_evaluate_yaml_repeats_inference_yaml_keys_unchanged():
    # evaluate.yaml carries inference.yaml's pipeline so that it also composes with train.yaml: the same values
    inference = yaml.safe_load((CONFIGS / "inference.yaml").read_text())
    evaluate = yaml.safe_load((CONFIGS / "evaluate.yaml").read_text())
    own = {"output_dir", "datalist", "dataset_data", "dataloader", "postprocessing", "run", "finalize", "+imports"}
    for key in (set(inference) & set(evaluate)) - own:
        assert evaluate[key] == inference[key], key
    # the differences: predictions to prediction_dir, the data set under a name train.yaml does not use
    assert evaluate["dataloader"] == {**inference["dataloader"], "dataset": "@eval_dataset"}
    assert evaluate["eval_dataset"] == inference["dataset"]
    saver = {**inference["postprocessing"]["transforms"][2], "output_dir": "@prediction_dir"}
    assert evaluate["postprocessing"]["transforms"] == [*inference["postprocessing"]["transforms"][:2], saver]
    missing = {"ckpt_path", "preprocessing", "inferer", "handlers", "evaluator", "data_options"} - set(evaluate)
    assert not missing
    imports = {line.split()[-1] for line in inference["imports"]}
    assert imports <= {line.split()[-1] for line in evaluate["+imports"]} | {
        "bundle_dataset_dir",
        "resolve_dataset_dir",
        "resolve_device",
    }
