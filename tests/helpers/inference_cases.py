"""BraTS cases with known labels for inference tests: box-shaped regions under non-trivial NIfTI headers.

:class:`RegionThreshold` is a pointwise "threshold" network whose region logits are read off the
(normalised) input, so the exact expected label map is known in the input's voxel grid: any error in
orientation, cropping, padding or inversion misplaces labels and fails the comparison.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

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


def rotation(z_deg: float, x_deg: float) -> np.ndarray:
    cz, sz = math.cos(math.radians(z_deg)), math.sin(math.radians(z_deg))
    cx, sx = math.cos(math.radians(x_deg)), math.sin(math.radians(x_deg))
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ rx


def make_affine(matrix: np.ndarray, origin=(-17.0, 21.0, -9.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = origin
    return affine


#: name -> (affine, qform code, sform code, on-disk dtype)
HEADERS = {
    "ras": (make_affine(np.eye(3)), 1, 1, np.float32),
    "lps_anisotropic_qform_only": (make_affine(np.diag([-0.9, -1.1, 2.5])), 1, 0, np.float32),
    "oblique": (make_affine(rotation(20, 10) @ np.diag([1.0, 1.2, 1.5])), 1, 2, np.float32),
    # axes permuted (i -> -y, j -> z, k -> x) and stored as int16 with a scaling slope
    "permuted_int16_scaled": (make_affine(np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, 1.0, 0]])), 2, 1, np.int16),
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
