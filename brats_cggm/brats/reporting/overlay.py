"""A case's overlay picture: three orthogonal slices through its largest lesion, FLAIR and T1ce side by side.

Rows are the axial, coronal and sagittal planes through the largest connected lesion (the slice of each plane
that holds most of its voxels; the volume's centre when nothing is labelled), columns the sequences of
:data:`DISPLAY_SEQUENCES`; labels are drawn over the images in the colours of the legend at the bottom. Slices
are shown in the RAS frame (the patient's right on the right of axial and coronal panels, superior up, anterior on
the right of sagittal panels) at their physical aspect ratio. A sequence the case lacks is a blank panel that
says so. The picture is :func:`overlay_size` pixels whatever the volume.

Drawn with Pillow (``pip install Pillow``, or the ``adapters`` extra), imported only when a picture is made.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from brats_cggm.brats.data.labels import LabelConvention, get_label_convention
from brats_cggm.brats.metrics.challenge_regions import RESECTION_CAVITY_LABEL
from brats_cggm.brats.reporting.case_report import CONNECTIVITY
from brats_cggm.core.files import save_new_file

__all__ = [
    "DISPLAY_SEQUENCES",
    "LEGEND_HEIGHT",
    "PANEL_SIZE",
    "PLANES",
    "TITLE_HEIGHT",
    "display_volume",
    "encode_png",
    "lesion_centre",
    "overlay_path",
    "overlay_size",
    "render_overlay",
    "require_pillow",
    "save_overlay",
]

#: The sequences shown, one column each, in this order.
DISPLAY_SEQUENCES: tuple[str, ...] = ("flair", "t1ce")

#: The planes shown, one row each, in this order.
PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")

#: Side of a panel, and heights of the title and legend bars, in pixels.
PANEL_SIZE = 192
TITLE_HEIGHT = 22
LEGEND_HEIGHT = 22

_ALPHA = 0.45
_BLANK = (40, 40, 40)
_TEXT = (255, 255, 255)
# colour by the label's role in its convention (core, edema, enhancing) and the resection cavity
_ROLE_COLOURS = {"core": (230, 40, 40), "edema": (40, 200, 60), "enhancing": (255, 215, 0), "rc": (60, 140, 255)}


def overlay_size() -> tuple[int, int]:
    """``(width, height)`` of every overlay picture, in pixels."""
    return len(DISPLAY_SEQUENCES) * PANEL_SIZE, TITLE_HEIGHT + len(PLANES) * PANEL_SIZE + LEGEND_HEIGHT


def overlay_path(record: str | os.PathLike) -> Path:
    """The picture beside a case's JSON record: ``<case>.png`` for ``<case>.json``."""
    return Path(record).with_suffix(".png")


def require_pillow() -> Any:
    """Pillow's ``PIL`` package, imported now.

    Returns:
        The package (its ``Image``, ``ImageDraw`` and ``ImageFont`` modules loaded).

    Raises:
        ImportError: Pillow is not installed, saying how to install it or to leave out the report.
    """
    try:
        import PIL.Image
        import PIL.ImageDraw
        import PIL.ImageFont
    except ImportError as exc:
        raise ImportError(
            "the case report's overlay picture needs Pillow: pip install Pillow (or brats-cggm[adapters]), "
            "or pass --no-report"
        ) from exc
    return PIL


