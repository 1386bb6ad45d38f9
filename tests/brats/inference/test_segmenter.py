"""Inference round trips: cases with non-trivial headers come back with their shape, header and labels.

The network here is a pointwise "threshold" network whose region logits are read off the (normalised)
input, so the exact expected label map is known in the input's voxel grid: any error in orientation,
cropping, padding or inversion misplaces labels and fails the comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import NibabelReader

from brats_cggm.brats.data.nifti_checks import InputFileError
from brats_cggm.brats.inference.case_io import find_cases, save_like_reference
from brats_cggm.brats.inference.model_loading import InferenceSettings, load_model
from brats_cggm.brats.inference.segmenter import BratsSegmenter, FlipTTA, InsertZeroChannelsd, stitch_on_cpu
from brats_cggm.brats.model import AvailabilityPredictor, MultiEncoderUNet
from brats_cggm.cli.infer import main
from tests.helpers.inference_cases import (
    HEADERS,
    MODALITIES,
    ROI,
    SHAPE,
    WT_BOX,
    RegionThreshold,
    assert_same_header,
    expected_labels,
    make_affine,
    rotation,
    write_brats_case,
    write_msd_file,
)
from tests.helpers.tiny_setup import trained_norms


@pytest.fixture(scope="module")
def threshold_segmenter() -> BratsSegmenter:
    return BratsSegmenter(RegionThreshold(), InferenceSettings(roi_size=ROI, sw_batch_size=8))


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
    images = threshold_segmenter.check(cases[0])
    result = threshold_segmenter(cases[0], images=images)
    np.testing.assert_array_equal(result["labels"], expected_labels())
    np.testing.assert_array_equal(threshold_segmenter(cases[0])["labels"], result["labels"])  # files read again

    out = save_like_reference(result["labels"], cases[0].reference, tmp_path / "out" / "Case_001.nii.gz")
    assert_same_header(out, case_dir / "Case_001_flair.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(out)).dataobj), expected_labels())


@pytest.mark.parametrize("header", ["lps_anisotropic_qform_only", "oblique"])
def test_msd_4d_round_trip(tmp_path: Path, threshold_segmenter: BratsSegmenter, header: str):
    path = write_msd_file(tmp_path / "BRATS_485.nii.gz", header)
    cases, _ = find_cases(path)
    assert cases[0].case_id == "BRATS_485" and cases[0].channel_order == [0, 2, 1, 3]
    images = threshold_segmenter.check(cases[0])
    result = threshold_segmenter(cases[0], probabilities=True, images=images)
    np.testing.assert_array_equal(result["labels"], expected_labels())
    probabilities = result["probabilities"]
    assert probabilities.shape == (*SHAPE, 3) and probabilities.dtype == np.float32
    np.testing.assert_array_equal(probabilities[..., 1] >= 0.5, expected_labels() > 0)


def test_checked_images_are_not_read_again(
    tmp_path: Path, threshold_segmenter: BratsSegmenter, monkeypatch: pytest.MonkeyPatch
):
    cases, _ = find_cases(write_brats_case(tmp_path, "c", "permuted_int16_scaled"))
    images = threshold_segmenter.check(cases[0])
    assert sorted(images) == sorted(cases[0].image)

    reads, read = [], NibabelReader.read

    def counting_read(self, data, **kwargs):
        reads.append(data)
        return read(self, data, **kwargs)

    monkeypatch.setattr(NibabelReader, "read", counting_read)
    np.testing.assert_array_equal(threshold_segmenter(cases[0], images=images)["labels"], expected_labels())
    assert reads == []
    threshold_segmenter(cases[0])
    assert len(reads) == 1  # without the images: the files, read again


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
    with pytest.raises(InputFileError, match="no t1 file") as excinfo:
        threshold_segmenter.check(cases[0])
    assert f"(expected {tmp_path / 'c' / 'c_t1.nii.gz'})" in str(excinfo.value)
    assert "--missing-modality drop" in str(excinfo.value)
    threshold_segmenter.check(cases[0], allow_missing=True)
    labels = threshold_segmenter(cases[0])["labels"]
    # ET is read off the missing t1 channel: zeros give no ET; the other regions are unaffected.
    expected = expected_labels()
    np.testing.assert_array_equal(labels, np.where(expected == 4, 1, expected))


def test_drop_predicts_with_the_availability_mask(tmp_path: Path):
    """``missing_modality="drop"``: the case's probabilities are the network's given the case's mask."""
    case = find_cases(write_brats_case(tmp_path, "c", "ras", skip=("t1ce",)))[0][0]
    # one window over the whole volume and no crop: the output is the network's on the preprocessed input
    settings = InferenceSettings(modalities=MODALITIES, roi_size=SHAPE, preprocessing={"crop_foreground": False})
    torch.manual_seed(0)
    network = trained_norms(MultiEncoderUNet(MODALITIES, features=(4, 8, 16)).eval())
    drop = BratsSegmenter(network, settings, missing_modality="drop")
    x = drop.preprocessing(case)({"image": [p for p in case.image if p is not None]})["image"]
    assert tuple(x.shape) == (len(MODALITIES), *SHAPE)
    mask = torch.tensor([[True, False, True, True]])
    with torch.no_grad():
        logits = network.forward_features(x.as_tensor()[None], available=mask).logits
    expected = np.moveaxis(torch.sigmoid(logits)[0].numpy(), 0, -1)
    probabilities = drop(case, probabilities=True)["probabilities"]
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    zero = BratsSegmenter(network, settings, missing_modality="zero")(case, probabilities=True)["probabilities"]
    assert np.abs(zero - probabilities).max() > 1e-3

    # TTA averages the flips of the same masked prediction
    tta = BratsSegmenter(network, settings, missing_modality="drop", tta=True).predictor_for(case)
    assert isinstance(tta, FlipTTA) and isinstance(tta.network, AvailabilityPredictor)
    assert tta.network.present == (0, 2, 3)


