"""BraTS-like phantoms on real anatomy: tumours grown in the MNI152 2009 template, imaged by MR signal equations.

The geometric phantoms of :mod:`brats_cggm.brats.phantoms.geometric` make one modality (FLAIR) sufficient for the whole
tumour. These phantoms spread the information as in the clinic, from tissue physics rather than hand-set
intensities:

- **Anatomy.** The ICBM 2009a nonlinear symmetric MNI152 template that nilearn ships (skull-stripped T1, grey and
  white matter probability maps; loaded from the installed package, no download). CSF is what is left of the
  brain mask: ``1 - p_GM - p_WM`` (ventricles, sulci). The maps are placed on the BraTS 240 x 240 x 155 1 mm grid
  (or a coarser ``spacing``) by an integer shift and flips at 1 mm, so at 1 mm no interpolation blurs them.
- **Tumours.** One to three lesions (multi-focal cases for lesion-wise metrics), each a necrotic core (label 1,
  sometimes absent; in half the cases with subacute haemorrhagic foci) inside an enhancing rim (label 4) inside
  vasogenic edema (label 2), with irregular shapes (random rotation, axis ratios and a smooth angular profile of
  each boundary radius). Centres lie in white
  matter far enough from the brain surface; labels are confined to the brain mask. Edema spreads along white
  matter and spares cortex and CSF (its extent is gated by the WM fraction), as vasogenic edema does.
- **Mass effect.** Before the tumour is pasted, the anatomy is pushed away from each lesion centre by a smooth,
  fold-free radial displacement: a point at radius ``r`` samples the undeformed anatomy at ``r0`` with
  ``r0^3 = r^3 - R^3 exp(-(r / 2.5R)^2)``, i.e. an incompressible expansion of a sphere of radius ``R`` near the
  lesion (``r^3 - r0^3`` is constant) tapering to no displacement far away; ``r0`` increases with ``r``, so the
  map never folds.
- **Contrast.** Each voxel is a partial-volume mixture of WM, GM, CSF (the probability maps) and the tumour
  compartments (soft boundaries); each compartment's signal comes from its proton density and T1/T2 relaxation
  times (:data:`.mr_signal.TISSUE_RELAXATION_3T`) through the signal equation of the sequence
  (:func:`.mr_signal.signal_intensity`):
  spoiled gradient echo for T1 and T1ce, spin echo for T2, inversion recovery with CSF nulled for FLAIR.
  Gadolinium shortens T1 of the enhancing tumour only (``1/T1' = 1/T1 + r1 C``). Tumour relaxation times vary
  per voxel (a smooth texture field) and per case.
- **Acquisition.** Per sequence slice thickness (FLAIR, T2 and T1 as thick 2-D axial slices, T1ce 3-D 1 mm, the
  protocol ranges of Menze et al. 2015), in-plane blur, a small rigid misregistration of each sequence to the
  label frame (up to about a voxel and a degree), a smooth multiplicative bias field, Rician noise, a random
  per-case intensity scale, int16 storage, 0 outside the brain mask (skull-stripped, as BraTS).

What follows (see docs/phantoms.md for the table of resulting contrasts): FLAIR shows edema best (CSF nulled)
but necrosis and enhancing rim alike; T2 shows edema but about as bright as CSF; T1ce shows the enhancing rim
and the dark necrosis inside it but hardly the edema, and haemorrhage looks like enhancement on it; T1 shows
necrosis as hypointense and haemorrhage as hyperintense, and is what tells haemorrhage from enhancement.

The variant ``t2-flair-mismatch`` (:data:`VARIANTS`) is a positive control for modality balancing, not anatomy: the
same labels, but the edema farther than :data:`SHORTCUT_MM` from the core is seen on T2 only (docs/phantoms.md).

References:
    Stanisz G. J. et al., "T1, T2 relaxation and magnetization transfer in tissue at 3T", Magn. Reson. Med. 54,
    507-512 (2005): WM and GM T1/T2.
    Kwan R. K.-S., Evans A. C., Pike G. B., "MRI simulation-based evaluation of image-processing and
    classification methods", IEEE Trans. Med. Imaging 18, 1085-1097 (1999) (BrainWeb): relative proton densities.
    Rohrer M. et al., "Comparison of magnetic properties of MRI contrast media solutions at different magnetic
    field strengths", Invest. Radiol. 40, 715-724 (2005): gadopentetate r1 at 3 T.
    Menze B. H. et al., "The Multimodal Brain Tumor Image Segmentation Benchmark (BRATS)", IEEE Trans. Med.
    Imaging 34, 1993-2024 (2015): the BraTS acquisition protocols.
    Fonov V. et al., "Unbiased average age-appropriate atlases for pediatric studies", NeuroImage 54, 313-327
    (2011): the ICBM 2009 template.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from brats_cggm.brats.phantoms.geometric import (
    MODALITIES,
    brats_affine,
    phantom_case_dirs,
    random_rotation,
    write_brats_case,
)
from brats_cggm.brats.phantoms.mr_signal import (
    GADOLINIUM_CONCENTRATION_MM,
    GADOLINIUM_R1_PER_MM_MS,
    MISMATCH_RELAXATION_3T,
    SEQUENCE_PROTOCOLS,
    TISSUE_RELAXATION_3T,
    Relaxation,
    SequenceProtocol,
    signal_intensity,
)

__all__ = [
    "BRATS_SHAPE",
    "VARIANTS",
    "brats_grid_affine",
    "brats_grid_shape",
    "generate_anatomical_case",
    "load_mni152_anatomy",
    "write_anatomical_phantom_dataset",
]

#: The BraTS grid (1 mm isotropic voxels).
BRATS_SHAPE: tuple[int, int, int] = (240, 240, 155)

#: The phantom variants. ``default``: the phantoms described above. ``t2-flair-mismatch``: a positive control for
#: modality balancing (docs/phantoms.md, "Positive control"): the same labels, but the edema farther than
#: :data:`SHORTCUT_MM` from the tumour core is seen on T2 only (weakly), the edema near the core on FLAIR as before.
VARIANTS: tuple[str, ...] = ("default", "t2-flair-mismatch")

#: ``t2-flair-mismatch``: edema within this distance (mm) of the tumour core keeps the default contrast (the FLAIR
#: shortcut, "edema = a few mm around the core"); beyond it, edema is infiltrated mismatch tissue.
SHORTCUT_MM = 8.0
# ``t2-flair-mismatch``: the infiltrated fraction of the outer edema, mean and per-voxel spread (fine texture,
# correlation length about 1 mm: independent from voxel to voxel at 2 mm and coarser), clipped to [0, 1].
_INFILTRATION_MEAN = 0.8
_INFILTRATION_SPREAD = 0.2

# The MNI152 2009 template nilearn ships is 197 x 233 x 189 at 1 mm, RAS; its skull-stripped brain spans
# x 26..170, y 27..207, z 0..154. BraTS index (i, j, k) takes template voxel (218 - i, 237 - j, k): the brain is
# centred in 240 x 240 and fills the 155 slices, and the flips match the BraTS affine diag(-1, -1, 1).
_MNI_FROM_BRATS_ORIGIN = (218.0, 237.0, 0.0)
_MNI_FROM_BRATS_SIGN = (-1.0, -1.0, 1.0)


def _check_spacing(spacing: float | Sequence[float]) -> tuple[float, float, float]:
    values = (spacing,) * 3 if isinstance(spacing, (int, float, np.number)) else tuple(spacing)
    if len(values) != 3 or not all(isinstance(v, (int, float, np.number)) and math.isfinite(v) for v in values):
        raise ValueError(f"spacing must be a number or three numbers (mm), got {spacing!r}")
    if not all(1.0 <= v <= 8.0 for v in values):
        raise ValueError(f"spacing must be between 1 and 8 mm per axis, got {spacing!r}")
    return float(values[0]), float(values[1]), float(values[2])


def brats_grid_shape(spacing: float | Sequence[float] = 1.0) -> tuple[int, int, int]:
    """Shape of the BraTS field of view (240 x 240 x 155 mm) sampled at ``spacing``: ``ceil(extent / spacing)``.

    Args:
        spacing: voxel size in mm, one number or one per axis (1 to 8).

    Returns:
        The grid shape, e.g. (240, 240, 155) at 1 mm, (120, 120, 78) at 2 mm, (80, 80, 52) at 3 mm.
    """
    sizes = _check_spacing(spacing)
    return tuple(math.ceil(n / s - 1e-9) for n, s in zip(BRATS_SHAPE, sizes, strict=True))  # type: ignore[return-value]


def brats_grid_affine(spacing: float | Sequence[float] = 1.0) -> np.ndarray:
    """The voxel-to-world affine of the BraTS grid at ``spacing``.

    :func:`~brats_cggm.brats.phantoms.geometric.brats_affine` at 1 mm, and at a coarser spacing the same world
    frame, voxel ``i`` centred on 1 mm position ``s i + (s-1)/2``.

    Args:
        spacing: voxel size in mm, one number or one per axis.

    Returns:
        The 4 x 4 affine (float64).
    """
    sizes = np.asarray(_check_spacing(spacing))
    affine = brats_affine(BRATS_SHAPE)
    centre_of_first = (sizes - 1) / 2
    affine[:3, 3] = affine[:3, :3] @ centre_of_first + affine[:3, 3]
    affine[:3, :3] = affine[:3, :3] * sizes[None, :]
    return affine


def _import_nilearn_datasets():
    try:
        from nilearn import datasets
    except ImportError as exc:
        raise ImportError(
            "anatomical phantoms need nilearn (it ships the MNI152 template): pip install 'brats-cggm[anatomy]'"
        ) from exc
    return datasets


def load_mni152_anatomy(spacing: float | Sequence[float] = 1.0) -> dict[str, np.ndarray]:
    """The MNI152 2009 tissue maps on the BraTS grid at ``spacing`` (cached; the arrays are read-only).

    At a spacing above 1 mm the 1 mm maps are low-pass filtered first (Gaussian, sigma ``(s - 1) / 2`` voxels
    of 1 mm per axis, the usual anti-aliasing choice) and then sampled linearly, so each coarse voxel holds about
    the mean tissue fractions of its 1 mm voxels.

    Args:
        spacing: voxel size in mm, one number or one per axis (1 to 8).

    Returns:
        ``wm``, ``gm``, ``csf``: float32 tissue fractions; ``brain``: float32 brain fraction (skull-stripped
        template above 0), all of shape :func:`brats_grid_shape`.

    Raises:
        ValueError: if ``spacing`` is invalid.
        ImportError: if nilearn (the ``anatomy`` extra) is not installed.
    """
    return _load_mni152_anatomy(_check_spacing(spacing))


@functools.lru_cache(maxsize=4)
def _load_mni152_anatomy(sizes: tuple[float, float, float]) -> dict[str, np.ndarray]:
    datasets = _import_nilearn_datasets()
    t1 = np.asarray(datasets.load_mni152_template(resolution=1).dataobj, dtype=np.float32)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, dtype=np.float32)
    brain = (t1 > 0).astype(np.float32)
    total = gm + wm
    # The two maps sum to at most 1 in this template; rescale defensively so fractions never exceed 1.
    over = np.maximum(total, 1.0)
    gm, wm = gm / over * brain, wm / over * brain
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    shape = brats_grid_shape(sizes)
    matrix = np.asarray(_MNI_FROM_BRATS_SIGN) * np.asarray(sizes)
    offset = np.asarray(_MNI_FROM_BRATS_ORIGIN) + np.asarray(_MNI_FROM_BRATS_SIGN) * (np.asarray(sizes) - 1) / 2
    out = {}
    for name, volume in (("wm", wm), ("gm", gm), ("csf", csf), ("brain", brain)):
        if max(sizes) > 1.0:
            volume = ndimage.gaussian_filter(volume, sigma=[(s - 1) / 2 for s in sizes], mode="constant")
        resampled = ndimage.affine_transform(
            volume, matrix, offset=offset, output_shape=shape, order=1, mode="constant", cval=0.0
        ).astype(np.float32)
        resampled.setflags(write=False)
        out[name] = resampled
    return out


@functools.lru_cache(maxsize=4)
def _centre_candidates(spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Possible lesion centres (mm, BraTS 1 mm index frame): white matter, with their depth in the brain (mm)."""
    anatomy = load_mni152_anatomy(spacing)
    brain = anatomy["brain"] >= 0.5
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)
    # A 4 mm lattice is plenty of choice and keeps the list short.
    step = [max(1, round(4.0 / s)) for s in spacing]
    sub = tuple(slice(None, None, st) for st in step)
    index = np.argwhere((anatomy["wm"][sub] >= 0.6) & (depth[sub] >= 8.0)) * np.asarray(step)
    sizes = np.asarray(spacing)
    centres = index * sizes + (sizes - 1) / 2
    return centres, depth[tuple(index.T)]


