"""Inference round trips: cases with non-trivial headers come back with their shape, header and labels.

The network here is a pointwise "threshold" network whose region logits are read off the (normalised)
input, so the exact expected label map is known in the input's voxel grid: any error in orientation,
cropping, padding or inversion misplaces labels and fails the comparison.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from brats_cggm.brats.data import BRATS2023_PATTERNS
from brats_cggm.brats.inference import BratsSegmenter, FlipTTA, InsertZeroChannelsd, stitch_on_cpu
from brats_cggm.brats.inference_io import find_cases, output_path, save_like_reference
from brats_cggm.brats.inference_model import InferenceSettings, load_model, settings_from_config
from brats_cggm.brats.nifti_checks import InputFileError
from brats_cggm.cli.infer import main

SHAPE = (36, 32, 28)  # not a cube: a swapped axis changes the shape
HEAD = np.s_[2:34, 2:30, 2:26]
# Boxes of the three regions (ET in TC in WT), off-centre so that a flip misplaces them.
WT_BOX = np.s_[8:24, 6:20, 5:18]
TC_BOX = np.s_[10:20, 8:16, 7:14]
ET_BOX = np.s_[12:16, 9:13, 8:12]
MODALITIES = ("flair", "t1ce", "t1", "t2")
ROI = (16, 16, 16)


class RegionThreshold(torch.nn.Module):
    """Pointwise region logits: TC from t1ce, WT from flair, ET from t1 (above 1 after z-normalisation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20.0 * (torch.stack([x[:, 1], x[:, 0], x[:, 2]], dim=1) - 1.0)


def _volumes() -> dict[str, np.ndarray]:
    head = np.zeros(SHAPE, np.float32)
    head[HEAD] = 100.0
    out = {m: head.copy() for m in MODALITIES}
    out["flair"][WT_BOX] = 400.0
    out["t1ce"][TC_BOX] = 400.0
    out["t1"][ET_BOX] = 400.0
    out["t2"][HEAD] += np.linspace(0, 50, SHAPE[0], dtype=np.float32)[2:34, None, None]
    return out


def expected_labels() -> np.ndarray:
    """BraTS 2021 labels of the boxes: 2 edema (WT only), 1 necrosis (TC without ET), 4 ET."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[WT_BOX] = 2
    labels[TC_BOX] = 1
    labels[ET_BOX] = 4
    return labels


def _rotation(z_deg: float, x_deg: float) -> np.ndarray:
    cz, sz = math.cos(math.radians(z_deg)), math.sin(math.radians(z_deg))
    cx, sx = math.cos(math.radians(x_deg)), math.sin(math.radians(x_deg))
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ rx


def _affine(matrix: np.ndarray, origin=(-17.0, 21.0, -9.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = origin
    return affine


#: name -> (affine, qform code, sform code, on-disk dtype)
HEADERS = {
    "ras": (_affine(np.eye(3)), 1, 1, np.float32),
    "lps_anisotropic_qform_only": (_affine(np.diag([-0.9, -1.1, 2.5])), 1, 0, np.float32),
    "oblique": (_affine(_rotation(20, 10) @ np.diag([1.0, 1.2, 1.5])), 1, 2, np.float32),
    # axes permuted (i -> -y, j -> z, k -> x) and stored as int16 with a scaling slope
    "permuted_int16_scaled": (_affine(np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, 1.0, 0]])), 2, 1, np.int16),
}


def _image(data: np.ndarray, affine: np.ndarray, qcode: int, scode: int, dtype) -> nib.Nifti1Image:
    if np.issubdtype(dtype, np.integer):
        # Non-integer values: nibabel stores them as integers with a slope and intercept (z-normalisation
        # in the preprocessing makes the network blind to this linear change).
        data = data * 1.7 + 0.3
    image = nib.Nifti1Image(data, None, dtype=dtype)
    image.set_qform(affine, code=qcode)
    image.set_sform(affine if scode else np.eye(4), code=scode)
    image.header.set_xyzt_units("mm", "sec")
    return image


def write_brats_case(root: Path, case_id: str, header: str, patterns=None, skip=()) -> Path:
    """A BraTS-layout case folder ``root/case_id`` with the boxes, in the given header variant."""
    affine, qcode, scode, dtype = HEADERS[header]
    patterns = patterns or {m: f"_{m}" for m in MODALITIES}
    case_dir = root / case_id
    case_dir.mkdir(parents=True)
    for m, volume in _volumes().items():
        if m not in skip:
            nib.save(_image(volume, affine, qcode, scode, dtype), str(case_dir / f"{case_id}{patterns[m]}.nii.gz"))
    return case_dir


def write_msd_file(path: Path, header: str) -> Path:
    """An MSD 4-D file (channels FLAIR, T1w, T1gd, T2w) with the boxes."""
    affine, qcode, scode, dtype = HEADERS[header]
    volumes = _volumes()
    data = np.stack([volumes[m] for m in ("flair", "t1", "t1ce", "t2")], axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(_image(data, affine, qcode, scode, dtype), str(path))
    return path


@pytest.fixture(scope="module")
def threshold_segmenter() -> BratsSegmenter:
    return BratsSegmenter(RegionThreshold(), InferenceSettings(roi_size=ROI, sw_batch_size=8))


def assert_same_header(output: Path, reference: Path) -> None:
    out, ref = nib.load(str(output)), nib.load(str(reference))
    assert out.shape == ref.shape[:3]
    assert out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
    for getter in ("get_qform", "get_sform"):
        out_m, out_code = getattr(out.header, getter)(coded=True)
        ref_m, ref_code = getattr(ref.header, getter)(coded=True)
        assert int(out_code) == int(ref_code), getter
        if ref_m is not None:
            np.testing.assert_allclose(out_m, ref_m, atol=1e-5)
    assert out.header.get_xyzt_units() == ref.header.get_xyzt_units()
    assert out.header.get_slope_inter() in ((None, None), (1.0, 0.0))


def test_int16_fixture_really_has_a_scaling_slope(tmp_path: Path):
    case = write_brats_case(tmp_path, "c", "permuted_int16_scaled")
    image = nib.load(str(case / "c_flair.nii.gz"))
    # nibabel keeps the file's scaling on the data proxy (the loaded header's fields are reset)
    assert image.get_data_dtype() == np.int16 and image.dataobj.slope not in (None, 1.0)
    np.testing.assert_allclose(image.get_fdata()[WT_BOX], 400.0 * 1.7 + 0.3, rtol=1e-3)


@pytest.mark.parametrize("header", sorted(HEADERS))
def test_brats_folder_round_trip(tmp_path: Path, threshold_segmenter: BratsSegmenter, header: str):
    case_dir = write_brats_case(tmp_path, "Case_001", header)
    cases, problems = find_cases(case_dir)
    assert problems == [] and [c.case_id for c in cases] == ["Case_001"]
    threshold_segmenter.check(cases[0])
    result = threshold_segmenter(cases[0])
    np.testing.assert_array_equal(result["labels"], expected_labels())

    out = save_like_reference(result["labels"], cases[0].reference, tmp_path / "out" / "Case_001.nii.gz")
    assert_same_header(out, case_dir / "Case_001_flair.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(out)).dataobj), expected_labels())


@pytest.mark.parametrize("header", ["lps_anisotropic_qform_only", "oblique"])
def test_msd_4d_round_trip(tmp_path: Path, threshold_segmenter: BratsSegmenter, header: str):
    path = write_msd_file(tmp_path / "BRATS_485.nii.gz", header)
    cases, _ = find_cases(path)
    assert cases[0].case_id == "BRATS_485" and cases[0].channel_order == [0, 2, 1, 3]
    threshold_segmenter.check(cases[0])
    result = threshold_segmenter(cases[0], probabilities=True)
    np.testing.assert_array_equal(result["labels"], expected_labels())
    probabilities = result["probabilities"]
    assert probabilities.shape == (*SHAPE, 3) and probabilities.dtype == np.float32
    np.testing.assert_array_equal(probabilities[..., 1] >= 0.5, expected_labels() > 0)


def test_label_conventions(tmp_path: Path, threshold_segmenter: BratsSegmenter):
    cases, _ = find_cases(write_brats_case(tmp_path, "c", "ras"))
    expected = expected_labels()
    for convention, (ncr, ed, et) in {"brats2023": (1, 2, 3), "msd": (2, 1, 3)}.items():
        labels = threshold_segmenter(cases[0], convention)["labels"]
        np.testing.assert_array_equal(labels, np.select([expected == 1, expected == 2, expected == 4], [ncr, ed, et]))


def test_resampling_preprocessing_is_inverted(tmp_path: Path):
    """With a training ``pixdim``, the prediction is resampled back to the (anisotropic) input grid."""
    settings = InferenceSettings(roi_size=ROI, preprocessing={"pixdim": (1.5, 1.5, 1.5)})
    segmenter = BratsSegmenter(RegionThreshold(), settings)
    cases, _ = find_cases(write_brats_case(tmp_path, "c", "lps_anisotropic_qform_only"))
    labels = segmenter(cases[0])["labels"]
    assert labels.shape == SHAPE
    wt, expected_wt = labels > 0, expected_labels() > 0
    dice = 2 * (wt & expected_wt).sum() / (wt.sum() + expected_wt.sum())
    assert dice > 0.85


def test_tta_undoes_its_flips():
    x = torch.randn(1, 4, 8, 12, 16)
    tta = FlipTTA(RegionThreshold())
    assert len(tta.flips) == 8
    # A pointwise network commutes with flips: averaging the unflipped predictions gives the plain one.
    torch.testing.assert_close(torch.sigmoid(tta(x)), torch.sigmoid(RegionThreshold()(x)), atol=1e-5, rtol=0)


def test_tta_segmenter_gives_the_same_labels(tmp_path: Path):
    segmenter = BratsSegmenter(RegionThreshold(), InferenceSettings(roi_size=ROI), tta=True)
    cases, _ = find_cases(write_brats_case(tmp_path, "c", "oblique"))
    np.testing.assert_array_equal(segmenter(cases[0])["labels"], expected_labels())


def test_missing_modality_is_an_error_unless_zero_filled(tmp_path: Path, threshold_segmenter: BratsSegmenter):
    cases, _ = find_cases(write_brats_case(tmp_path, "c", "ras", skip=("t1",)))
    assert cases[0].missing == [2]
    with pytest.raises(InputFileError, match="no t1 file"):
        threshold_segmenter.check(cases[0])
    threshold_segmenter.check(cases[0], allow_missing=True)
    labels = threshold_segmenter(cases[0])["labels"]
    # ET is read off the missing t1 channel: zeros give no ET; the other regions are unaffected.
    expected = expected_labels()
    np.testing.assert_array_equal(labels, np.where(expected == 4, 1, expected))


def test_insert_zero_channels():
    x = torch.arange(2 * 3).reshape(2, 3).float()
    out = InsertZeroChannelsd(keys="image", positions=[2, 0])({"image": x})["image"]
    assert out.shape == (4, 3)
    torch.testing.assert_close(out, torch.stack([torch.zeros(3), x[0], torch.zeros(3), x[1]]))


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


def test_load_model_from_run_dir_and_checkpoint(tiny_run_dir: Path):
    network, settings = load_model(tiny_run_dir)
    assert settings.roi_size == (32, 32, 32) and settings.modalities == MODALITIES
    assert settings.source.endswith("inference.json")
    from_checkpoint, _ = load_model(tiny_run_dir, checkpoint=tiny_run_dir / "models" / "checkpoint.pt")
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(network(x), from_checkpoint(x))


def test_load_model_errors(tiny_run_dir: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="bundle folder does not exist"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "noconfig").mkdir()
    with pytest.raises(FileNotFoundError, match="no bundle config"):
        load_model(tmp_path / "noconfig")
    with pytest.raises(FileNotFoundError, match="weights file does not exist"):
        load_model(tiny_run_dir, checkpoint=tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights"):
        load_model(tiny_run_dir, checkpoint=garbage)
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), other)
    with pytest.raises(ValueError, match="do not fit the network"):
        load_model(tiny_run_dir, checkpoint=other)


def test_settings_from_bundle_yaml_do_not_touch_the_data():
    """The bundle's own configs give the inference settings without scanning (or generating) a data set."""
    configs = Path(__file__).resolve().parents[2] / "bundles" / "brats_cggm" / "configs"
    for name in ("inference.yaml", "train.yaml"):
        settings, network = settings_from_config(configs / name)
        assert settings.roi_size == (32, 32, 32) and settings.modalities == MODALITIES
        assert settings.preprocessing == {"pixdim": [1.0, 1.0, 1.0]}  # the BraTS grid
        assert network.modalities == MODALITIES


def test_run_config_of_an_earlier_version_names_the_moved_network_module(tiny_run_dir: Path, tmp_path: Path):
    """Run folders trained before ``brats/network.py`` became ``brats/model.py`` still load."""
    old = shutil.copytree(tiny_run_dir, tmp_path / "old_run")
    config = json.loads((old / "configs" / "inference.json").read_text())
    config["network_def"]["_target_"] = "brats_cggm.brats.network.MultiEncoderUNet"
    (old / "configs" / "inference.json").write_text(json.dumps(config))
    network, _ = load_model(old)
    reference, _ = load_model(tiny_run_dir)
    for name, value in network.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name])


