"""Imbalance diagnostics: robustness and the summary over runs by hand, a real tiny run, its report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import brats_cggm.brats.analysis.diagnostics as diagnostics
from brats_cggm.brats.analysis.diagnostics import diagnose_run, robustness_from_valuation, summarize_diagnoses
from brats_cggm.brats.analysis.diagnostics_report import write_diagnostics_report
from brats_cggm.brats.analysis.probes import ProbeSettings
from brats_cggm.core.shapley import all_subsets, subset_key
from tests.helpers.bundle_runs import train_tiny_run

MODALITIES = ("flair", "t1ce", "t1", "t2")


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


def _valued(absent: str | None) -> dict:
    """A report with a valuation made under ``absent`` (None: a report from before reports recorded it)."""
    subsets = {subset_key(s): {"mean": 0.5} for s in all_subsets(MODALITIES) if s}
    robustness = {"subset_dice": subsets, "mean_over_subsets": {"mean": 0.5}, "worst_subset": "flair"}
    report = {"run_dir": "a", "modalities": list(MODALITIES), "shapley": {m: {"mean": 0.1} for m in MODALITIES}}
    report["robustness"] = {**robustness, "worst_subset_dice": 0.5}
    return report if absent is None else {**report, "absent": absent}


def test_summary_names_the_definition_and_refuses_to_mix() -> None:
    assert summarize_diagnoses([_valued("mask"), _valued("mask")])["absent"] == "mask"
    legacy = summarize_diagnoses([_valued(None)])
    assert legacy["absent"] == "zero-input" and "replaced by zeros" in legacy["absent_definition"]
    with pytest.raises(ValueError, match="mix definitions"):
        summarize_diagnoses([_valued("mask"), _valued("zero-input")])
    with pytest.raises(ValueError, match="mix definitions"):
        summarize_diagnoses([_valued("mask"), _valued(None)])  # an old report zeroed the inputs


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
    assert set(report["shapley"]) == set(MODALITIES) and report["absent"] == "mask"  # the default definition
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
    with pytest.raises(FileExistsError, match=r"diagnostics\.json: exists"):
        write_diagnostics_report([report], tmp_path / "out")


def test_unimodal_run_of_another_modality_refused(
    tiny_run_dir: Path, unimodal_run_dir: Path, phantom_dataset: Path
) -> None:
    with pytest.raises(ValueError, match=r"trained on \['flair'\], not on \['t2'\] alone"):
        diagnose_run(tiny_run_dir, phantom_dataset, {"t2": unimodal_run_dir}, probe=TINY_PROBE, shapley=False)
    with pytest.raises(ValueError, match="not a modality of"):
        diagnose_run(tiny_run_dir, phantom_dataset, {"dwi": unimodal_run_dir}, probe=TINY_PROBE, shapley=False)


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
