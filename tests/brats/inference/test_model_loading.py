"""brats.inference_model: the network and its inference settings from a run folder, a bundle or a TorchScript file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from brats_cggm.brats.inference.model_loading import load_model, settings_from_config
from brats_cggm.cli.infer import main
from tests.helpers.inference_cases import MODALITIES, ROI, RegionThreshold, expected_labels, write_brats_case


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
    with pytest.raises(ValueError, match=r"garbage\.pt: cannot be read as tensors"):
        load_model(tiny_run_dir, checkpoint=garbage)
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), other)
    with pytest.raises(ValueError, match="do not fit the network"):
        load_model(tiny_run_dir, checkpoint=other)


def test_settings_from_bundle_yaml_do_not_touch_the_data():
    """The bundle's own configs give the inference settings without scanning (or generating) a data set."""
    configs = Path(__file__).resolve().parents[3] / "bundles" / "brats_cggm" / "configs"
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