@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated")
def test_cli_round_trip_with_header_variants(tmp_path: Path, capsys: pytest.CaptureFixture):
    """``brats-cggm-infer`` on a batch of cases in every header variant (TorchScript threshold network)."""
    ts = tmp_path / "threshold.ts"
    torch.jit.save(torch.jit.script(RegionThreshold()), str(ts))
    for i, header in enumerate(sorted(HEADERS)):
        write_brats_case(tmp_path / "in", f"case{i}", header)
    out = tmp_path / "out"
    argv = [
        "--input",
        str(tmp_path / "in"),
        "--torchscript",
        str(ts),
        "--output-dir",
        str(out),
        "--roi",
        *map(str, ROI),
    ]
    assert main([*argv, "--device", "cpu", "--save-probabilities"]) == 0
    log = capsys.readouterr().out
    assert f"summary: {len(HEADERS)} segmented, 0 failed" in log and "[1/4] case0:" in log
    for i, _ in enumerate(sorted(HEADERS)):
        assert_same_header(out / f"case{i}.nii.gz", tmp_path / "in" / f"case{i}" / f"case{i}_flair.nii.gz")
        np.testing.assert_array_equal(np.asanyarray(nib.load(str(out / f"case{i}.nii.gz")).dataobj), expected_labels())
        probabilities = nib.load(str(out / f"case{i}_probabilities.nii.gz"))
        assert probabilities.shape == (*SHAPE, 3)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]

    # explicit files, a name template, BraTS 2023 labels
    case = tmp_path / "in" / "case0"
    files = [a for m in MODALITIES for a in (f"--{m}", str(case / f"case0_{m}.nii.gz"))]
    options = ["--name-template", "{case_id}_seg.nii.gz", "--labels", "brats2023", "--roi", *map(str, ROI)]
    rc = main([*files, "--torchscript", str(ts), "--output-dir", str(out), *options])
    assert rc == 0
    labels = np.asanyarray(nib.load(str(out / "case0_seg.nii.gz")).dataobj)
    assert set(np.unique(labels)) == {0, 1, 2, 3}


