"""The device chain (preprocessing and inversion where the network runs) against the CPU chain, the reference.

On CPU tensors the device chain runs the CPU chain's own transforms, with the same arguments, in the same
order, on the same device: its outputs must be equal bit for bit (tolerance 0). On a GPU the operations are
the same but their floating-point reductions and interpolations are not, hence the CUDA test's tolerance.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, RandFlipd

from brats_cggm.brats.data.transforms import inference_transforms
from brats_cggm.brats.inference.case_io import CaseInput, find_cases
from brats_cggm.brats.inference.device_preprocessing import (
    DEVICE_STEPS,
    PREPROCESS_CHOICES,
    on_device,
    preprocessing_device,
)
from brats_cggm.brats.inference.model_loading import InferenceSettings
from brats_cggm.brats.inference.segmenter import BratsSegmenter, postprocessing_transforms
from brats_cggm.cli.infer import main
from tests.helpers.inference_cases import (
    ROI,
    SHAPE,
    RegionThreshold,
    expected_labels,
    write_brats_case,
    write_msd_file,
)

#: Spacing different from every phantom header's, anisotropic, so that resampling and its inverse both run.
PIXDIM = (1.5, 1.2, 0.8)


def _segmenters(pixdim=PIXDIM, **kwargs) -> tuple[BratsSegmenter, BratsSegmenter]:
    """The CPU chain and the device chain on CPU tensors, with the same network and settings."""
    settings = InferenceSettings(roi_size=ROI, preprocessing={"pixdim": pixdim} if pixdim else {})
    return tuple(  # type: ignore[return-value]
        BratsSegmenter(RegionThreshold(), settings, preprocess_on=where, **kwargs) for where in ("cpu", "device")
    )


def _one_case(root: Path, header: str, **kwargs) -> CaseInput:
    return find_cases(write_brats_case(root, "c", header, **kwargs))[0][0]


@pytest.mark.parametrize(
    ("preprocess_on", "device", "stitch", "expected"),
    [
        ("cpu", "cpu", "auto", None),
        ("cpu", "cuda", "auto", None),
        ("device", "cpu", "auto", "cpu"),
        ("device", "cuda", "cpu", "cuda"),
        ("auto", "cpu", "auto", None),
        ("auto", "cuda", "auto", "cuda"),
        ("auto", "cuda", "device", "cuda"),
        # --stitch cpu asks for the volume to stay in CPU memory
        ("auto", "cuda", "cpu", None),
    ],
)
def test_preprocessing_device(preprocess_on: str, device: str, stitch: str, expected: str | None):
    where = preprocessing_device(preprocess_on, torch.device(device), stitch)
    assert where == (None if expected is None else torch.device(expected))


def test_preprocess_on_is_checked():
    assert PREPROCESS_CHOICES == ("auto", "cpu", "device")
    with pytest.raises(ValueError, match="preprocess_on"):
        preprocessing_device("gpu", torch.device("cpu"))
    with pytest.raises(ValueError, match="preprocess_on"):
        BratsSegmenter(RegionThreshold(), InferenceSettings(roi_size=ROI), preprocess_on="gpu")


def test_on_device_moves_the_image_right_after_the_read():
    chain = inference_transforms(pixdim=PIXDIM)
    moved = on_device(chain, "cpu")
    names = [type(t).__name__ for t in moved.transforms]
    assert names[:2] == ["LoadCheckedImaged", "ToDeviced"]
    assert moved.transforms[2:] == chain.transforms[1:]  # the training chain's own steps, unchanged
    assert all(isinstance(t, DEVICE_STEPS) for t in moved.transforms[2:])


def test_on_device_refuses_unchecked_chains():
    chain = inference_transforms()
    with pytest.raises(ValueError, match="reads the image"):
        on_device(Compose(chain.transforms[1:]), "cpu")
    with pytest.raises(ValueError, match="RandFlipd"):
        on_device(Compose([*chain.transforms, RandFlipd(keys="image", prob=1.0)]), "cpu")


@pytest.mark.parametrize("header", ["ras", "lps_anisotropic_qform_only", "oblique", "permuted_int16_scaled"])
@pytest.mark.parametrize("pixdim", [None, PIXDIM])
def test_device_chain_on_cpu_equals_the_cpu_chain(tmp_path: Path, header: str, pixdim):
    """Same labels and, on CPU tensors, the same probabilities bit for bit (tolerance 0, see the module)."""
    cpu, device = _segmenters(pixdim)
    case = _one_case(tmp_path, header)
    images = cpu.check(case)
    reference = cpu(case, probabilities=True, images=images)
    result = device(case, probabilities=True, images=images)
    np.testing.assert_array_equal(result["labels"], reference["labels"])
    np.testing.assert_array_equal(result["probabilities"], reference["probabilities"])
    assert result["labels"].shape == SHAPE and result["probabilities"].shape == (*SHAPE, 3)
    if pixdim is None:  # no resampling: the boxes come back exactly
        np.testing.assert_array_equal(result["labels"], expected_labels())


@pytest.mark.parametrize("header", ["lps_anisotropic_qform_only", "permuted_int16_scaled"])
def test_inversion_lands_on_the_input_grid(tmp_path: Path, header: str):
    """Non-RAS inputs are reoriented and resampled; the inverted prediction has the input's affine and shape."""
    _, device = _segmenters()
    case = _one_case(tmp_path, header)
    preprocessing = device.preprocessing(case, device.check(case))
    data = preprocessing({"image": list(case.image)})
    image = data["image"]
    torch.testing.assert_close(image.pixdim.float(), torch.tensor(PIXDIM))  # what the network is given
    assert image.shape[1:] != SHAPE
    with torch.no_grad():
        data["pred"] = RegionThreshold()(image.unsqueeze(0))[0]
    inverted = postprocessing_transforms(preprocessing, probabilities_key="probabilities")(data)
    reference = nib.load(case.reference)
    for key in ("pred", "probabilities"):
        assert tuple(inverted[key].shape[1:]) == SHAPE
        np.testing.assert_allclose(np.asarray(inverted[key].affine), reference.affine, atol=1e-5)


