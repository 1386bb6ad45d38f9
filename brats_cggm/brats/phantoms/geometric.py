"""Synthetic BraTS-like cases: the project's test data and its embedded default data set.

Each phantom is a skull-stripped "brain" (a perturbed ellipsoid; background exactly 0 outside it) with
ventricles (CSF), a grey-matter shell and white matter, and one tumour at a random place inside the
brain: a necrotic core (label 1) inside an enhancing rim (label 4) inside edema (label 2), with random,
irregular shapes. Labels follow the BraTS 2021 convention (0, 1, 2, 4).

The four modalities are made *unequally informative on purpose*, so that a multimodal network has a
dominant modality to over-rely on and a weak one whose contribution a balancing method must protect
(see :data:`PHANTOM_MODALITY_INFO`):

- **FLAIR** shows the whole tumour (edema and core) much brighter than normal brain, with little
  noise: the whole tumour (WT) is easy from FLAIR alone. Necrosis, enhancing rim and edema have nearly
  the same FLAIR intensity, so FLAIR does not tell ET from NCR.
- **T1ce** is the only modality that separates the enhancing rim (very bright) from necrosis (dark):
  it is needed for ET and for the core (TC) boundaries. Edema is barely visible on it.
- **T2** shows edema and tumour bright, but with weaker contrast, more noise and CSF brighter still;
  NCR and ET look alike. It helps partly with WT.
- **T1** carries little: the tumour is only faintly hypointense and the noise is heavy.

Tissue intensities follow real MRI qualitatively (CSF dark on T1/T1ce/FLAIR and bright on T2; white
matter brighter than grey on T1, darker on T2/FLAIR). Each modality gets partial-volume blur, a smooth
multiplicative bias field, Rician noise and a random per-case intensity scale, and is stored as int16.
Generation is deterministic: the same ``(shape, seed)`` gives bit-identical arrays.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = [
    "MIN_SIDE",
    "MODALITIES",
    "PHANTOM_MODALITY_INFO",
    "brats_affine",
    "ensure_phantom_dataset",
    "generate_phantom_case",
    "phantom_case_dirs",
    "phantom_case_id",
    "random_rotation",
    "write_brats_case",
    "write_phantom_dataset",
]

#: Modality names, as used in BraTS 2021 file names.
MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")

#: What each phantom modality tells about the tumour (copied into the README).
PHANTOM_MODALITY_INFO: dict[str, str] = {
    "flair": "Dominant for the whole tumour: edema and core strongly hyperintense, low noise. "
    "Does not separate enhancing tumour from necrosis.",
    "t1ce": "The only modality separating enhancing rim (bright) from necrosis (dark): needed for ET and TC. "
    "Edema barely visible.",
    "t2": "Partial: edema and tumour bright but with weaker contrast and more noise; CSF brighter still; "
    "NCR and ET look alike.",
    "t1": "Little information: tumour only faintly hypointense, heavy noise.",
}

#: Smallest side of a phantom volume, in voxels.
MIN_SIDE = 24

# Tissue indices of the internal tissue map.
_BG, _CSF, _GM, _WM, _NCR, _ED, _ET = range(7)
_TISSUE_TO_LABEL = np.array([0, 0, 0, 0, 1, 2, 4], dtype=np.uint8)

# Mean intensity of each tissue (indexed as above) relative to white matter on T1.
_MEANS: dict[str, tuple[float, ...]] = {
    #         bg   csf   gm    wm    ncr   ed    et
    "flair": (0.0, 0.12, 0.58, 0.45, 0.95, 1.00, 0.97),
    "t1": (0.0, 0.30, 0.75, 1.00, 0.68, 0.72, 0.70),
    "t1ce": (0.0, 0.30, 0.78, 1.00, 0.32, 0.82, 1.90),
    "t2": (0.0, 1.00, 0.55, 0.40, 0.74, 0.72, 0.73),
}
# Rician noise sigma, in the same relative units.
_NOISE: dict[str, float] = {"flair": 0.035, "t1": 0.14, "t1ce": 0.05, "t2": 0.11}
# Scanner counts for relative intensity 1 (before the random per-case scale).
_COUNTS: dict[str, float] = {"flair": 500.0, "t1": 600.0, "t1ce": 800.0, "t2": 700.0}


def phantom_case_id(index: int) -> str:
    """The BraTS 2021 style identifier of phantom case ``index``, e.g. ``BraTS2021_00003``."""
    return f"BraTS2021_{index:05d}"


def brats_affine(shape: Sequence[int]) -> np.ndarray:
    """The voxel-to-world affine that real BraTS NIfTI files carry, for a volume of ``shape``.

    BraTS volumes are 1 mm isotropic, stored with ``diag(-1, -1, 1)`` and the origin offset along the
    second axis (``239`` for the 240 x 240 x 155 BraTS grid).

    Args:
        shape: the volume shape (three ints).

    Returns:
        The 4 x 4 affine (float64).
    """
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = float(shape[1] - 1)
    return affine


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(shape)
    if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) for s in shape):
        raise ValueError(f"shape must be three integers, got {shape!r}")
    if min(shape) < MIN_SIDE:
        raise ValueError(f"every side of shape must be at least {MIN_SIDE} voxels, got {shape!r}")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], nodes: int) -> np.ndarray:
    """A smooth random field with zero mean and unit std: Gaussian bumps on a coarse grid of nodes."""
    coarse = rng.standard_normal((nodes, nodes, nodes))
    weights = []
    for size in shape:
        centers = np.linspace(0.0, size - 1.0, nodes)
        width = (size - 1.0) / (nodes - 1)
        w = np.exp(-0.5 * ((np.arange(size)[:, None] - centers[None]) / width) ** 2)
        weights.append(w / w.sum(axis=1, keepdims=True))
    # einsum without optimize runs numpy's own loops, not BLAS, whose summation order may depend on
    # the thread count; the tissue map thresholds this field and must be bit-reproducible.
    field = np.einsum("xa,abc->xbc", weights[0], coarse)
    field = np.einsum("yb,xbc->xyc", weights[1], field)
    field = np.einsum("zc,xyc->xyz", weights[2], field)
    field -= field.mean()
    field /= field.std() + 1e-12
    return field.astype(np.float32)


def _random_directions(rng: np.random.Generator, k: int) -> np.ndarray:
    v = rng.standard_normal((k, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _angular_perturbation(rng: np.random.Generator, unit: Sequence[np.ndarray], amplitude: float) -> np.ndarray:
    """A random smooth function of direction with values in ``[-amplitude, amplitude]``."""
    k = 5
    dirs = _random_directions(rng, k)
    freqs: np.ndarray = rng.uniform(1.5, 4.0, k)
    phases: np.ndarray = rng.uniform(0.0, 2 * np.pi, k)
    weights: np.ndarray = rng.uniform(0.5, 1.0, k)
    weights *= amplitude / weights.sum()
    # float32 scalars throughout: a float64 numpy scalar would upcast the whole volume (NEP 50).
    dirs, freqs, phases, weights = (a.astype(np.float32) for a in (dirs * freqs[:, None], freqs, phases, weights))
    out = np.zeros(np.broadcast_shapes(*(u.shape for u in unit)), dtype=np.float32)
    for d, p, w in zip(dirs, phases, weights, strict=True):
        out += w * np.cos(d[0] * unit[0] + d[1] * unit[1] + d[2] * unit[2] + p)
    return out


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A random orientation: an orthogonal matrix drawn uniformly (Haar measure on O(3)), by QR of a Gaussian matrix.

    Args:
        rng: the random generator.

    Returns:
        A ``(3, 3)`` orthogonal matrix.
    """
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _tissue_map(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    grid = [
        np.arange(s, dtype=np.float32).reshape([-1 if i == j else 1 for j in range(3)]) for i, s in enumerate(shape)
    ]
    size = np.asarray(shape, dtype=np.float64)

    # Brain: an ellipsoid, longest front to back (axis 1), with a bumpy surface.
    center = (size - 1) / 2 + rng.uniform(-0.02, 0.02, 3) * size
    axes = np.array([0.40, 0.45, 0.40]) * size * rng.uniform(0.96, 1.04, 3)
    rel = [(g - np.float32(c)) / np.float32(a) for g, c, a in zip(grid, center, axes, strict=True)]
    rho = np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2)
    unit = [r / np.maximum(rho, 1e-6) for r in rel]
    rho = rho / (1 + _angular_perturbation(rng, unit, 0.05))
    brain = rho < 1.0

    tissue = np.full(shape, _BG, dtype=np.uint8)
    tissue[brain] = _WM
    # Cortical grey matter: an outer shell with a wavy inner boundary, plus sulcal CSF at the surface.
    folds = _smooth_field(rng, shape, 7)
    tissue[brain & (rho + 0.05 * folds > 0.78)] = _GM
    tissue[brain & (rho + 0.02 * folds > 0.97)] = _CSF

    # Lateral ventricles: two elongated ellipsoids either side of the midline.
    v_scale = rng.uniform(0.8, 1.2)
    for side in (-1.0, 1.0):
        v_center = np.array([side * 0.13, rng.uniform(-0.05, 0.05), 0.10])
        v_axes = np.array([0.09, 0.33, 0.16]) * v_scale
        v = sum(((r - np.float32(c)) / np.float32(a)) ** 2 for r, c, a in zip(rel, v_center, v_axes, strict=True))
        tissue[v < 1.0] = _CSF

    # Tumour: centre well inside the brain; nested core < rim < edema along one rotated, bumpy shape.
    while True:
        t_rel = rng.uniform(-0.55, 0.55, 3)
        if np.linalg.norm(t_rel) < 0.55:
            break
    t_center = center + t_rel * axes
    brain_radius = float(np.mean(axes))
    r_ed = max(rng.uniform(0.30, 0.45) * brain_radius, 5.0)
    r_et = max(rng.uniform(0.5, 0.7) * r_ed, 3.2)
    r_ncr = max(rng.uniform(0.5, 0.75) * r_et, 1.6)
    r_et, r_ed = max(r_et, r_ncr + 1.5), max(r_ed, r_et + 2.0)
    rot = random_rotation(rng)
    ratios = rng.uniform(0.75, 1.25, 3)
    offset = [g - np.float32(c) for g, c in zip(grid, t_center, strict=True)]
    local = [
        (np.float32(rot[0, i]) * offset[0] + np.float32(rot[1, i]) * offset[1] + np.float32(rot[2, i]) * offset[2])
        / np.float32(ratios[i])
        for i in range(3)
    ]
    dist = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2)
    t_unit = [x / np.maximum(dist, 1e-6) for x in local]
    d_core = dist / (1 + _angular_perturbation(rng, t_unit, 0.15))
    rim = 1 + _angular_perturbation(rng, t_unit, 0.12)
    d_edema = dist / (1 + _angular_perturbation(rng, t_unit, 0.30))
    ncr = d_core < r_ncr
    et = (d_core < r_et * rim) & ~ncr
    edema = ((d_edema < r_ed) | (d_core < r_et * rim + 1.0)) & ~(ncr | et)
    tissue[brain & edema] = _ED
    tissue[brain & et] = _ET
    tissue[brain & ncr] = _NCR
    return tissue