@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated")
def test_embedded_config_of_a_torchscript_file(tmp_path: Path, tiny_run_dir: Path):
    """Settings travel inside a TorchScript file saved with its config (as ``ckpt_export`` does)."""
    from monai.data import save_net_with_metadata

    config = json.loads((tiny_run_dir / "configs" / "inference.json").read_text())
    config["patch_size"] = [16, 16, 16]
    save_net_with_metadata(
        torch.jit.script(RegionThreshold()),
        str(tmp_path / "model"),
        more_extra_files={"inference.json": json.dumps(config).encode()},
    )
    _, settings = load_model(torchscript=tmp_path / "model.ts")
    assert settings.roi_size == (16, 16, 16) and settings.source.endswith("model.ts:inference.json")
    shutil.copy(tmp_path / "model.ts", tmp_path / "copy.ts")
    _, from_bundle = load_model(tiny_run_dir, torchscript=tmp_path / "copy.ts")
    assert from_bundle.roi_size == (32, 32, 32)


@pytest.mark.parametrize(
    ("stitch", "device", "free_bytes", "expected"),
    [
        ("auto", "cpu", None, False),
        ("cpu", "cpu", None, False),
        ("device", "cuda", 0, False),
        ("cpu", "cuda", 10**12, True),
        # 4 bytes x 1000 voxels x (7 + 1) maps = 32000 bytes against half the free memory
        ("auto", "cuda", 64_000, False),
        ("auto", "cuda", 63_998, True),
    ],
)
def test_stitch_on_cpu(stitch: str, device: str, free_bytes: int | None, expected: bool):
    assert stitch_on_cpu(stitch, torch.device(device), 1000, 7, free_bytes) is expected