@dataclass(frozen=True)
class _Lesion:
    centre: np.ndarray  # mm
    rotation: np.ndarray
    axis_ratios: np.ndarray
    r_enhancing: float
    r_necrosis: float  # 0: no necrotic core
    r_edema: float
    r_push: float
    profiles: tuple[tuple[np.ndarray, np.ndarray, np.ndarray, float], ...]  # (directions, freqs, phases, amp)


def _random_profile(rng: np.random.Generator, amplitude: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    k = 5
    directions = rng.standard_normal((k, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    freqs = rng.uniform(1.5, 4.0, k)
    phases = rng.uniform(0.0, 2 * np.pi, k)
    weights = rng.uniform(0.5, 1.0, k)
    return directions * freqs[:, None], phases, weights / weights.sum(), amplitude


def _evaluate_profile(profile, unit: Sequence[np.ndarray]) -> np.ndarray:
    """A smooth function of direction with values in ``[-amplitude, amplitude]``: a sum of plane waves on the sphere."""
    directions, phases, weights, amplitude = profile
    out = np.zeros(unit[0].shape, dtype=np.float32)
    for d, p, w in zip(directions, phases, weights, strict=True):
        out += np.float32(w * amplitude) * np.cos(
            np.float32(d[0]) * unit[0] + np.float32(d[1]) * unit[1] + np.float32(d[2]) * unit[2] + np.float32(p)
        )
    return out


def _sample_lesions(rng: np.random.Generator, spacing: tuple[float, float, float]) -> list[_Lesion]:
    centres, depths = _centre_candidates(spacing)
    count = int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15]))
    lesions: list[_Lesion] = []
    for index in range(count):
        main = index == 0
        r_enhancing = rng.uniform(12.0, 24.0) if main else rng.uniform(5.0, 10.0)
        has_necrosis = rng.random() < (0.85 if main else 0.5)
        r_necrosis = r_enhancing * rng.uniform(0.45, 0.8) if has_necrosis else 0.0
        r_edema = r_enhancing * rng.uniform(1.6, 2.6)
        # The deepest white matter if none is deep enough for a lesion this large.
        allowed = np.flatnonzero(depths >= min(0.8 * r_enhancing + 4.0, float(depths.max())))
        for _ in range(50):
            centre = centres[rng.choice(allowed)] + rng.uniform(-2.0, 2.0, 3)
            if all(np.linalg.norm(centre - o.centre) > o.r_enhancing + r_enhancing + 6.0 for o in lesions):
                break
        else:
            break
        lesions.append(
            _Lesion(
                centre=centre,
                rotation=random_rotation(rng),
                axis_ratios=rng.uniform(0.8, 1.25, 3),
                r_enhancing=r_enhancing,
                r_necrosis=r_necrosis,
                r_edema=r_edema,
                r_push=r_enhancing * rng.uniform(0.5, 0.9),
                profiles=(_random_profile(rng, 0.15), _random_profile(rng, 0.12), _random_profile(rng, 0.3)),
            )
        )
    return lesions


