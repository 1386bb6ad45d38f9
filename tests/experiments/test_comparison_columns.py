"""The comparison's columns: the balancer activity of a run (docs/methods.md §0.3) becomes ``activity/...`` columns."""

from __future__ import annotations

from brats_cggm.experiments.comparison_columns import activity_columns, activity_key


def test_activity_columns_from_a_metrics_row():
    row = {"validation": {"val/dice/mean": 0.5}, "activity": {"cggm/B/flair/mean": 0.7, "cggm/neutral": 0.25}}
    assert activity_columns(row) == {"activity/cggm/B/flair/mean": 0.7, "activity/cggm/neutral": 0.25}
    assert activity_key("opm/executed") == "activity/opm/executed"


def test_a_row_without_activity_has_no_activity_columns():
    assert activity_columns({"validation": {"val/dice/mean": 0.5}}) == {}


def test_a_comparison_row_carries_its_runs_activity(monkeypatch, tmp_path):
    import json

    import brats_cggm.experiments.brats_comparison as brats_comparison
    import brats_cggm.experiments.runs as runs
    from brats_cggm.experiments.brats_comparison import ComparisonSettings, run_and_valuate

    def fake_train_run(configs, run_dir, overrides, threads=None):
        run_dir.mkdir(parents=True)
        metrics = {"seconds_per_iteration": 1.0, "validation": {"val/dice/mean": 0.5}}
        metrics["activity"] = {"opm/executed": 0.25, "opm/q/flair/mean": 0.6}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(runs, "train_run", fake_train_run)
    monkeypatch.setattr(brats_comparison, "lesionwise_of_run", lambda *args: {"lesionwise_dice/mean": 0.4})
    settings = ComparisonSettings(tmp_path / "cmp", methods=["opm"], seeds=[0], shapley=False, device="cpu")
    (row,) = run_and_valuate(settings)
    assert row["validation"]["activity/opm/executed"] == 0.25
    assert row["validation"]["activity/opm/q/flair/mean"] == 0.6
    saved = json.loads((tmp_path / "cmp" / "opm" / "seed0" / "comparison_row.json").read_text())
    assert saved["validation"]["activity/opm/executed"] == 0.25