def test_stitch_choice_is_checked():
    with pytest.raises(ValueError, match="stitch"):
        stitch_on_cpu("gpu", torch.device("cpu"), 1, 1)
    with pytest.raises(ValueError, match="stitch"):
        BratsSegmenter(RegionThreshold(), InferenceSettings(roi_size=ROI), stitch="gpu")


def test_cpu_stitching_keeps_the_volume_off_the_compute_device(
    tmp_path: Path, threshold_segmenter: BratsSegmenter, monkeypatch: pytest.MonkeyPatch
):
    """With CPU stitching the inferer gets the CPU volume and a CPU output device; windows go to the device."""
    import brats_cggm.brats.inference as inference

    case = find_cases(write_brats_case(tmp_path, "Case_001", "oblique"))[0][0]
    calls = []
    inferer = threshold_segmenter.inferer

    def spy(inputs: torch.Tensor, network, **kwargs):
        calls.append((inputs.device.type, kwargs.get("device")))
        return type(inferer).__call__(inferer, inputs, network, **kwargs)

    monkeypatch.setattr(threshold_segmenter, "inferer", spy)
    monkeypatch.setattr(inference, "stitch_on_cpu", lambda *args, **kwargs: True)
    labels = threshold_segmenter(case)["labels"]
    assert calls == [("cpu", torch.device("cpu"))] and inferer.sw_device == threshold_segmenter.device
    np.testing.assert_array_equal(labels, expected_labels())