def generate_phantom_case(shape: Sequence[int] = (48, 48, 48), seed: int = 0) -> dict[str, np.ndarray]:
    """Generate one synthetic BraTS case (see the module docstring for what each modality shows).

    Args:
        shape: volume shape, every side at least 24 voxels.
        seed: random seed; the same ``(shape, seed)`` gives bit-identical arrays.

    Returns:
        ``{"flair", "t1", "t1ce", "t2"}``: int16 images, 0 outside the brain; ``"seg"``: uint8 labels
        in the BraTS 2021 convention (0 background, 1 necrosis, 2 edema, 4 enhancing tumour).

    Raises:
        ValueError: if ``shape`` is not three integers of at least 24.
    """
    shape = _check_shape(shape)
    rng = np.random.default_rng(seed)
    tissue = _tissue_map(rng, shape)
    brain = tissue != _BG
    tumour = tissue >= _NCR
    heterogeneity = _smooth_field(rng, shape, 9)

    case: dict[str, np.ndarray] = {}
    for modality in MODALITIES:
        image = np.asarray(_MEANS[modality], dtype=np.float32)[tissue]
        image[tumour] *= 1 + 0.06 * heterogeneity[tumour]
        image = ndimage.gaussian_filter(image, sigma=0.6)
        image *= np.exp(0.12 * _smooth_field(rng, shape, 3))
        scale = _COUNTS[modality] * np.exp(rng.uniform(np.log(0.75), np.log(1.33)))
        sigma = np.float32(_NOISE[modality] * scale)
        image *= np.float32(scale)
        real = image + sigma * rng.standard_normal(shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(shape, dtype=np.float32)
        image = np.sqrt(real * real + imag * imag)
        image[~brain] = 0
        case[modality] = np.clip(np.rint(image), 0, np.iinfo(np.int16).max).astype(np.int16)
    case["seg"] = _TISSUE_TO_LABEL[tissue]
    return case


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_data_dtype(array.dtype)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))


