"""``brats-cggm-food101-features``: kebab-case flags, feature files written, errors on stderr with exit 1 or 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from brats_cggm.adapters import synthetic
from brats_cggm.cli.food101_features import main

h5py = pytest.importorskip("h5py")
pytest.importorskip("PIL")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def food_and_vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("food101_cli")
    return synthetic.write_food101_json(root / "food101"), synthetic.write_tiny_vit(root / "vit")


def test_writes_the_image_features_then_refuses_to_overwrite(food_and_vit, tmp_path, capsys):
    food, vit = food_and_vit
    out = tmp_path / "feat"
    argv = [str(food), "--output-dir", str(out), "--image-model", str(vit), "--device", "cpu", "--dtype", "float32"]
    assert main(argv) == 0
    assert f"image: {out / 'image_features.h5'}" in capsys.readouterr().out
    with h5py.File(out / "image_features.h5", "r") as f:
        assert f["dev_1"].shape == (16,) and f["dev_1"].dtype == "float32"
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("brats-cggm-food101-features: error: ") and "image_features.h5" in captured.err
    assert "exists" in captured.err and not captured.out
    assert main([*argv, "--overwrite"]) == 0


def test_bad_arguments_and_data_named_on_stderr(tmp_path, capsys):
    assert main([str(tmp_path), "--output-dir", str(tmp_path / "o")]) == 2
    assert "--text-model and/or --image-model" in capsys.readouterr().err
    assert main([str(tmp_path), "--output-dir", str(tmp_path / "o"), "--image_model", "m"]) == 2
    assert "unrecognized arguments: --image_model" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o"), "--image-model", "m"]) == 1
    captured = capsys.readouterr()
    assert "missing" in captured.err and not captured.out