@pytest.mark.filterwarnings("ignore:`torch.jit.(save|load)` is deprecated")
def test_torchscript_config_is_never_evaluated(tmp_path: Path, capsys: pytest.CaptureFixture):
    """``$`` expressions and ``_target_`` objects in a model file's config are not run: defaults, with a warning."""
    from monai.data import save_net_with_metadata

    marker = tmp_path / "marker"
    touch = f"$__import__('pathlib').Path({str(marker)!r}).touch()"
    config = {
        "imports": [f"$__import__('pathlib').Path({str(marker)!r}).touch()"],
        "modalities": "@names",  # a plain reference: followed
        "names": list(MODALITIES),
        "patch_size": f"{touch} or [16, 16, 16]",
        "sw_overlap": {"_target_": "pathlib.Path.touch", "self": str(marker)},
        "sw_batch_size": 2,
        "data_options": {"pixdim": f"{touch} or [1.0, 1.0, 1.0]", "crop_foreground": True},
        "network_def": {"_target_": "pathlib.Path.touch", "self": str(marker)},
    }
    save_net_with_metadata(
        torch.jit.script(RegionThreshold()),
        str(tmp_path / "model"),
        more_extra_files={"inference.json": json.dumps(config).encode()},
    )
    ts = tmp_path / "model.ts"
    with pytest.warns(UserWarning) as record:
        _, settings = load_model(torchscript=ts)
    assert not marker.exists()
    messages = " ".join(str(w.message) for w in record)
    for key in ("'patch_size'", "'sw_overlap'", "'data_options#pixdim'"):
        assert key in messages and f"{ts}:inference.json" in messages
    assert settings.modalities == MODALITIES and settings.sw_batch_size == 2
    assert settings.roi_size is None and settings.overlap == 0.5  # the defaults
    assert settings.preprocessing == {"crop_foreground": True}

    # the command line tool: the same, the warnings as one line each
    write_brats_case(tmp_path / "in", "c", "ras")
    argv = ["--input", str(tmp_path / "in"), "--torchscript", str(ts), "--output-dir", str(tmp_path / "out")]
    assert main([*argv, "--roi", *map(str, ROI), "--device", "cpu"]) == 0
    assert not marker.exists()
    warnings_printed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings_printed) == 3 and any("'patch_size' is not plain data" in w for w in warnings_printed)
    np.testing.assert_array_equal(
        np.asanyarray(nib.load(str(tmp_path / "out" / "c.nii.gz")).dataobj), expected_labels()
    )