def _box(
    centre: np.ndarray, radius: float, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> tuple[slice, ...]:
    out = []
    for c, n, s in zip(centre, shape, spacing, strict=True):
        lo = max(0, math.floor((c - radius - (s - 1) / 2) / s))
        hi = min(n, math.ceil((c + radius - (s - 1) / 2) / s) + 1)
        out.append(slice(lo, max(lo, hi)))
    return tuple(out)


def _box_coordinates(box: tuple[slice, ...], spacing: tuple[float, float, float]) -> list[np.ndarray]:
    """The mm positions (BraTS 1 mm index frame) of a box's voxels, as three broadcastable arrays."""
    return [
        (np.arange(b.start, b.stop, dtype=np.float32) * np.float32(s) + np.float32((s - 1) / 2)).reshape(
            [-1 if i == axis else 1 for i in range(3)]
        )
        for axis, (b, s) in enumerate(zip(box, spacing, strict=True))
    ]


def _push_anatomy(maps: dict[str, np.ndarray], lesion: _Lesion, spacing: tuple[float, float, float]) -> None:
    """Mass effect: in place, resample the maps near ``lesion`` at ``r0 = cbrt(r^3 - R^3 exp(-(r/2.5R)^2))``."""
    reach = 2.5 * lesion.r_push
    shape = next(iter(maps.values())).shape
    box = _box(lesion.centre, 1.6 * reach, shape, spacing)
    if any(b.stop - b.start < 2 for b in box):
        return
    coords = _box_coordinates(box, spacing)
    offset = [
        np.broadcast_to(c - np.float32(o), [b.stop - b.start for b in box])
        for c, o in zip(coords, lesion.centre, strict=True)
    ]
    radius = np.sqrt(offset[0] ** 2 + offset[1] ** 2 + offset[2] ** 2)
    pushed = np.float32(lesion.r_push**3) * np.exp(-((radius / np.float32(reach)) ** 2))
    origin_radius = np.cbrt(np.maximum(radius**3 - pushed, 0.0))
    ratio = origin_radius / np.maximum(radius, np.float32(1e-6))
    source = np.stack(
        [
            (np.float32(o) + off * ratio - np.float32((s - 1) / 2)) / np.float32(s) - np.float32(b.start)
            for o, off, s, b in zip(lesion.centre, offset, spacing, box, strict=True)
        ]
    )
    for volume in maps.values():
        region = np.ascontiguousarray(volume[box])
        volume[box] = ndimage.map_coordinates(region, source, order=1, mode="nearest")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(0.5) * x))