def _write_case(case_dir: Path, shape: tuple[int, int, int], seed: int, overwrite: bool) -> None:
    write_brats_case(case_dir, generate_phantom_case(shape, seed), brats_affine(shape), overwrite)


def _make_temporary_dir(case_dir: Path) -> Path:
    """A new hidden folder next to ``case_dir``, with the mode ``mkdir`` gives (``0o777`` less the umask).

    ``tempfile.mkdtemp`` would make it ``0o700``, and the folder becomes the case folder by a rename.
    """
    while True:
        tmp_dir = case_dir.parent / f".{case_dir.name}.{secrets.token_hex(6)}.tmp"
        try:
            tmp_dir.mkdir()
            return tmp_dir
        except FileExistsError:
            continue


def write_brats_case(
    case_dir: str | os.PathLike, case: dict[str, np.ndarray], affine: np.ndarray, overwrite: bool = False
) -> Path:
    """Write one case's arrays as ``case_dir/<case_dir name>_<key>.nii.gz``, the folder appearing atomically.

    The folder and its files follow the umask, as ``mkdir`` and ``open`` would make them.

    Args:
        case_dir: the case folder (its parent must exist); its name is the case identifier.
        case: key (``flair``, ``t1``, ``t1ce``, ``t2``, ``seg``) → array, saved with the array's dtype.
        affine: the 4 x 4 voxel-to-world affine of every array.
        overwrite: replace an existing case folder.

    Returns:
        ``case_dir`` as a ``Path``.

    Raises:
        FileExistsError: if ``case_dir`` exists and ``overwrite`` is False (nothing is written then).
    """
    case_dir = Path(case_dir)
    tmp_dir = _make_temporary_dir(case_dir)
    try:
        for name, array in case.items():
            _save_nifti(array, affine, tmp_dir / f"{case_dir.name}_{name}.nii.gz")
        if case_dir.exists() or case_dir.is_symlink():
            if not overwrite:
                raise FileExistsError(f"{case_dir} already exists; pass overwrite=True to replace it")
            # A non-empty directory cannot be replaced in one rename: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{case_dir.name}.", suffix=".old", dir=case_dir.parent))
            os.replace(case_dir, old / case_dir.name)
            os.replace(tmp_dir, case_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp_dir, case_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    return case_dir


def write_phantom_dataset(
    out_dir: str | os.PathLike,
    n: int = 8,
    shape: Sequence[int] = (48, 48, 48),
    seed: int = 0,
    overwrite: bool = False,
) -> list[Path]:
    """Write phantom cases in the BraTS 2021 folder layout.

    Case ``i`` is written to ``out_dir/BraTS2021_{i:05d}/BraTS2021_{i:05d}_{flair,t1,t1ce,t2,seg}.nii.gz``
    (int16 images, uint8 labels, 1 mm isotropic with the BraTS affine of :func:`brats_affine`) from seed
    ``seed + i``, so a case does not depend on ``n``. Each case folder appears atomically.

    Args:
        out_dir: the data set folder (created if needed).
        n: number of cases.
        shape: volume shape, every side at least 24 voxels.
        seed: seed of case 0.
        overwrite: replace existing case folders.

    Returns:
        The case folders, in order.

    Raises:
        ValueError: if ``n`` or ``shape`` is invalid.
        FileExistsError: if a case folder exists and ``overwrite`` is False (nothing is written then).
    """
    shape = _check_shape(shape)
    case_dirs = phantom_case_dirs(out_dir, n, overwrite)
    for i, case_dir in enumerate(case_dirs):
        _write_case(case_dir, shape, seed + i, overwrite)
    return case_dirs


def phantom_case_dirs(out_dir: str | os.PathLike, n: int, overwrite: bool = False) -> list[Path]:
    """The case folders of an ``n``-case phantom data set in ``out_dir``, checked before anything is written.

    Args:
        out_dir: the data set folder (created).
        n: number of cases.
        overwrite: allow existing case folders (they are replaced case by case).

    Returns:
        ``out_dir/<case id>`` for cases ``0 .. n-1``.

    Raises:
        ValueError: if ``n`` is not a positive integer.
        NotADirectoryError: if ``out_dir`` exists and is not a directory.
        FileExistsError: if a case folder exists and ``overwrite`` is False.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    case_dirs = [out / phantom_case_id(i) for i in range(n)]
    if not overwrite:
        existing = [d for d in case_dirs if d.exists() or d.is_symlink()]
        if existing:
            raise FileExistsError(
                f"{existing[0]} already exists ({len(existing)} of {n} case folders do); "
                "pass overwrite=True (--overwrite) to replace them"
            )
    out.mkdir(parents=True, exist_ok=True)
    return case_dirs


def ensure_phantom_dataset(
    dataset_dir: str | os.PathLike, n: int = 8, shape: Sequence[int] = (48, 48, 48), seed: int = 0
) -> Path:
    """Generate a phantom data set in ``dataset_dir`` unless it already holds something.

    Meant for the bundle's default data set folder only: a folder with any visible entry is left alone.

    Args:
        dataset_dir: the data set folder.
        n: number of cases to generate.
        shape: volume shape.
        seed: seed of case 0.

    Returns:
        ``dataset_dir`` as a ``Path``.

    Raises:
        NotADirectoryError: if ``dataset_dir`` exists and is not a directory.
    """
    path = Path(dataset_dir)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    # Hidden entries are leftovers of interrupted atomic writes, not data.
    if not path.exists() or not any(not p.name.startswith(".") for p in path.iterdir()):
        write_phantom_dataset(path, n=n, shape=shape, seed=seed, overwrite=False)
    return path