#: Thick-slice acquisitions at 0.5 x 0.5 x 5 mm: name -> (affine, qform code, sform code, on-disk dtype)
THICK_SLICES = {
    "lps_thick_slices": (_affine(np.diag([-0.5, -0.5, 5.0])), 1, 1, np.float32),
    "oblique_thick_slices": (_affine(_rotation(20, 10) @ np.diag([0.5, 0.5, 5.0])), 1, 2, np.float32),
}


def threshold_bundle(root: Path, pixdim: list[float] | None = (1.0, 1.0, 1.0)) -> Path:
    """A bundle folder (``configs/inference.json``, ``models/model.pt``) holding :class:`RegionThreshold` as a conv."""
    conv = torch.nn.Conv3d(4, 3, kernel_size=1)
    with torch.no_grad():
        conv.weight.zero_()
        for region, channel in enumerate((1, 0, 2)):  # TC from t1ce, WT from flair, ET from t1
            conv.weight[region, channel] = 20.0
        conv.bias.fill_(-20.0)
    config = {
        "network_def": {"_target_": "torch.nn.Conv3d", "in_channels": 4, "out_channels": 3, "kernel_size": 1},
        "modalities": list(MODALITIES),
        "patch_size": list(ROI),
        "sw_overlap": 0.5,
        "sw_batch_size": 4,
        "data_options": {} if pixdim is None else {"pixdim": list(pixdim)},
    }
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    (root / "models").mkdir()
    torch.save(conv.state_dict(), root / "models" / "model.pt")
    return root


def _agreement(labels: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    out = {"voxels": float((labels == expected).mean())}
    for region, values in (("wt", (1, 2, 4)), ("tc", (1, 4)), ("et", (4,))):
        a, b = np.isin(labels, values), np.isin(expected, values)
        out[region] = 2 * (a & b).sum() / (a.sum() + b.sum())
    return out


def test_thick_slices_are_resampled_to_1mm_and_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    """``brats-cggm-infer``: 0.5 x 0.5 x 5 mm scans reach the network at 1 mm; the labels come back on their grid."""
    monkeypatch.setitem(HEADERS, "lps_thick_slices", THICK_SLICES["lps_thick_slices"])
    monkeypatch.setitem(HEADERS, "oblique_thick_slices", THICK_SLICES["oblique_thick_slices"])
    bundle = threshold_bundle(tmp_path / "bundle")
    for header in THICK_SLICES:
        write_brats_case(tmp_path / "in", header, header)

    network, settings = load_model(bundle)
    assert settings.preprocessing == {"pixdim": [1.0, 1.0, 1.0]}
    segmenter = BratsSegmenter(network, settings)
    for case in find_cases(tmp_path / "in")[0]:
        image = segmenter.preprocessing(case)({"image": case.image})["image"]
        torch.testing.assert_close(image.pixdim.float(), torch.ones(3))  # what the network is given

    out = tmp_path / "out"
    assert (
        main(["--input", str(tmp_path / "in"), "--bundle", str(bundle), "--output-dir", str(out), "--device", "cpu"])
        == 0
    )
    assert "summary: 2 segmented, 0 failed" in capsys.readouterr().out
    for header in THICK_SLICES:
        assert_same_header(out / f"{header}.nii.gz", tmp_path / "in" / header / f"{header}_flair.nii.gz")
        labels = np.asanyarray(nib.load(str(out / f"{header}.nii.gz")).dataobj)
        # 2 mm wide boxes sampled at 1 mm and back: edges may move by a voxel, nothing more
        scores = _agreement(labels, expected_labels())
        assert scores["voxels"] > 0.97 and scores["wt"] > 0.9 and scores["tc"] > 0.85 and scores["et"] > 0.75, scores


def test_run_config_without_pixdim_is_not_resampled(tmp_path: Path):
    """Runs saved before the spacing was stored keep each input's spacing, as they were trained."""
    network, settings = load_model(threshold_bundle(tmp_path / "bundle", pixdim=None))
    case = find_cases(write_brats_case(tmp_path, "c", "lps_anisotropic_qform_only"))[0][0]
    image = BratsSegmenter(network, settings).preprocessing(case)({"image": case.image})["image"]
    torch.testing.assert_close(image.pixdim.float(), torch.tensor([0.9, 1.1, 2.5]))