def _lesion_fractions(
    lesion: _Lesion, wm: np.ndarray, csf: np.ndarray, box: tuple[slice, ...], spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft (partial-volume) fractions of one lesion in ``box``: tumour core, necrosis, edema extent."""
    coords = _box_coordinates(box, spacing)
    offset = [c - np.float32(o) for c, o in zip(coords, lesion.centre, strict=True)]
    rot = lesion.rotation
    local = [
        (np.float32(rot[0, i]) * offset[0] + np.float32(rot[1, i]) * offset[1] + np.float32(rot[2, i]) * offset[2])
        / np.float32(lesion.axis_ratios[i])
        for i in range(3)
    ]
    dist = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2)
    unit = [x / np.maximum(dist, np.float32(1e-6)) for x in local]
    core_profile, rim_profile, edema_profile = (_evaluate_profile(p, unit) for p in lesion.profiles)
    width = np.float32(0.3 + 0.25 * float(np.mean(spacing)))
    r_enhancing = np.float32(lesion.r_enhancing) * (1 + core_profile) * (1 + rim_profile)
    core = _sigmoid((r_enhancing - dist) / width)
    if lesion.r_necrosis > 0:
        necrosis = _sigmoid((np.float32(lesion.r_necrosis) * (1 + core_profile) - dist) / width)
    else:
        necrosis = np.zeros_like(core)
    # Vasogenic edema follows white matter, spares cortex and CSF, and always lines the core by a few mm.
    envelope = _sigmoid((np.float32(lesion.r_edema) * (1 + edema_profile) - dist) / np.float32(2.0))
    white = np.clip((wm[box] - np.float32(0.2)) / np.float32(0.4), 0.0, 1.0)
    lining = _sigmoid((r_enhancing + np.float32(2.5) - dist) / width)
    edema = np.maximum(envelope * white, lining) * np.clip(1 - csf[box], 0.0, 1.0)
    return core, np.minimum(necrosis, core), edema


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: Sequence[float]) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=list(sigma_vox))
    field -= field.mean()
    field /= field.std() + np.float32(1e-12)
    return field


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int], amplitude: float) -> np.ndarray:
    """A smooth multiplicative field ``exp(p(x))``, ``p`` a random quadratic polynomial of the normalised position."""
    axes = [
        np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape([-1 if i == a else 1 for i in range(3)])
        for a, n in enumerate(shape)
    ]
    linear = rng.uniform(-1.0, 1.0, 3).astype(np.float32)
    quadratic = rng.uniform(-0.5, 0.5, 3).astype(np.float32)
    poly = sum(linear[a] * axes[a] + quadratic[a] * axes[a] ** 2 for a in range(3))
    poly = np.broadcast_to(poly, shape)
    return np.exp(np.float32(amplitude / 2.0) * poly)


def _misregistration(rng: np.random.Generator, protocol: SequenceProtocol, spacing: tuple[float, float, float]):
    angles = np.radians(rng.uniform(-protocol.max_rotation_deg, protocol.max_rotation_deg, 3))
    shift_mm = rng.uniform(-protocol.max_shift_mm, protocol.max_shift_mm, 3)
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    scale = np.diag(spacing)
    matrix = np.linalg.inv(scale) @ (rz @ ry @ rx) @ scale
    return matrix, shift_mm / np.asarray(spacing)


def _acquire(
    image: np.ndarray,
    rng: np.random.Generator,
    protocol: SequenceProtocol,
    spacing: tuple[float, float, float],
    wm_signal: float,
) -> np.ndarray:
    """Slice profile and in-plane blur, misregistration, bias field, Rician noise (image in units of the WM signal)."""
    thickness = rng.uniform(*protocol.slice_mm)
    fwhm = (protocol.in_plane_fwhm_mm, protocol.in_plane_fwhm_mm, thickness)
    # The voxel already averages over its own size: blur only by what the acquisition adds on top.
    sigma = [math.sqrt(max(f * f - s * s, 0.0)) / 2.3548 / s for f, s in zip(fwhm, spacing, strict=True)]
    image = ndimage.gaussian_filter(image, sigma=sigma, mode="constant")
    matrix, shift = _misregistration(rng, protocol, spacing)
    centre = (np.asarray(image.shape) - 1) / 2
    image = ndimage.affine_transform(image, matrix, offset=centre - matrix @ centre + shift, order=1, mode="constant")
    image *= _bias_field(rng, image.shape, rng.uniform(0.1, 0.25))
    sigma_noise = np.float32(protocol.noise * wm_signal)
    real = image + sigma_noise * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = sigma_noise * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(real * real + imaginary * imaginary)


def _case_relaxation(rng: np.random.Generator) -> dict[str, Relaxation]:
    """Per-case tissue properties: the table, with tumour T1/T2 varied by about 8 % and normal tissue by 2 %."""
    out = {}
    for tissue, rel in TISSUE_RELAXATION_3T.items():
        spread = 0.08 if tissue in ("edema", "enhancing", "necrosis", "haemorrhage") else 0.02
        f1, f2 = np.exp(rng.normal(0.0, spread, 2))
        out[tissue] = Relaxation(rel.proton_density, rel.t1_ms * float(f1), rel.t2_ms * float(f2))
    return out


# Counts of the white-matter signal before the per-case scale (scanner units; arbitrary, as in BraTS files).
_WM_COUNTS: dict[str, float] = {"flair": 400.0, "t1": 600.0, "t1ce": 700.0, "t2": 300.0}
# Texture amplitude of each tumour compartment's T1 and T2 (relative std of the smooth field).
_TEXTURE: dict[str, float] = {"edema": 0.08, "enhancing": 0.12, "necrosis": 0.2, "haemorrhage": 0.15}


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    return variant


def _mismatch_compartments(
    edema: np.ndarray, core: np.ndarray, seed: int, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, Relaxation]:
    """``t2-flair-mismatch``: split the edema fraction into the part near the core and the infiltrated outer part.

    Draws from its own generator (seeded by ``(seed, 28)``) so that the default draws, hence the labels, anatomy,
    lesions and acquisition, are those of the default case of the same seed.

    Args:
        edema: the edema fraction (box).
        core: the tumour core fraction (box).
        seed: the case seed.
        spacing: voxel size in mm.

    Returns:
        The edema fraction within :data:`SHORTCUT_MM` of the core (default edema tissue), the fraction of mismatch
        tissue beyond it (outer edema times the infiltrated fraction; the rest of the outer edema shows the
        anatomy), and the case's mismatch tissue relaxation (about 3 % per-case spread).
    """
    rng = np.random.default_rng((seed, 28))
    f1, f2 = np.exp(rng.normal(0.0, 0.03, 2))
    base = MISMATCH_RELAXATION_3T
    relaxation = Relaxation(base.proton_density, base.t1_ms * float(f1), base.t2_ms * float(f2))
    distance = ndimage.distance_transform_edt(core < 0.5, sampling=spacing).astype(np.float32)
    near = _sigmoid((np.float32(SHORTCUT_MM) - distance) / np.float32(1.0))
    fine = _smooth_noise(rng, edema.shape, [1.0 / s for s in spacing])
    infiltrated = np.clip(np.float32(_INFILTRATION_MEAN) + np.float32(_INFILTRATION_SPREAD) * fine, 0.0, 1.0)
    return edema * near, edema * (1 - near) * infiltrated, relaxation


def generate_anatomical_case(
    seed: int = 0, spacing: float | Sequence[float] = 1.0, variant: str = "default"
) -> dict[str, np.ndarray]:
    """Generate one BraTS-like case on MNI152 anatomy (see the module docstring for the model).

    Args:
        seed: random seed; the same ``(seed, spacing, variant)`` gives bit-identical arrays.
        spacing: voxel size in mm, one number or one per axis (1 to 8); the grid is :func:`brats_grid_shape`.
        variant: one of :data:`VARIANTS`. ``t2-flair-mismatch`` has the labels of ``default`` (same seed) and
            images that differ only in the edema farther than :data:`SHORTCUT_MM` from the core: a fraction of it
            (fine texture, mean 0.8) is tissue of :data:`.mr_signal.MISMATCH_RELAXATION_3T`, about white matter on
            FLAIR (the inversion nulls its long T1), bright on T2, and imaged as white matter on T1 and T1ce (not
            physical: a control in which one modality alone carries the outer edema).

    Returns:
        ``{"flair", "t1", "t1ce", "t2"}``: int16 images, 0 outside the brain mask; ``"seg"``: uint8 labels
        (0 background, 1 necrosis, 2 edema, 4 enhancing tumour), all of shape :func:`brats_grid_shape`.

    Raises:
        ValueError: if ``spacing`` or ``variant`` is invalid.
        ImportError: if nilearn (the ``anatomy`` extra) is not installed.
    """
    sizes = _check_spacing(spacing)
    _check_variant(variant)
    rng = np.random.default_rng(seed)
    anatomy = load_mni152_anatomy(sizes)
    maps = {name: np.array(volume) for name, volume in anatomy.items()}
    shape = maps["wm"].shape
    lesions = _sample_lesions(rng, sizes)
    for lesion in lesions:
        _push_anatomy(maps, lesion, sizes)
    brain = maps["brain"] >= 0.5
    for name in ("wm", "gm", "csf"):
        maps[name] *= brain

    # Tumour compartments in the box holding every lesion's edema.
    boxes = [_box(lesion.centre, 1.5 * lesion.r_edema + 4.0, shape, sizes) for lesion in lesions]
    box = tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))
    box_shape = tuple(b.stop - b.start for b in box)
    core = np.zeros(box_shape, np.float32)
    necrosis = np.zeros(box_shape, np.float32)
    edema = np.zeros(box_shape, np.float32)
    for lesion, own in zip(lesions, boxes, strict=True):
        part = tuple(slice(o.start - b.start, o.stop - b.start) for o, b in zip(own, box, strict=True))
        c, n, e = _lesion_fractions(lesion, maps["wm"], maps["csf"], own, sizes)
        # A later lesion paints over an earlier one's core.
        necrosis[part] = necrosis[part] * (1 - c) + n
        core[part] = core[part] * (1 - c) + c
        edema[part] = np.maximum(edema[part], e)
    inside = brain[box]
    core *= inside
    necrosis *= inside
    enhancing = core - necrosis
    # Edema replaces most of a voxel's signal (vasogenic water) but lets the anatomy show through a little.
    edema = np.float32(0.85) * edema * (1 - core) * inside
    normal = 1 - core - edema
    if variant == "t2-flair-mismatch":
        edema_shown, mismatch, mismatch_relaxation = _mismatch_compartments(edema, core, seed, sizes)
        # Where the outer edema is not infiltrated the anatomy shows through, as it does around any compartment.
        image_normal = 1 - core - edema_shown - mismatch

    fractions = np.stack([1 - core - edema, necrosis, edema, enhancing])
    labels_box = np.array([0, 1, 2, 4], dtype=np.uint8)[np.argmax(fractions, axis=0)]
    seg = np.zeros(shape, np.uint8)
    seg[box] = labels_box * inside

    relaxation = _case_relaxation(rng)
    water = _smooth_noise(rng, box_shape, [2.5 / s for s in sizes])
    uptake = _smooth_noise(rng, box_shape, [2.0 / s for s in sizes])
    # Half the cases bleed: haemorrhagic foci fill part of the necrotic core (still label 1, as in BraTS).
    bleeding = _smooth_noise(rng, box_shape, [2.0 / s for s in sizes])
    bleeding_level = np.float32(rng.uniform(0.3, 1.2)) if rng.random() < 0.5 else np.float32(np.inf)
    haemorrhage = necrosis * _sigmoid((bleeding - bleeding_level) / np.float32(0.3))
    necrosis = necrosis - haemorrhage
    brain_box = tuple(
        slice(max(0, int(idx.min()) - 3), min(n, int(idx.max()) + 4))
        for idx, n in zip(np.nonzero(brain), shape, strict=True)
    )
    case: dict[str, np.ndarray] = {}
    for modality in MODALITIES:
        protocol = SEQUENCE_PROTOCOLS[modality]
        signal = {
            tissue: float(signal_intensity(protocol, rel.proton_density, rel.t1_ms, rel.t2_ms))
            for tissue, rel in relaxation.items()
        }
        wm_signal = signal["wm"]
        image = (
            maps["wm"] * np.float32(signal["wm"] / wm_signal)
            + maps["gm"] * np.float32(signal["gm"] / wm_signal)
            + maps["csf"] * np.float32(signal["csf"] / wm_signal)
        )
        compartments: tuple[tuple[str, np.ndarray], ...] = (
            ("necrosis", necrosis),
            ("haemorrhage", haemorrhage),
            ("edema", edema),
            ("enhancing", enhancing),
        )
        if variant == "default":
            tumour_image = image[box] * normal
        else:
            tumour_image = image[box] * image_normal
            compartments = (*compartments[:2], ("edema", edema_shown), compartments[3])
            # The control's one departure from the signal equations: T1 and T1ce image mismatch tissue as white
            # matter (a real T2-FLAIR mismatch lesion is T1-hypointense), so that T2 alone carries the outer edema.
            rel = relaxation["wm"] if protocol.kind == "gre" else mismatch_relaxation
            mismatch_signal = signal_intensity(protocol, rel.proton_density, rel.t1_ms, rel.t2_ms)
            tumour_image += mismatch * np.float32(mismatch_signal / wm_signal)
        for tissue, fraction in compartments:
            rel = relaxation[tissue]
            # Log-normal texture: more free water lengthens T1 and T2 together, and never makes them negative.
            t1: np.ndarray = np.float32(rel.t1_ms) * np.exp(np.float32(_TEXTURE[tissue]) * water)
            t2 = np.float32(rel.t2_ms) * np.exp(np.float32(1.5 * _TEXTURE[tissue]) * water)
            if protocol.contrast and tissue == "enhancing":
                gadolinium = np.float32(GADOLINIUM_CONCENTRATION_MM) * np.clip(1 + np.float32(0.35) * uptake, 0.2, None)
                t1 = 1 / (1 / t1 + np.float32(GADOLINIUM_R1_PER_MM_MS) * gadolinium)
            tissue_signal = signal_intensity(protocol, np.float32(rel.proton_density), t1, t2)
            tumour_image += fraction * (tissue_signal / np.float32(wm_signal)).astype(np.float32)
        image[box] = tumour_image
        acquired = np.zeros(shape, np.float32)
        acquired[brain_box] = _acquire(np.ascontiguousarray(image[brain_box]), rng, protocol, sizes, 1.0)
        scale = _WM_COUNTS[modality] * math.exp(rng.uniform(math.log(0.75), math.log(1.33)))
        acquired *= np.float32(scale)
        acquired[~brain] = 0
        # Keep every brain voxel nonzero: the brain mask is read back as image > 0.
        acquired[brain] = np.maximum(acquired[brain], 1.0)
        case[modality] = np.clip(np.rint(acquired), 0, np.iinfo(np.int16).max).astype(np.int16)
    case["seg"] = seg
    return case


def write_anatomical_phantom_dataset(
    out_dir: str | os.PathLike,
    n: int = 8,
    seed: int = 0,
    spacing: float | Sequence[float] = 1.0,
    overwrite: bool = False,
    variant: str = "default",
) -> list[Path]:
    """Write anatomical phantom cases in the BraTS 2021 folder layout.

    Case ``i`` is written to ``out_dir/BraTS2021_{i:05d}/BraTS2021_{i:05d}_{flair,t1,t1ce,t2,seg}.nii.gz`` from
    seed ``seed + i`` (so a case does not depend on ``n``), with the affine of :func:`brats_grid_affine`. Each
    case folder appears atomically.

    Args:
        out_dir: the data set folder (created if needed).
        n: number of cases.
        seed: seed of case 0.
        spacing: voxel size in mm, one number or one per axis (1 to 8; 1 gives the BraTS 240 x 240 x 155 grid).
        overwrite: replace existing case folders.
        variant: one of :data:`VARIANTS` (:func:`generate_anatomical_case`).

    Returns:
        The case folders, in order.

    Raises:
        ValueError: if ``n``, ``spacing`` or ``variant`` is invalid.
        NotADirectoryError: if ``out_dir`` exists and is not a directory.
        FileExistsError: if a case folder exists and ``overwrite`` is False (nothing is written then).
        ImportError: if nilearn (the ``anatomy`` extra) is not installed.
    """
    sizes = _check_spacing(spacing)
    _check_variant(variant)
    _import_nilearn_datasets()
    case_dirs = phantom_case_dirs(out_dir, n, overwrite)
    affine = brats_grid_affine(sizes)
    for i, case_dir in enumerate(case_dirs):
        write_brats_case(case_dir, generate_anatomical_case(seed + i, sizes, variant), affine, overwrite)
    return case_dirs