def test_drop_needs_a_network_that_takes_the_mask():
    with pytest.raises(ValueError, match=r"--missing-modality drop .*TorchScript"):
        BratsSegmenter(torch.jit.script(RegionThreshold()), InferenceSettings(roi_size=ROI), missing_modality="drop")
    with pytest.raises(ValueError, match="forward_features"):
        BratsSegmenter(RegionThreshold(), InferenceSettings(roi_size=ROI), missing_modality="drop")


def test_insert_zero_channels():
    x = torch.arange(2 * 3).reshape(2, 3).float()
    out = InsertZeroChannelsd(keys="image", positions=[2, 0])({"image": x})["image"]
    assert out.shape == (4, 3)
    torch.testing.assert_close(out, torch.stack([torch.zeros(3), x[0], torch.zeros(3), x[1]]))


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
    import brats_cggm.brats.inference.segmenter as inference

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


#: Thick-slice acquisitions at 0.5 x 0.5 x 5 mm: name -> (affine, qform code, sform code, on-disk dtype)
THICK_SLICES = {
    "lps_thick_slices": (make_affine(np.diag([-0.5, -0.5, 5.0])), 1, 1, np.float32),
    "oblique_thick_slices": (make_affine(rotation(20, 10) @ np.diag([0.5, 0.5, 5.0])), 1, 2, np.float32),
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


@pytest.mark.parametrize("header", ["permuted_int16_scaled", "oblique"])
def test_stages_compose_to_the_call_and_invert_after_a_process_boundary(
    tmp_path: Path, threshold_segmenter: BratsSegmenter, header: str
):
    import pickle

    from brats_cggm.brats.inference.pipeline import detach_item
    from brats_cggm.brats.inference.segmenter import PREPROCESSING_KEY

    cases, _ = find_cases(write_brats_case(tmp_path, "c", header))
    times: dict[str, float] = {}
    images = threshold_segmenter.check(cases[0], times=times)
    assert set(times) == {"read", "check"} and min(times.values()) >= 0.0
    whole = threshold_segmenter(cases[0], probabilities=True, images=images)
    assert {"preprocess", "predict", "invert", "postprocess"} <= set(whole["times"])

    data = threshold_segmenter.prepare(cases[0], images)
    # as a loader worker hands it on: no chain, pickled; the chain is built again to invert it
    detached = pickle.loads(pickle.dumps(detach_item(data, PREPROCESSING_KEY)))
    assert PREPROCESSING_KEY not in detached
    for item in (data, detached):
        stage_times: dict[str, float] = {}
        out = threshold_segmenter.finish(
            cases[0], threshold_segmenter.predict(cases[0], item), probabilities=True, times=stage_times
        )
        np.testing.assert_array_equal(out["labels"], whole["labels"])
        np.testing.assert_array_equal(out["probabilities"], whole["probabilities"])
        assert set(stage_times) == {"invert", "postprocess"} and min(stage_times.values()) >= 0.0
    np.testing.assert_array_equal(whole["labels"], expected_labels())


def test_a_chain_built_again_refuses_operations_that_keep_their_ids(
    tmp_path: Path, threshold_segmenter: BratsSegmenter
):
    # why detach_item exists: MONAI's inversion checks the transform objects' ids
    cases, _ = find_cases(write_brats_case(tmp_path, "c", "oblique"))
    data = threshold_segmenter.prepare(cases[0])
    del data["preprocessing"]
    with pytest.raises(RuntimeError):
        threshold_segmenter.finish(cases[0], threshold_segmenter.predict(cases[0], data))
