"""The overlay picture of a case (``brats_cggm.brats.reporting.overlay``)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

from brats_cggm.brats.reporting.overlay import (
    PANEL_SIZE,
    TITLE_HEIGHT,
    display_volume,
    encode_png,
    lesion_centre,
    overlay_path,
    overlay_size,
    render_overlay,
    require_pillow,
    save_overlay,
)

PIL = pytest.importorskip("PIL.Image")
SHAPE = (30, 24, 20)
AFFINE = np.diag([-1.5, 2.0, 2.5, 1.0])  # LAS, not 1 mm


def _labels() -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:4, 2:4, 2:4] = 2  # small lesion
    labels[10:20, 8:16, 6:14] = 2  # the largest one, ...
    labels[13:17, 10:14, 9:11] = 4  # ... enhancing in its middle
    return labels


def _grey() -> np.ndarray:
    return display_volume(np.random.default_rng(0).uniform(1.0, 100.0, SHAPE))


def test_lesion_centre_is_in_the_largest_lesion():
    centre = lesion_centre(_labels())
    assert 10 <= centre[0] < 20 and 8 <= centre[1] < 16 and 6 <= centre[2] < 14
    assert lesion_centre(np.zeros(SHAPE, np.uint8)) == (15, 12, 10)


def test_picture_has_its_size_and_shows_the_labels_and_the_missing_sequence():
    picture = render_overlay(_labels(), AFFINE, (1.5, 2.0, 2.5), {"flair": _grey(), "t1ce": None}, "brats2021", "P01")
    decoded = PIL.open(io.BytesIO(encode_png(picture)))
    assert decoded.format == "PNG" and decoded.size == overlay_size() == (2 * PANEL_SIZE, picture.size[1])
    pixels = np.asarray(decoded.convert("RGB"), dtype=np.int32)
    flair = pixels[TITLE_HEIGHT : TITLE_HEIGHT + 3 * PANEL_SIZE, :PANEL_SIZE]
    t1ce = pixels[TITLE_HEIGHT : TITLE_HEIGHT + 3 * PANEL_SIZE, PANEL_SIZE:]
    # edema is drawn green, enhancing tumour yellow: both show in the FLAIR column
    greenish = (flair[..., 1] > flair[..., 0] + 40) & (flair[..., 1] > flair[..., 2] + 40)
    yellowish = (flair[..., 0] > flair[..., 2] + 60) & (flair[..., 1] > flair[..., 2] + 60)
    assert greenish.any() and yellowish.any()
    # the missing T1ce is a uniform blank panel (but for its text)
    assert (np.abs(t1ce - 40).max(axis=2) == 0).mean() > 0.9


def test_picture_size_does_not_depend_on_the_volume():
    labels = np.zeros((8, 50, 9), np.uint8)
    grey = {"flair": np.zeros((8, 50, 9), np.uint8), "t1ce": np.zeros((8, 50, 9), np.uint8)}
    assert render_overlay(labels, np.eye(4), (1, 1, 1), grey, "brats2023").size == overlay_size()
    with pytest.raises(ValueError, match="flair has shape"):
        render_overlay(labels, np.eye(4), (1, 1, 1), {"flair": np.zeros((3, 3, 3), np.uint8)}, "brats2021")


def test_display_volume_stretches_the_nonzero_range():
    volume = np.zeros((10, 10, 10))
    volume[2:8, 2:8, 2:8] = np.linspace(10.0, 20.0, 216).reshape(6, 6, 6)
    shown = display_volume(volume)
    assert shown.dtype == np.uint8 and shown[0, 0, 0] == 0 and shown.max() == 255
    assert not display_volume(np.zeros((3, 3, 3))).any()


def test_save_overlay_is_atomic_and_refuses_to_replace(tmp_path: Path):
    path = overlay_path(tmp_path / "P01.json")
    assert path == tmp_path / "P01.png"
    save_overlay(b"\x89PNG first", path)
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        save_overlay(b"second", path)
    save_overlay(b"third", path, overwrite=True)
    assert path.read_bytes() == b"third" and sorted(p.name for p in tmp_path.iterdir()) == ["P01.png"]


def test_missing_pillow_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "PIL.ImageDraw", None)
    with pytest.raises(ImportError, match=r"needs Pillow: pip install Pillow.*--no-report"):
        require_pillow()
