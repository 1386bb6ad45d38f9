"""Encoder files from uni-modal runs (``combine_unimodal_encoders``), loaded by a joint run (``init_encoders``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brats_cggm.brats.encoder_weights import combine_unimodal_encoders, load_encoder_weights, main
from brats_cggm.brats.model import MultiEncoderUNet, build_network
from brats_cggm.core.safe_load import WeightsLoadError
from brats_cggm.engine.checkpoint import BestModelSaver
from tests.helpers.bundle_runs import TINY_FEATURES, train_tiny_run
from tests.helpers.crafted_files import code_running_checkpoint, unsafe_advice

MODALITIES = ("flair", "t1ce", "t1", "t2")


class _Metrics:
    """The part of an evaluator engine ``BestModelSaver`` reads."""

    def __init__(self) -> None:
        self.state = type("State", (), {"metrics": {"dice": 0.5}, "key_metric_name": "dice", "epoch": 1})()


def _unimodal_run(run_dir: Path, modality: str, seed: int, features=(4, 8, 16)) -> MultiEncoderUNet:
    """A uni-modal run's folder as training leaves it: the network's weights in ``models/model.pt``."""
    torch.manual_seed(seed)
    network = build_network("cpu", (modality,), features=features)
    with torch.no_grad():  # weights no fresh network has, so that a copy from the wrong run would show
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter))
    BestModelSaver(run_dir / "models" / "model.pt", network)(_Metrics())
    return network


def _runs(tmp_path: Path, **features) -> tuple[dict[str, Path], dict[str, MultiEncoderUNet]]:
    runs, networks = {}, {}
    for seed, modality in enumerate(MODALITIES):
        runs[modality] = tmp_path / f"unimodal-{modality}"
        networks[modality] = _unimodal_run(runs[modality], modality, seed, features.get(modality, (4, 8, 16)))
    return runs, networks


def test_combined_encoders_load_into_the_joint_network(tmp_path: Path) -> None:
    runs, networks = _runs(tmp_path)
    # the runs in another order than the joint network's: the file follows ``modalities``
    shuffled = {m: runs[m] for m in reversed(MODALITIES)}
    path = combine_unimodal_encoders(tmp_path / "encoders.pt", shuffled, modalities=MODALITIES)
    joint = build_network("cpu", MODALITIES, features=(4, 8, 16))
    fusion_before = {k: v.clone() for k, v in joint.fusion.state_dict().items()}
    load_encoder_weights(joint, path)
    for modality, encoder in zip(MODALITIES, joint.encoders):
        own = networks[modality].encoders[0].state_dict()
        assert own.keys() == encoder.state_dict().keys()
        for key, value in encoder.state_dict().items():
            assert torch.equal(value, own[key]), (modality, key)
    # only the encoders come from the runs; fusion and decoder keep their initialisation
    assert all(torch.equal(v, fusion_before[k]) for k, v in joint.fusion.state_dict().items())
    # and nothing is frozen: init_encoders fine-tunes
    assert all(p.requires_grad for p in joint.encoders.parameters())
    # a joint network of another modality order is refused by init_encoders
    with pytest.raises(ValueError, match="holds encoders of"):
        load_encoder_weights(build_network("cpu", tuple(reversed(MODALITIES)), features=(4, 8, 16)), path)


def test_module_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs, networks = _runs(tmp_path)
    out = tmp_path / "enc.pt"
    args = ["--out", str(out), *(f"{m}={runs[m]}" for m in MODALITIES)]
    assert main(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    joint = load_encoder_weights(build_network("cpu", MODALITIES, features=(4, 8, 16)), out)
    assert torch.equal(
        joint.encoders[3].levels[0].conv1.conv.weight, networks["t2"].encoders[0].levels[0].conv1.conv.weight
    )
    assert main(args) == 1  # exists
    assert "exists" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x.pt"), "flair"]) == 2
    assert "MODALITY=RUN" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_bad_runs_are_refused_naming_the_file_and_nothing_is_written(tmp_path: Path) -> None:
    out = tmp_path / "encoders.pt"
    runs, _ = _runs(tmp_path / "ok")
    # a modality without a run
    partial = {m: runs[m] for m in MODALITIES[:3]}
    with pytest.raises(ValueError, match=r"missing \['t2'\]"):
        combine_unimodal_encoders(out, partial, modalities=MODALITIES)
    # a run folder without its weights
    empty = tmp_path / "unimodal-empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=str(empty / "models" / "model.pt")):
        combine_unimodal_encoders(out, {**runs, "t1": empty})
    # encoders of other widths
    wide = tmp_path / "unimodal-wide"
    _unimodal_run(wide, "t2", 9, features=(4, 8, 32))
    with pytest.raises(
        ValueError, match=rf"t2: {wide / 'models' / 'model.pt'} has an encoder of features \[4, 8, 32\]"
    ):
        combine_unimodal_encoders(out, {**runs, "t2": wide})
    # a joint network's weights (several encoders) and a file of tensors that is not a network
    joint = tmp_path / "joint.pt"
    torch.save(build_network("cpu", MODALITIES, features=(4, 8, 16)).state_dict(), joint)
    with pytest.raises(ValueError, match=f"flair: {joint} holds several encoders"):
        combine_unimodal_encoders(out, {**runs, "flair": joint})
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match=f"t1ce: {other} has no MultiEncoderUNet encoder"):
        combine_unimodal_encoders(out, {**runs, "t1ce": other})
    # a file that is not tensors at all, and one that would run code when unpickled
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    with pytest.raises(WeightsLoadError, match=f"{text}: cannot be read as tensors"):
        combine_unimodal_encoders(out, {**runs, "t1": text})
    crafted = code_running_checkpoint(tmp_path / "crafted.pt", tmp_path / "code_ran")
    with pytest.raises(WeightsLoadError) as info:
        combine_unimodal_encoders(out, {**runs, "t1": crafted})
    assert str(info.value).startswith(f"{crafted}: refused") and unsafe_advice(str(info.value)) == []
    assert not (tmp_path / "code_ran").exists()
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("encoders")] == []


def test_encoders_of_trained_unimodal_bundle_runs(tmp_path: Path, phantom_dataset: Path) -> None:
    """Real one-epoch uni-modal runs of the bundle (joint balancer, as ``brats-cggm-compare --unimodal`` trains
    them): their ``models/model.pt`` combine into the encoders of a joint network."""
    runs = {
        m: train_tiny_run(
            tmp_path / f"unimodal-{m}" / "seed0", phantom_dataset, ("configs/balancers/joint.yaml",), modalities=[m]
        )
        for m in ("t2", "flair")
    }
    path = combine_unimodal_encoders(tmp_path / "encoders.pt", runs, modalities=["flair", "t2"])
    joint = load_encoder_weights(build_network("cpu", ("flair", "t2"), features=TINY_FEATURES), path)
    for modality, encoder in zip(("flair", "t2"), joint.encoders):
        trained = torch.load(runs[modality] / "models" / "model.pt", weights_only=True)
        for key, value in encoder.state_dict().items():
            assert torch.equal(value, trained[f"encoders.0.{key}"]), (modality, key)
    # the two runs trained apart (same seed, other data): a mix-up of the runs would show
    first, second = (e.levels[0].conv1.conv.weight for e in joint.encoders)
    assert not torch.equal(first, second)