def test_no_volume_leaves_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """After the read, no step of the device chain or of the inversion turns a volume into a numpy array
    (on a GPU that would be a copy to the host and back); only affines (4 x 4) may."""
    _, device = _segmenters()
    case = _one_case(tmp_path, "permuted_int16_scaled")
    preprocessing = device.preprocessing(case, device.check(case))
    to_numpy = torch.Tensor.numpy

    def small_only(tensor: torch.Tensor, *args, **kwargs):
        if tensor.numel() > 16:
            raise AssertionError(f"a volume of shape {tuple(tensor.shape)} went through numpy")
        return to_numpy(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "numpy", small_only)
    data = preprocessing({"image": list(case.image)})
    data["pred"] = RegionThreshold()(data["image"].unsqueeze(0))[0]
    inverted = postprocessing_transforms(preprocessing, probabilities_key="probabilities")(data)
    assert tuple(inverted["pred"].shape) == (1, *SHAPE)
    with pytest.raises(AssertionError, match="went through numpy"):  # the guard itself works
        np.asarray(inverted["pred"])


def test_msd_file_and_missing_modalities_on_the_device_chain(tmp_path: Path):
    """Channel reordering (MSD 4-D files) and zero channels (missing modalities) run before the device steps."""
    cpu, device = _segmenters(missing_modality="zero")
    msd = find_cases(write_msd_file(tmp_path / "msd" / "BRATS_485.nii.gz", "oblique"))[0][0]
    lacking = _one_case(tmp_path / "brats", "lps_anisotropic_qform_only", skip=("t2",))
    assert msd.channel_order and lacking.missing == [3]
    for case in (msd, lacking):
        reference = cpu(case, probabilities=True)
        result = device(case, probabilities=True)
        np.testing.assert_array_equal(result["labels"], reference["labels"])
        np.testing.assert_array_equal(result["probabilities"], reference["probabilities"])


def test_cli_preprocess_on(tmp_path: Path, capsys: pytest.CaptureFixture):
    """``--preprocess-on device`` (on the CPU) writes the same segmentation as ``--preprocess-on cpu``."""
    from tests.brats.inference.test_segmenter import threshold_bundle

    bundle = threshold_bundle(tmp_path / "bundle", pixdim=list(PIXDIM))
    write_brats_case(tmp_path / "in", "c", "oblique")
    outputs = {}
    for where in ("cpu", "device"):
        out = tmp_path / where
        args = ["--input", str(tmp_path / "in"), "--bundle", str(bundle), "--output-dir", str(out)]
        assert main([*args, "--device", "cpu", "--preprocess-on", where]) == 0
        outputs[where] = np.asanyarray(nib.load(str(out / "c.nii.gz")).dataobj)
    assert "summary: 1 segmented, 0 failed" in capsys.readouterr().out
    np.testing.assert_array_equal(outputs["device"], outputs["cpu"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("header", ["lps_anisotropic_qform_only", "oblique", "permuted_int16_scaled"])
def test_cuda_device_chain_agrees_with_the_cpu_chain(tmp_path: Path, header: str):
    """On a GPU: the same network (float32, no AMP) after either chain.

    Tolerance 1e-4 on the probabilities: the chains differ only in floating-point reduction order
    (normalisation statistics, ``grid_sample``), about 1e-6 relative in float32; the threshold network's gain
    of 20 and the sigmoid's slope (at most 1/4) turn that into about 1e-5, and 1e-4 leaves a margin of ten.
    Labels are compared where the reference probability is further than that from the 0.5 threshold.
    """
    settings = InferenceSettings(roi_size=ROI, preprocessing={"pixdim": PIXDIM})
    cpu, cuda = (
        BratsSegmenter(RegionThreshold(), settings, device="cuda", amp=False, preprocess_on=where)
        for where in ("cpu", "device")
    )
    assert cuda.preprocess_device == torch.device("cuda") and cpu.preprocess_device is None
    case = _one_case(tmp_path, header)
    assert cuda.preprocessing(case)({"image": list(case.image)})["image"].device.type == "cuda"
    reference = cpu(case, probabilities=True)
    result = cuda(case, probabilities=True)
    np.testing.assert_allclose(result["probabilities"], reference["probabilities"], atol=1e-4, rtol=0)
    decided = (np.abs(reference["probabilities"] - 0.5) > 1e-4).all(axis=-1)
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(result["labels"][decided], reference["labels"][decided])
