"""Imbalance diagnostics: the probe on toy features with a known answer, robustness, a real tiny run, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import brats_cggm.brats.analysis.diagnostics as diagnostics
from brats_cggm.brats.analysis.diagnostics import (
    EncoderProbe,
    ProbeSettings,
    case_lesionwise_dice,
    diagnose_run,
    fit_probe,
    has_plateaued,
    robustness_from_valuation,
    run_weights,
    summarize_diagnoses,
    write_diagnostics_report,
)
from brats_cggm.brats.model import SegmentationAuxHead
from brats_cggm.brats.task import BratsSegmentationTask, modality_dice
from brats_cggm.core.shapley import all_subsets, subset_key
from tests.helpers.bundle_runs import train_tiny_run

MODALITIES = ("flair", "t1ce", "t1", "t2")
FEATURES = (2, 2, 2)


class PoolingEncoder(nn.Module):
    """A fixed "encoder": level k is the input average-pooled by 2^k, repeated to FEATURES[k] channels."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [
            F.avg_pool3d(x, 2**k).repeat(1, c, 1, 1, 1) if k else x.repeat(1, c, 1, 1, 1)
            for k, c in enumerate(FEATURES)
        ]


def _toy_cases(informative: bool, n: int, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Blobs; the input shows them (informative) or is noise unrelated to them."""
    generator = torch.Generator().manual_seed(seed)
    images, regions = [], []
    grid = torch.stack(torch.meshgrid(*[torch.arange(16.0)] * 3, indexing="ij"))
    for _ in range(n):
        centre = torch.randint(4, 12, (3, 1, 1, 1), generator=generator).float()
        blob = ((grid - centre) ** 2).sum(0).sqrt() < 4
        regions.append(blob.float().expand(3, -1, -1, -1).unsqueeze(0))
        noise = torch.randn(1, 1, 16, 16, 16, generator=generator)
        images.append((blob.float() + 0.1 * noise) if informative else noise)
    return images, regions


def _toy_probe_dice(informative: bool) -> tuple[float, int]:
    encoder, task = PoolingEncoder(), BratsSegmentationTask()
    torch.manual_seed(0)
    head = SegmentationAuxHead(FEATURES, 3, channels=4, output_stride=1, norm="batch")
    images, regions = _toy_cases(informative, 12, seed=1)
    features = [encoder(image) for image in images]
    targets = [task.aux_targets(r, head(f)) for r, f in zip(regions, features)]
    settings = ProbeSettings(max_steps=150, min_steps=40, plateau_window=20, learning_rate=1e-2, batch_size=4)
    fit = fit_probe(head, features, targets, task.loss, settings)
    assert 2 * settings.plateau_window <= fit.steps <= settings.max_steps and len(fit.losses) == fit.steps
    probe = EncoderProbe(encoder, head, channel=0)
    test_images, test_regions = _toy_cases(informative, 6, seed=2)
    with torch.no_grad():
        dice = [float(modality_dice(probe(x), r).mean()) for x, r in zip(test_images, test_regions)]
    return float(np.mean(dice)), fit.steps


def test_probe_finds_what_the_features_hold() -> None:
    informative, _ = _toy_probe_dice(True)
    uninformative, _ = _toy_probe_dice(False)
    assert informative > 0.9  # the features show the blob: the probe recovers it
    assert uninformative < 0.3  # pure noise: nothing to find (a blob is ~6% of the volume)


def test_has_plateaued() -> None:
    assert not has_plateaued([1.0] * 5, window=3, tolerance=0.01)  # too few steps
    assert has_plateaued([1.0] * 6, window=3, tolerance=0.01)
    assert not has_plateaued([1.0, 1.0, 1.0, 0.5, 0.5, 0.5], window=3, tolerance=0.01)
    # 0.5% better: flat at 1%, still improving at 0.1%
    losses = [1.0, 1.0, 1.0, 0.995, 0.995, 0.995]
    assert has_plateaued(losses, 3, 0.01) and not has_plateaued(losses, 3, 0.001)


def test_fit_probe_refuses_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="feature pyramids"):
        fit_probe(nn.Linear(1, 1), [], [], lambda a, b: a.sum())


def test_probe_settings_checked() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        ProbeSettings(max_steps=0)


def test_robustness_hand_computed() -> None:
    # value of a subset = 0.1 per modality in it, on every region; two cases, the second 0.2 higher
    results = []
    for offset in (0.0, 0.2):
        values = {subset_key(s): np.full(4, 0.1 * len(s) + offset) for s in all_subsets(MODALITIES)}
        results.append({"values": values})
    robustness = robustness_from_valuation(results, MODALITIES)
    assert len(robustness["subset_dice"]) == 15 and "none" not in robustness["subset_dice"]
    assert robustness["subset_dice"]["flair+t1ce"]["mean"] == pytest.approx(0.3)
    # mean of |S| over the 15 non-empty subsets: (4*1 + 6*2 + 4*3 + 1*4) / 15 = 32 / 15
    assert robustness["mean_over_subsets"]["TC"] == pytest.approx(0.1 * 32 / 15 + 0.1)
    assert robustness["worst_subset"] == "flair" and robustness["worst_subset_dice"] == pytest.approx(0.2)


def test_summary_spread_over_runs() -> None:
    reports = [
        {"run_dir": "a", "modalities": ["flair"], "encoder_gap": {"flair": _gap(0.6, 0.4)}},
        {"run_dir": "b", "modalities": ["flair"], "encoder_gap": {"flair": _gap(0.8, 0.4)}},
    ]
    gap = summarize_diagnoses(reports)["encoder_gap"]["flair"]["gap"]
    assert gap["mean"] == pytest.approx(0.3) and gap["std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))


def _gap(unimodal: float, multimodal: float) -> dict:
    return {
        "multimodal_probe": {"dice": {"mean": multimodal}},
        "unimodal_probe": {"dice": {"mean": unimodal}},
        "unimodal_network_dice": {"mean": unimodal},
        "gap": unimodal - multimodal,
        "gap_vs_network": unimodal - multimodal,
    }


@pytest.fixture(scope="module")
def unimodal_run_dir(tmp_path_factory: pytest.TempPathFactory, phantom_dataset: Path) -> Path:
    """A real one-epoch joint run of the bundle on FLAIR alone (same data, seed and network widths as
    ``tiny_run_dir``)."""
    return train_tiny_run(
        tmp_path_factory.mktemp("flair_run"), phantom_dataset, ("configs/balancers/joint.yaml",), modalities=["flair"]
    )


TINY_PROBE = ProbeSettings(max_steps=6, min_steps=4, plateau_window=2, patches_per_case=1)


def test_diagnose_a_tiny_run(tiny_run_dir: Path, unimodal_run_dir: Path, phantom_dataset: Path, tmp_path) -> None:
    report = diagnose_run(tiny_run_dir, phantom_dataset, {"flair": unimodal_run_dir}, probe=TINY_PROBE)
    gap = report["encoder_gap"]["flair"]
    for side in ("multimodal_probe", "unimodal_probe"):
        assert 0.0 <= gap[side]["dice"]["mean"] <= 1.0 and 1 <= gap[side]["steps"] <= 6
    assert gap["gap"] == pytest.approx(gap["unimodal_probe"]["dice"]["mean"] - gap["multimodal_probe"]["dice"]["mean"])
    assert set(report["robustness"]["subset_dice"]) == {subset_key(s) for s in all_subsets(MODALITIES) if s}
    assert report["robustness"]["worst_subset"] in report["robustness"]["subset_dice"]
    # the full subset's Dice is the run's own prediction with every modality
    full = report["robustness"]["subset_dice"][subset_key(MODALITIES)]["mean"]
    metrics = json.loads((tiny_run_dir / "metrics.json").read_text())
    assert full == pytest.approx(metrics["validation"]["val/dice/mean"], abs=0.05)
    assert set(report["shapley"]) == set(MODALITIES)
    assert set(report["lesionwise_dice"]) == {"TC", "WT", "ET", "mean"}
    assert all(0.0 <= v <= 1.0 for v in report["lesionwise_dice"].values()) and report["weights"] == "best"
    assert report["weights_file"] == str(tiny_run_dir / "models" / "model.pt")
    assert gap["unimodal_weights_file"] == str(unimodal_run_dir / "models" / "model.pt")

    written = write_diagnostics_report([report], tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(
        ["diagnostics.json", "diagnostics.md", "encoder_gap.png", "shapley.png", "subset_dice.png"]
    )
    document = json.loads((tmp_path / "out" / "diagnostics.json").read_text())
    assert document["summary"]["encoder_gap"]["flair"]["gap"]["mean"] == pytest.approx(gap["gap"])
    text = (tmp_path / "out" / "diagnostics.md").read_text()
    assert "| flair |" in text and "Mean Dice over the 15 non-empty subsets" in text
    assert f"- `{tiny_run_dir}`: best (`{tiny_run_dir / 'models' / 'model.pt'}`)" in text
    assert f"  - unimodal flair: `{unimodal_run_dir}` (`{unimodal_run_dir / 'models' / 'model.pt'}`)" in text
    with pytest.raises(FileExistsError, match=r"diagnostics\.json exists"):
        write_diagnostics_report([report], tmp_path / "out")


def test_unimodal_run_of_another_modality_refused(
    tiny_run_dir: Path, unimodal_run_dir: Path, phantom_dataset: Path
) -> None:
    with pytest.raises(ValueError, match=r"trained on \['flair'\], not on \['t2'\] alone"):
        diagnose_run(tiny_run_dir, phantom_dataset, {"t2": unimodal_run_dir}, probe=TINY_PROBE, shapley=False)
    with pytest.raises(ValueError, match="not a modality of"):
        diagnose_run(tiny_run_dir, phantom_dataset, {"dwi": unimodal_run_dir}, probe=TINY_PROBE, shapley=False)


class ConstantProbe(nn.Module):
    """Predicts 0 logits whatever its weight: its loss never changes."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        return torch.zeros_like(pyramid[0]).expand(-1, 3, -1, -1, -1) * self.weight


def test_no_plateau_stop_before_min_steps() -> None:
    features, targets = [[torch.ones(1, 1, 2, 2, 2)]], [torch.ones(1, 3, 2, 2, 2)]
    settings = ProbeSettings(max_steps=50, min_steps=12, plateau_window=3)
    fit = fit_probe(ConstantProbe(), features, targets, F.binary_cross_entropy_with_logits, settings)
    assert fit.steps == 12 and fit.plateaued  # flat from the start, yet min_steps are taken
    settings = ProbeSettings(max_steps=8, min_steps=12, plateau_window=3)
    fit = fit_probe(ConstantProbe(), features, targets, F.binary_cross_entropy_with_logits, settings)
    assert fit.steps == 8 and not fit.plateaued  # the budget ends first


def test_lesionwise_dice_counts_every_lesion() -> None:
    reference = torch.zeros(3, 12, 12, 12)
    reference[:, 1:4, 1:4, 1:4] = 1
    reference[:, 7:10, 7:10, 7:10] = 1
    assert case_lesionwise_dice(reference, reference, (1, 1, 1), "brats2021") == pytest.approx([1, 1, 1])
    missed = reference.clone()
    missed[:, 7:10, 7:10, 7:10] = 0  # global Dice 2·27 / (27 + 54) = 0.667; lesion-wise (1 + 0) / 2
    assert case_lesionwise_dice(missed, reference, (1, 1, 1), "brats2021") == pytest.approx([0.5, 0.5, 0.5])
    spurious = reference.clone()
    spurious[:, 1:3, 9:11, 1:3] = 1  # a third, unmatched lesion: (1 + 1 + 0) / 3
    assert case_lesionwise_dice(spurious, reference, (1, 1, 1), "brats2021") == pytest.approx([2 / 3] * 3)


def test_run_weights(tiny_run_dir: Path, tmp_path: Path) -> None:
    assert run_weights(tiny_run_dir, "last") == tiny_run_dir / "models" / "checkpoint.pt"
    assert run_weights(tiny_run_dir, "best") == tiny_run_dir / "models" / "model.pt"
    with pytest.raises(ValueError, match="weights must be one of"):
        run_weights(tiny_run_dir, "final")
    # a run that saved no best network: "best" is refused, never silently the last epoch's
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as info:
        run_weights(tmp_path, "best")
    assert str(info.value).startswith(f"{tmp_path / 'models' / 'model.pt'} does not exist")
    assert "use --weights last" in str(info.value)
    assert run_weights(tmp_path, "last") == tmp_path / "models" / "checkpoint.pt"


def test_a_unimodal_reference_is_measured_once(
    tiny_run_dir: Path, unimodal_run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache: dict = {}
    unimodal = {"flair": unimodal_run_dir}
    first = diagnose_run(tiny_run_dir, None, unimodal, probe=TINY_PROBE, shapley=False, reference_cache=cache)
    probed = []
    original = diagnostics.probe_encoder

    def recording_probe(run, *args, **kwargs):
        probed.append(run.modalities)
        return original(run, *args, **kwargs)

    monkeypatch.setattr(diagnostics, "probe_encoder", recording_probe)
    second = diagnose_run(
        tiny_run_dir, None, unimodal, probe=TINY_PROBE, shapley=False, reference_cache=cache, lesionwise=False
    )
    assert probed == [MODALITIES]  # the multimodal encoder only; data set and split: the runs' records
    assert second["encoder_gap"] == first["encoder_gap"] and len(cache) == 1
    assert "lesionwise_dice" in first and "lesionwise_dice" not in second
