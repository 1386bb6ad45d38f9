"""scripts/plot_modality_curves.py on tiny TensorBoard runs, through its command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "plot_modality_curves.py"
MODALITIES = ("flair", "t1ce", "t1", "t2")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two run folders with the per-modality tags the BraTS bundle writes, 3 iterations each, and validation Dice
    of 2 epochs."""
    from torch.utils.tensorboard import SummaryWriter

    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for method in ("joint", "cggm"):
        run = root / method / "seed0"
        with SummaryWriter(log_dir=str(run)) as writer:
            for step in range(1, 4):
                writer.add_scalar("train/loss", 1.0 / step, step)
                for i, m in enumerate(MODALITIES):
                    writer.add_scalar(f"train/modality_dice/{m}", 0.1 * step + 0.01 * i, step)
                    writer.add_scalar(f"grad_norm/{m}", 1.0 + i, step)
                    if method == "cggm":
                        writer.add_scalar(f"cggm/B/{m}", 1.0 - 0.1 * i, step)
            for epoch in (1, 2):
                writer.add_scalar("val/dice/mean", 0.4 * epoch, epoch)
                writer.add_scalar("val/dice/tc", 0.3 * epoch, epoch)
        dirs.append(run)
    return dirs


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels, from the PNG's IHDR chunk."""
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _plot(*args: str | Path, block_matplotlib: bool = False) -> subprocess.CompletedProcess:
    """Run the script as ``python SCRIPT ARGS``; ``block_matplotlib`` makes ``import matplotlib`` fail."""
    block = "sys.modules['matplotlib'] = None; " if block_matplotlib else ""
    code = f"import runpy, sys; {block}sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    command = [sys.executable, "-c", code, str(SCRIPT), *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_writes_the_png_with_every_panel_series(runs, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.png"
    done = _plot(*runs, "--out", out)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert f"{runs[0]}: 4 train/modality_dice, 0 cggm/B, 4 grad_norm, 2 val/dice series" in done.stdout
    assert f"{runs[1]}: 4 train/modality_dice, 4 cggm/B, 4 grad_norm, 2 val/dice series" in done.stdout
    assert not list(tmp_path.glob(".*"))
    assert _png_size(out)[1] == round(3.2 * 4 * 90)


def test_a_panel_no_run_has_data_for_is_left_out(runs, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "joint.png"
    done = _plot(runs[0], "--out", out)
    assert done.returncode == 0, done.stderr
    assert f"{runs[0]}: 4 train/modality_dice, 0 cggm/B, 4 grad_norm, 2 val/dice series" in done.stdout
    assert _png_size(out)[1] == round(3.2 * 3 * 90)  # three rows of panels: no empty CGGM row for a joint run


def test_existing_output_is_kept_without_overwrite(runs, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.png"
    out.write_bytes(b"an older figure")
    done = _plot(runs[0], "--out", out)
    assert done.returncode == 1 and f"{out} exists; pass --overwrite" in done.stderr
    assert out.read_bytes() == b"an older figure"
    assert _plot(runs[0], "--out", out, "--overwrite").returncode == 0
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def test_run_folder_without_events_is_named(runs, tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    done = _plot(runs[0], empty, "--out", tmp_path / "curves.png")
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {empty}: no TensorBoard event files (events.out.tfevents.*)"
    assert not (tmp_path / "curves.png").exists()


def test_missing_matplotlib_is_one_line_naming_the_extra(runs, tmp_path):
    done = _plot(runs[0], "--out", tmp_path / "curves.png", block_matplotlib=True)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "matplotlib" in lines[0] and '".[plots]"' in lines[0], done.stderr
    assert not (tmp_path / "curves.png").exists()