def display_volume(volume: np.ndarray) -> np.ndarray:
    """A sequence as 8-bit grey levels: its nonzero voxels' 0.5th-99.5th percentile range stretched to 0-255.

    Args:
        volume: the sequence, ``(X, Y, Z)``.

    Returns:
        ``uint8`` of the same shape (all 0 for an all-zero volume).
    """
    data = np.asarray(volume, dtype=np.float32)
    nonzero = data[data != 0]
    if nonzero.size == 0:
        return np.zeros(data.shape, dtype=np.uint8)
    low, high = np.percentile(nonzero[:: max(1, nonzero.size // 200_000)], [0.5, 99.5])
    scaled = (data - low) / max(float(high - low), 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def lesion_centre(labels: np.ndarray) -> tuple[int, int, int]:
    """The voxel the slices go through: per axis, the slice holding most of the largest connected lesion.

    Args:
        labels: ``(X, Y, Z)`` label map (0 background); lesions are 26-connected tumour voxels.

    Returns:
        The indices; the volume's centre when no voxel is labelled.
    """
    tumour = np.asarray(labels) > 0
    components, count = ndimage.label(tumour, structure=CONNECTIVITY)
    if count == 0:
        return tuple(s // 2 for s in tumour.shape)
    largest = components == int(np.argmax(np.bincount(components.ravel())[1:])) + 1
    centre = []
    for axes in ((1, 2), (0, 2), (0, 1)):
        counts = largest.sum(axis=axes)
        fullest = np.flatnonzero(counts == counts.max())
        centre.append(int(fullest[len(fullest) // 2]))  # the middle one of equally full slices
    return tuple(centre)  # type: ignore[return-value]


def _canonical(array: np.ndarray, affine: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, tuple[float, ...]]:
    """``array`` with its axes turned and flipped to RAS, and its spacing in the new axis order."""
    orientation = nib.orientations.io_orientation(np.asarray(affine))
    out = nib.orientations.apply_orientation(np.asarray(array), orientation)
    new_spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(orientation):
        new_spacing[int(target)] = float(spacing[axis])
    return out, tuple(new_spacing)


def _plane(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """A RAS volume's slice as rows top to bottom: superior up (anterior up in the axial plane)."""
    if plane == "axial":
        cut = volume[:, :, index]  # (x, y)
    elif plane == "coronal":
        cut = volume[:, index, :]  # (x, z)
    else:
        cut = volume[index, :, :]  # (y, z)
    return np.flipud(cut.T)


def _plane_spacing(spacing: Sequence[float], plane: str) -> tuple[float, float]:
    """(row, column) spacing of a plane of :func:`_plane`."""
    x, y, z = spacing
    return {"axial": (y, x), "coronal": (z, x), "sagittal": (z, y)}[plane]


def _fit(shape: tuple[int, int], pixel: tuple[float, float]) -> tuple[int, int]:
    """(width, height) of a slice in a panel, at its physical aspect ratio."""
    height_mm, width_mm = shape[0] * pixel[0], shape[1] * pixel[1]
    scale = PANEL_SIZE / max(height_mm, width_mm, 1e-6)
    return max(1, round(width_mm * scale)), max(1, round(height_mm * scale))


def _label_colours(conv: LabelConvention) -> dict[int, tuple[int, int, int]]:
    colours = {
        conv.core: _ROLE_COLOURS["core"],
        conv.edema: _ROLE_COLOURS["edema"],
        conv.enhancing: _ROLE_COLOURS["enhancing"],
    }
    if conv.name == "brats2023":
        colours[RESECTION_CAVITY_LABEL] = _ROLE_COLOURS["rc"]
    return colours


def _panel(pil: Any, grey: np.ndarray, labels: np.ndarray, pixel: tuple[float, float], colours: Mapping) -> Any:
    size = _fit(grey.shape, pixel)
    shown = np.asarray(pil.Image.fromarray(np.ascontiguousarray(grey)).resize(size, pil.Image.BILINEAR), np.float32)
    cut = np.asarray(pil.Image.fromarray(np.ascontiguousarray(labels)).resize(size, pil.Image.NEAREST))
    rgb = np.repeat(shown[..., None], 3, axis=2)
    for value, colour in colours.items():
        inside = cut == value
        rgb[inside] = (1.0 - _ALPHA) * rgb[inside] + _ALPHA * np.asarray(colour, np.float32)
    panel = pil.Image.new("RGB", (PANEL_SIZE, PANEL_SIZE), (0, 0, 0))
    panel.paste(pil.Image.fromarray(rgb.astype(np.uint8)), ((PANEL_SIZE - size[0]) // 2, (PANEL_SIZE - size[1]) // 2))
    return panel


def render_overlay(
    labels: np.ndarray,
    affine: np.ndarray,
    spacing: Sequence[float],
    sequences: Mapping[str, np.ndarray | None],
    convention: str | LabelConvention,
    title: str = "",
) -> Any:
    """The overlay picture of a case.

    Args:
        labels: ``(X, Y, Z)`` integer labels in the input's grid.
        affine: the input's voxel-to-world affine (for the RAS frame).
        spacing: its voxel size (mm).
        sequences: the volumes of :data:`DISPLAY_SEQUENCES` in the same grid, ``uint8`` grey levels (see
            :func:`display_volume`); None or absent for a sequence the case lacks.
        convention: the labels' convention (for the colours and the legend).
        title: the text of the title bar (the case id).

    Returns:
        A ``PIL.Image.Image``, RGB, :func:`overlay_size` pixels.

    Raises:
        ImportError: Pillow is not installed (see :func:`require_pillow`).
        ValueError: a sequence's shape differs from the labels'.
    """
    pil = require_pillow()
    conv = get_label_convention(convention)
    colours = _label_colours(conv)
    shape = np.asarray(labels).shape
    for name, volume in sequences.items():
        if volume is not None and np.asarray(volume).shape != shape:
            raise ValueError(f"overlay: {name} has shape {np.asarray(volume).shape}, the labels {shape}")
    canonical, ras_spacing = _canonical(np.asarray(labels, dtype=np.uint8), affine, spacing)
    centre = lesion_centre(canonical)
    width, height = overlay_size()
    picture = pil.Image.new("RGB", (width, height), (0, 0, 0))
    draw = pil.ImageDraw.Draw(picture)
    font = pil.ImageFont.load_default()
    draw.text((4, 4), title, fill=_TEXT, font=font)
    for column, name in enumerate(DISPLAY_SEQUENCES):
        volume = sequences.get(name)
        grey = None if volume is None else _canonical(np.asarray(volume, dtype=np.uint8), affine, spacing)[0]
        for row, plane in enumerate(PLANES):
            index = centre[{"axial": 2, "coronal": 1, "sagittal": 0}[plane]]
            corner = (column * PANEL_SIZE, TITLE_HEIGHT + row * PANEL_SIZE)
            if grey is None:
                picture.paste(pil.Image.new("RGB", (PANEL_SIZE, PANEL_SIZE), _BLANK), corner)
                draw.text((corner[0] + 4, corner[1] + PANEL_SIZE // 2), f"{name}: missing", fill=_TEXT, font=font)
            else:
                cut = _plane(canonical, plane, index)
                panel = _panel(pil, _plane(grey, plane, index), cut, _plane_spacing(ras_spacing, plane), colours)
                picture.paste(panel, corner)
            draw.text((corner[0] + 4, corner[1] + 2), f"{name} {plane} {index}", fill=_TEXT, font=font)
    x = 4
    legend_top = TITLE_HEIGHT + len(PLANES) * PANEL_SIZE
    for value, colour in colours.items():
        text = conv.names.get(value, "resection cavity (RC)")
        short = text[text.find("(") + 1 : text.find(")")] if "(" in text else text
        draw.rectangle((x, legend_top + 6, x + 10, legend_top + 16), fill=colour)
        draw.text((x + 14, legend_top + 5), f"{value} {short}", fill=_TEXT, font=font)
        x += 14 + int(draw.textlength(f"{value} {short}", font=font)) + 10
    return picture


def encode_png(picture: Any) -> bytes:
    """A picture of :func:`render_overlay` as PNG bytes."""
    stream = io.BytesIO()
    picture.save(stream, format="PNG")
    return stream.getvalue()


def save_overlay(png: bytes, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write an overlay picture atomically, refusing to replace a file unless ``overwrite``.

    Args:
        png: the picture, PNG bytes (see :func:`encode_png`).
        path: the ``.png`` file.
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    return save_new_file(path, png, overwrite)
