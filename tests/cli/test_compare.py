"""``brats-cggm-compare`` end to end with a fake training run and valuation (seconds, no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import brats_cggm.experiments.brats_comparison as brats_comparison
import brats_cggm.experiments.runs as runs
from brats_cggm.cli import compare as cli
from brats_cggm.experiments.brats_comparison import default_methods

MODALITIES = ("flair", "t1ce", "t1", "t2")


def fake_lesionwise(run_dir, dataset_dir, seed, val_fraction, device):
    assert run_dir.is_dir() and device
    return {f"lesionwise_dice/{r}": 0.4 for r in ("tc", "wt", "et", "mean")}


@pytest.fixture
def fake_runs(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[list[str], dict]]:
    """Replace training and valuation: each run "scores" its seed; records run folder → (configs, overrides)."""
    calls: dict[str, tuple[list[str], dict]] = {}

    def fake_train_run(configs, run_dir, overrides, threads=None):
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True)
        calls[f"{run_dir.parent.name}/{run_dir.name}"] = ([str(c) for c in configs], dict(overrides))
        seed = overrides["seed"]
        validation = {f"val/dice/{r}": 0.5 + 0.1 * seed for r in ("tc", "wt", "et", "mean")}
        validation.update({f"val/modality_dice/{m}": 0.25 for m in MODALITIES})
        return {"seconds_per_iteration": 1.0 + seed, "validation": validation}

    def fake_shapley(run_dir, dataset_dir, seed, val_fraction, device, absent):
        assert run_dir.is_dir() and device and absent == "mask"  # the default definition
        return {f"shapley/{m}": 0.1 for m in MODALITIES}

    monkeypatch.setattr(runs, "train_run", fake_train_run)
    monkeypatch.setattr(brats_comparison, "shapley_of_run", fake_shapley)
    monkeypatch.setattr(brats_comparison, "lesionwise_of_run", fake_lesionwise)
    return calls


def test_every_method_and_seed_then_reports(fake_runs, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "cmp"
    assert cli.main(["--output-dir", str(out), "--seeds", "0", "1", "--max-epochs", "20", "--device", "cpu"]) == 0
    assert sorted(fake_runs) == sorted(f"{m}/seed{s}" for m in default_methods() for s in (0, 1))
    configs, overrides = fake_runs["opm/seed1"]
    assert configs == [str(brats_comparison.bundle_config()), str(brats_comparison.balancer_overlay("opm"))]
    assert overrides == {
        "max_epochs": 20,
        "val_interval": 20,
        "device": "$torch.device('cpu')",
        "balancer#warmup_epochs": 2,
        "seed": 1,
    }
    assert fake_runs["relearning/seed0"][1]["balancer#reinit_epoch"] == 6
    assert not any(key.startswith("balancer#") for key in fake_runs["cggm/seed0"][1])

    rows = json.loads((out / "rows.json").read_text())
    assert [r["method"] for r in rows][:2] == ["joint", "joint"]  # the baseline first
    assert rows[0]["validation"]["shapley/t2"] == 0.1
    assert {r["method"]: r["schedule_overrides"] for r in rows}["opm"] == {"balancer#warmup_epochs": 2}
    summary = (out / "summary.md").read_text()
    assert summary.startswith("2 seed(s) [0, 1], 20 epochs each, data ./data/brats_phantoms;")
    assert "| method | dice/tc | dice/wt | dice/et | dice/mean | step time vs joint |" in summary
    assert "| joint | 0.550 ± 0.071 | 0.550 ± 0.071 | 0.550 ± 0.071 | 0.550 ± 0.071 | 1.00 |" in summary
    assert "| method | modality_dice/flair | modality_dice/t1ce | modality_dice/t1 | modality_dice/t2 |" in summary
    assert "| method | shapley/flair | shapley/t1ce | shapley/t1 | shapley/t2 | step time vs joint |" in summary
    assert 'Schedules scaled to the budget: {"opm": {"balancer#warmup_epochs": 2}, "relearning":' in summary
    header = (out / "runs.csv").read_text().splitlines()[0]
    assert header.startswith("method,seed,seconds_per_iteration,lesionwise_dice/et,")
    printed = capsys.readouterr().out
    assert "joint seed 1: mean Dice 0.600" in printed and summary in printed

    # a second comparison into the same folder is refused, and changes nothing
    assert cli.main(["--output-dir", str(out), "--methods", "joint", "--seeds", "5"]) == 1
    assert "exists; pass --overwrite or another --output-dir" in capsys.readouterr().err
    assert (out / "summary.md").read_text() == summary and "joint/seed5" not in fake_runs


def test_smoke_overrides_and_paper_schedules_without_shapley(fake_runs, tmp_path: Path):
    out = tmp_path / "cmp"
    argv = ["--output-dir", str(out), "--methods", "joint", "opm", "--seeds", "3", "--max-epochs", "1", "--smoke"]
    argv += ["--paper-schedules", "--no-shapley", "--override", "val_interval=1", "--override", "sw_overlap=0.25"]
    assert cli.main(argv) == 0
    overrides = fake_runs["opm/seed3"][1]
    assert overrides["phantom_dir"] == str(out / "phantoms") and overrides["network_def#features"] == [4, 8, 16]
    assert overrides["val_interval"] == "1" and overrides["sw_overlap"] == "0.25"  # --override comes last
    assert "balancer#warmup_epochs" not in overrides
    summary = (out / "summary.md").read_text()
    assert f"data {out / 'phantoms'} (--smoke: tiny pipeline check, numbers meaningless)" in summary
    assert "shapley" not in summary and "Schedules scaled" not in summary
    assert "shapley/flair" not in json.loads((out / "rows.json").read_text())[0]["validation"]


def test_old_spellings_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture):
    for old in ("--out", "--max_epochs", "--paper_schedules", "--no_shapley"):
        argv = ["--output-dir", str(tmp_path / "cmp"), old]
        if old in ("--out", "--max_epochs"):
            argv.append("30")
        with pytest.raises(SystemExit) as exc:
            cli.parse_args(argv)
        assert exc.value.code == 2
        assert f"unrecognized arguments: {old}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-epochs", "0"], "--max-epochs must be at least 1"),
        (["--override", "max_epochs"], "expected KEY=VALUE"),
        (["--methods", "nope"], "invalid choice: 'nope'"),
    ],
)
def test_bad_command_lines(argv: list[str], message: str, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit):
        cli.parse_args(argv)
    assert message in capsys.readouterr().err


def test_concurrent_runs_find_the_phantoms_generated(fake_runs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    out = tmp_path / "cmp"
    seen = []
    fake = runs.train_run

    def train_run_seeing_the_data(configs, run_dir, overrides, threads=None):
        seen.append(sorted(p.name for p in Path(overrides["phantom_dir"]).iterdir()))
        return fake(configs, run_dir, overrides, threads)

    monkeypatch.setattr(runs, "train_run", train_run_seeing_the_data)
    argv = [
        "--output-dir",
        str(out),
        "--methods",
        "joint",
        "cggm",
        "--seeds",
        "0",
        "--smoke",
        "--jobs",
        "2",
        "--no-shapley",
    ]
    argv += ["--override", "phantoms={'n': 2, 'shape': [32, 32, 32], 'seed': 0}"]
    assert cli.main(argv) == 0
    assert seen == [["BraTS2021_00000", "BraTS2021_00001"]] * 2


def test_phantoms_are_left_to_the_runs_of_another_data_set(tmp_path: Path):
    settings = brats_comparison.ComparisonSettings(tmp_path, extra_overrides={"dataset_dir": str(tmp_path / "data")})
    assert brats_comparison.prepare_phantoms(settings) is None and not (tmp_path / "data").exists()
    settings = brats_comparison.ComparisonSettings(tmp_path, smoke=True, extra_overrides={"phantoms#n": "2"})
    with pytest.raises(ValueError, match="whole phantoms mapping"):
        brats_comparison.prepare_phantoms(settings)


@pytest.fixture
def fake_runs_writing_metrics(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Like ``fake_runs``, but each run writes its ``metrics.json`` and a run can be made to fail; also fakes the
    encoder gaps. Records run folder → (configs, overrides) of every training, and the gap calls."""
    record: dict = {"trained": {}, "fail": set(), "gaps": [], "events": [], "valuated": []}

    def fake_train_run(configs, run_dir, overrides, threads=None):
        run_dir = Path(run_dir)
        name = f"{run_dir.parent.name}/{run_dir.name}"
        if name in record["fail"]:
            raise RuntimeError(f"training failed (exit 1); see {run_dir / 'train.log'}")
        run_dir.mkdir(parents=True, exist_ok=True)
        record["trained"][name] = ([Path(c).name for c in configs], dict(overrides))
        record["events"].append(("train", name))
        validation = {f"val/dice/{r}": 0.5 for r in ("tc", "wt", "et", "mean")}
        validation.update({f"val/modality_dice/{m}": 0.25 for m in MODALITIES})
        metrics = {"seconds_per_iteration": 1.0, "validation": validation}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    def fake_shapley(run_dir, dataset_dir, seed, val_fraction, device, absent):
        record["valuated"].append((f"{run_dir.parent.name}/{run_dir.name}", absent))
        return {
            **{f"shapley/{m}": 0.1 for m in MODALITIES},
            "robustness/mean_subsets": 0.3,
            "robustness/worst_subset": 0.0,
            "subset_dice/flair": 0.0,
            "subset_dice/flair+t1ce": 0.6,
        }

    def fake_gap(run_dir, unimodal_dirs, dataset_dir, seed, val_fraction, device):
        record["events"].append(("gap", f"{run_dir.parent.name}/{run_dir.name}"))
        record["gaps"].append(
            (f"{run_dir.parent.name}/{run_dir.name}", {m: d.parent.name for m, d in unimodal_dirs.items()})
        )
        return {f"gap/{m}": 0.2 for m in unimodal_dirs}

    monkeypatch.setattr(runs, "train_run", fake_train_run)
    monkeypatch.setattr(brats_comparison, "shapley_of_run", fake_shapley)
    monkeypatch.setattr(brats_comparison, "gap_of_run", fake_gap)
    monkeypatch.setattr(brats_comparison, "lesionwise_of_run", fake_lesionwise)
    return record


def test_partial_reports_then_resume(fake_runs_writing_metrics, tmp_path: Path, capsys: pytest.CaptureFixture):
    record, out = fake_runs_writing_metrics, tmp_path / "cmp"
    argv = ["--output-dir", str(out), "--methods", "joint", "cggm", "--seeds", "0", "1", "--device", "cpu"]
    record["fail"] = {"joint/seed0"}
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "1 of 4 run(s) failed" in err and "joint/seed0: training failed (exit 1)" in err
    # the other runs went on, and the reports hold the three that finished
    rows = json.loads((out / "rows.json").read_text())
    assert [(r["method"], r["seed"]) for r in rows] == [("joint", 1), ("cggm", 0), ("cggm", 1)]
    assert "Partial results: 3 of 4 runs finished." in (out / "summary.md").read_text()
    assert len((out / "runs.csv").read_text().splitlines()) == 4
    # a finished run whose diagnostics were lost is valuated again but not retrained
    (out / "joint" / "seed1" / brats_comparison.ROW_FILE).unlink()
    # without --resume the folder is refused
    assert cli.main(argv) == 1
    assert "(--resume continues it)" in capsys.readouterr().err
    # an interrupted run (a checkpoint, no metrics.json) is continued from its checkpoint
    (out / "cggm" / "seed1" / "metrics.json").unlink()
    (out / "cggm" / "seed1" / brats_comparison.ROW_FILE).unlink()
    (out / "cggm" / "seed1" / "models").mkdir()
    (out / "cggm" / "seed1" / "models" / "checkpoint.pt").write_bytes(b"")
    record["fail"], record["trained"] = set(), {}
    assert cli.main([*argv, "--resume"]) == 0
    assert sorted(record["trained"]) == ["cggm/seed1", "joint/seed0"]
    assert (
        record["trained"]["cggm/seed1"][1]["resume"] is True and "overwrite" not in record["trained"]["cggm/seed1"][1]
    )
    assert record["trained"]["joint/seed0"][1]["overwrite"] is True  # its failed attempt left only a log
    rows = json.loads((out / "rows.json").read_text())
    assert [(r["method"], r["seed"]) for r in rows] == [("joint", 0), ("joint", 1), ("cggm", 0), ("cggm", 1)]
    assert all(r["validation"]["shapley/flair"] == 0.1 for r in rows)
    summary = (out / "summary.md").read_text()
    assert "Partial results" not in summary
    assert "| method | robustness/mean_subsets | robustness/worst_subset | step time vs joint |" in summary
    with pytest.raises(SystemExit):
        cli.parse_args([*argv, "--resume", "--overwrite"])


def test_optimizer_axis_and_unimodal_runs(fake_runs_writing_metrics, tmp_path: Path):
    record, out = fake_runs_writing_metrics, tmp_path / "cmp"
    argv = ["--output-dir", str(out), "--methods", "cggm", "--seeds", "0", "--device", "cpu"]
    assert cli.main([*argv, "--optimizer", "adamw", "sgd", "--unimodal"]) == 0
    trained = record["trained"]
    unimodal = [f"unimodal-{m}{suffix}/seed0" for suffix in ("", "-sgd") for m in MODALITIES]
    assert sorted(trained) == sorted([*unimodal, "cggm/seed0", "cggm-sgd/seed0"])
    assert trained["cggm/seed0"][0] == ["train.yaml", "cggm.yaml"]
    assert trained["cggm-sgd/seed0"][0] == ["train.yaml", "cggm.yaml", "sgd_paper.yaml"]
    assert trained["unimodal-t1ce-sgd/seed0"][0] == ["train.yaml", "joint.yaml", "sgd_paper.yaml"]
    assert trained["unimodal-t1ce-sgd/seed0"][1]["modalities"] == ["t1ce"]
    # each multimodal run's gaps are measured against the unimodal runs of its optimiser
    assert dict(record["gaps"]) == {
        "cggm/seed0": {m: f"unimodal-{m}" for m in MODALITIES},
        "cggm-sgd/seed0": {m: f"unimodal-{m}-sgd" for m in MODALITIES},
    }
    rows = {r["method"]: r for r in json.loads((out / "rows.json").read_text())}
    assert rows["cggm-sgd"]["optimizer"] == "sgd" and rows["cggm-sgd"]["balancer"] == "cggm"
    assert rows["cggm"]["validation"]["gap/t2"] == 0.2 and "shapley/t2" not in rows["unimodal-t2"]["validation"]
    assert rows["unimodal-t2"]["validation"]["lesionwise_dice/mean"] == 0.4
    # a run's gaps are measured as soon as its unimodal runs are done, before the next optimiser's runs
    assert record["events"].index(("gap", "cggm/seed0")) < record["events"].index(("train", "unimodal-flair-sgd/seed0"))
    summary = (out / "summary.md").read_text()
    assert "sgd = the CGGM authors' SGD" in summary
    assert (out / "modalities.png").stat().st_size > 0 and (out / "subset_dice.png").is_file()
    assert "| cggm-sgd | 0.200 | 0.200 | 0.200 | 0.200 | — |" in summary
    assert "| unimodal-flair-sgd | 0.500 |" in summary
    assert "| cggm-sgd | 0.400 | 0.400 | 0.400 | 0.400 | — |" in summary
    # resumed: nothing is trained or measured again, but a row missing a measurement gets it
    row_file = out / "cggm" / "seed0" / brats_comparison.ROW_FILE
    row = json.loads(row_file.read_text())
    row["validation"] = {k: v for k, v in row["validation"].items() if not k.startswith("lesionwise_dice/")}
    row_file.write_text(json.dumps(row))
    record["trained"], record["gaps"] = {}, []
    assert cli.main([*argv, "--optimizer", "adamw", "sgd", "--unimodal", "--resume"]) == 0
    assert record["trained"] == {} and record["gaps"] == []
    assert json.loads(row_file.read_text())["validation"]["lesionwise_dice/wt"] == 0.4


def test_absence_definition_is_recorded_and_never_mixed(fake_runs_writing_metrics, tmp_path: Path):
    record, out = fake_runs_writing_metrics, tmp_path / "cmp"
    argv = ["--output-dir", str(out), "--methods", "joint", "--seeds", "0", "--device", "cpu"]
    assert cli.main([*argv, "--absent", "zero-input"]) == 0
    assert record["valuated"] == [("joint/seed0", "zero-input")]
    (row,) = json.loads((out / "rows.json").read_text())
    assert row["absent"] == "zero-input"
    assert (
        "an absent modality: `zero-input`, the modality's image is replaced by zeros"
        in (out / "summary.md").read_text()
    )
    # resumed under the other definition: valuated again, not mixed into the table, not trained again
    record["trained"] = {}
    assert cli.main([*argv, "--resume"]) == 0
    assert record["valuated"][1:] == [("joint/seed0", "mask")] and record["trained"] == {}
    (row,) = json.loads((out / "rows.json").read_text())
    assert (
        row["absent"] == "mask"
        and json.loads((out / "joint" / "seed0" / brats_comparison.ROW_FILE).read_text())["absent"] == "mask"
    )
    summary = (out / "summary.md").read_text()
    assert "`mask`, the modality's encoder does not run" in summary and "zero-input" not in summary
    # a row valuated before rows recorded the definition zeroed the inputs: valuated again as well
    row_file = out / "joint" / "seed0" / brats_comparison.ROW_FILE
    old = json.loads(row_file.read_text())
    del old["absent"]
    row_file.write_text(json.dumps(old))
    assert cli.main([*argv, "--resume"]) == 0
    assert record["valuated"][2:] == [("joint/seed0", "mask")]
    # the same definition: nothing measured again
    assert cli.main([*argv, "--resume"]) == 0 and len(record["valuated"]) == 3


def test_absent_is_checked(capsys: pytest.CaptureFixture, tmp_path: Path):
    with pytest.raises(SystemExit):
        cli.parse_args(["--output-dir", str(tmp_path), "--absent", "zeros"])
    assert "invalid choice: 'zeros'" in capsys.readouterr().err
    settings, _ = cli.parse_args(["--output-dir", str(tmp_path)])
    assert settings.absent == "mask"
    with pytest.raises(ValueError, match="absent must be one of"):
        brats_comparison.ComparisonSettings(out_dir=tmp_path, absent="zeros")


#: cggm's mean Dice above joint's, per seed: mean +0.02, sample std 0.01.
CGGM_GAIN = {0: 0.01, 1: 0.03, 2: 0.02, 3: 0.015}


@pytest.fixture
def fake_runs_by_method(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Training and measurements faked: joint scores 0.5 + 0.1·seed, cggm that plus :data:`CGGM_GAIN`; the test set
    scores 0.1 less. Records run folder → (configs, overrides) and the test measurements' arguments."""
    record: dict = {"trained": {}, "tested": []}

    def fake_train_run(configs, run_dir, overrides, threads=None):
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        record["trained"][f"{run_dir.parent.name}/{run_dir.name}"] = ([str(c) for c in configs], dict(overrides))
        seed = overrides["seed"]
        dice = 0.5 + 0.1 * seed + (CGGM_GAIN[seed] if run_dir.parent.name.startswith("cggm") else 0.0)
        metrics = {
            "seconds_per_iteration": 1.0,
            "validation": {f"val/dice/{r}": dice for r in ("tc", "wt", "et", "mean")},
        }
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    def fake_shapley(run_dir, dataset_dir, seed, val_fraction, device, absent):
        return {"robustness/mean_subsets": 0.3 + 0.01 * seed, "robustness/worst_subset": 0.0}

    def fake_test(run_dir, dataset_dir, seed, val_fraction, test_dir, device, shapley=True, absent="mask"):
        record["tested"].append((f"{run_dir.parent.name}/{run_dir.name}", dataset_dir, Path(test_dir), shapley))
        validation = json.loads((run_dir / "metrics.json").read_text())["validation"]
        return {"test/dice/mean": validation["val/dice/mean"] - 0.1, "test/robustness/mean_subsets": 0.2}

    monkeypatch.setattr(runs, "train_run", fake_train_run)
    monkeypatch.setattr(brats_comparison, "shapley_of_run", fake_shapley)
    monkeypatch.setattr(brats_comparison, "lesionwise_of_run", fake_lesionwise)
    monkeypatch.setattr(brats_comparison, "held_out_of_run", fake_test)
    monkeypatch.setattr(brats_comparison, "gap_of_run", lambda run_dir, unimodal_dirs, *args: {"gap/t1": 0.1})
    return record


def test_tests_against_joint_fixed_before_the_runs(fake_runs_by_method, tmp_path: Path):
    from brats_cggm.core.stats import paired_t_test

    out = tmp_path / "cmp"
    argv = ["--output-dir", str(out), "--methods", "joint", "cggm", "--seeds", "0", "1", "2", "--device", "cpu"]
    assert cli.main([*argv, "--equivalence-margin", "0.05"]) == 0
    summary = (out / "summary.md").read_text()
    assert "Statistics fixed before the runs: family = ['val/dice/mean', 'robustness/mean_subsets']" in summary
    assert "(m = 2 tests)" in summary and "α = 0.05" in summary and "margin ±0.05" in summary
    statistics = json.loads((out / "statistics.json").read_text())
    assert statistics["family"] == ["val/dice/mean", "robustness/mean_subsets"]
    assert statistics["equivalence"]["margin"] == 0.05 and statistics["alpha"] == 0.05
    dice, robustness = statistics["tests"]
    assert dice["method"] == "cggm" and dice["baseline"] == "joint" and dice["source"] == "validation"
    assert dice["seeds"] == [0, 1, 2] and dice["mean"] == pytest.approx(0.02)
    assert dice["p"] == pytest.approx(paired_t_test([0.01, 0.03, 0.02])["p"])  # 0.074
    assert dice["p_holm"] == pytest.approx(2 * dice["p"]) and dice["significant"] is False
    assert dice["tost"]["verdict"] == "equivalent"  # the 90% interval lies inside ±0.05
    # the robustness differences are all 0: no test, said so, and counted in the family
    assert robustness["p"] is None and "zero variance" in robustness["note"] and robustness["p_holm"] is None
    assert "| cggm | joint | val/dice/mean (validation) | 3 | +0.020 | [-0.005, +0.045] |" in summary
    assert "| not shown equivalent | zero variance of the differences: no t statistic, no test |" in summary

    # a family of one metric at the default margin
    other = tmp_path / "other"
    argv = ["--output-dir", str(other), "--methods", "joint", "cggm", "--seeds", "0", "1", "2", "--device", "cpu"]
    assert cli.main([*argv, "--family", "val/dice/mean", "--no-shapley"]) == 0
    (dice,) = json.loads((other / "statistics.json").read_text())["tests"]
    assert dice["p_holm"] == pytest.approx(dice["p"]) and dice["tost"]["verdict"] == "not shown equivalent"


def test_held_out_test_set_and_phantoms_per_seed(fake_runs_by_method, tmp_path: Path):
    record, out = fake_runs_by_method, tmp_path / "cmp"
    argv = ["--output-dir", str(out), "--methods", "joint", "cggm", "--seeds", "0", "1", "--device", "cpu"]
    argv += ["--smoke", "--phantoms-per-seed", "--test-phantoms", "1", "--unimodal"]
    assert cli.main(argv) == 0
    overrides = record["trained"]["cggm/seed1"][1]
    assert overrides["phantom_dir"] == str(out / "phantoms" / "seed1")
    assert overrides["phantoms"] == {"n": 6, "shape": [32, 32, 32], "seed": 100_000}
    assert record["trained"]["unimodal-t1/seed0"][1]["phantom_dir"] == str(out / "phantoms" / "seed0")
    # every run, unimodal ones too, is measured on its seed's test set, generated apart from the training data
    tested = {name: (data, test, shapley) for name, data, test, shapley in record["tested"]}
    assert len(tested) == 12
    assert tested["cggm/seed1"] == (str(out / "phantoms" / "seed1"), out / "test_phantoms" / "seed1", True)
    assert tested["unimodal-t2/seed0"][2] is False
    assert sorted(p.name for p in (out / "test_phantoms" / "seed1").iterdir()) == ["BraTS2021_00000"]
    rows = {(r["method"], r["seed"]): r for r in json.loads((out / "rows.json").read_text())}
    assert rows[("cggm", 1)]["validation"]["test/dice/mean"] == pytest.approx(0.53)
    assert rows[("cggm", 1)]["test_set"]["phantoms"]["seed"] == 150_000
    summary = (out / "summary.md").read_text()
    assert "a phantom draw per seed k, generator seed s0 + 100000·k" in summary
    assert "held-out test set: 1 phantoms per seed k" in summary and "seed s0 + 100000·k + 50000" in summary
    assert "| cggm | joint | val/dice/mean (test) | 2 | +0.020 |" in summary  # the tests read the test set
    assert (
        "| method | test/dice/tc | test/dice/wt | test/dice/et | test/dice/mean | test/lesionwise_dice/mean |"
        in summary
    )
    assert "| cggm | — | — | — | 0.470 ± 0.085 | — | 0.200 ± 0.000 |" in summary
    statistics = json.loads((out / "statistics.json").read_text())
    assert statistics["tests"][0]["column"] == "test/dice/mean"
    # resumed: nothing trained or measured again
    record["trained"], record["tested"] = {}, []
    assert cli.main([*argv, "--resume"]) == 0
    assert record["trained"] == {} and record["tested"] == []


def test_named_methods_apply_their_overlays_in_order(fake_runs_by_method, tmp_path: Path, capsys):
    overlay = tmp_path / "decoder.yaml"
    overlay.write_text("balancer#mode: decoder\n")
    out = tmp_path / "cmp"
    cggm, opm = brats_comparison.balancer_overlay("cggm"), brats_comparison.balancer_overlay("opm")
    argv = ["--output-dir", str(out), "--seeds", "0", "--device", "cpu", "--no-shapley"]
    argv += ["--method", f"cggm-decoder={cggm},{overlay}", "--method", f"opm-decoder={opm},{overlay}"]
    assert cli.main(argv) == 0
    trained = record = fake_runs_by_method["trained"]
    assert sorted(record) == ["cggm-decoder/seed0", "joint/seed0", "opm-decoder/seed0"]  # joint: the baseline
    assert trained["cggm-decoder/seed0"][0] == [str(brats_comparison.bundle_config()), str(cggm), str(overlay)]
    assert trained["opm-decoder/seed0"][1]["balancer#warmup_epochs"] == 2  # opm's schedule, scaled
    rows = {r["method"]: r for r in json.loads((out / "rows.json").read_text())}
    assert rows["cggm-decoder"]["balancer"] == "cggm" and rows["cggm-decoder"]["overlays"] == [str(cggm), str(overlay)]
    summary = (out / "summary.md").read_text()
    assert (
        f"Named methods (overlays after the bundle's train.yaml, in order): cggm-decoder = {cggm}, {overlay}" in summary
    )
    assert "| cggm-decoder | joint | val/dice/mean (validation) | 1 |" in summary


def test_extra_seeds_run_the_key_arms_longer_and_the_tests_pair_common_seeds(fake_runs_by_method, tmp_path: Path):
    out = tmp_path / "cmp"
    argv = ["--output-dir", str(out), "--methods", "joint", "cggm", "opm", "--seeds", "0", "1", "--device", "cpu"]
    argv += ["--no-shapley", "--extra-seeds", "joint=2,3", "--extra-seeds", "cggm=1,2,3", "--phantoms-per-seed"]
    assert cli.main([*argv, "--smoke"]) == 0
    trained = sorted(fake_runs_by_method["trained"])
    assert [name for name in trained if name.startswith("joint/")] == [f"joint/seed{k}" for k in range(4)]
    assert [name for name in trained if name.startswith("cggm/")] == [f"cggm/seed{k}" for k in range(4)]
    assert [name for name in trained if name.startswith("opm/")] == ["opm/seed0", "opm/seed1"]
    assert fake_runs_by_method["trained"]["joint/seed3"][1]["phantom_dir"] == str(out / "phantoms" / "seed3")
    tested = json.loads((out / "statistics.json").read_text())["tests"]
    tests = {t["method"]: t for t in tested if t["column"] == "val/dice/mean"}
    assert tests["cggm"]["n"] == 4 and tests["opm"]["n"] == 2  # paired with joint over the common seeds
    assert "joint also [2, 3]; cggm also [2, 3]" in (out / "summary.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--extra-seeds", "joint"], "expected NAME=SEED"),
        (["--extra-seeds", "joint=a"], "expected NAME=SEED"),
        (["--methods", "joint", "--extra-seeds", "cggm=3"], "not a method of the comparison"),
        (["--method", "x"], "expected NAME=OVERLAY"),
        (["--method", "x=/no/such.yaml"], "no file /no/such.yaml"),
        (["--method", "cggm=/dev/null"], "the name must be new"),
        (["--family", "val/dice/nope"], "not a column of the rows"),
        (["--equivalence-margin", "0"], "--equivalence-margin must be positive"),
        (["--phantoms-per-seed", "--override", "dataset_dir=/data"], "train on the bundle's phantoms"),
    ],
)
def test_bad_statistics_and_data_options(argv: list[str], message: str, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit):
        cli.parse_args(argv)
    assert message in capsys.readouterr().err


def test_publish_copies_the_reports_with_relative_paths(fake_runs_by_method, tmp_path: Path):
    out, dest = tmp_path / "cmp", tmp_path / "docs" / "raw" / "cmp"
    argv = [
        "--output-dir",
        str(out),
        "--methods",
        "joint",
        "--seeds",
        "0",
        "--smoke",
        "--no-shapley",
        "--device",
        "cpu",
    ]
    assert cli.main([*argv, "--publish", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["rows.json", "runs.csv", "statistics.json", "summary.md"]
    assert "data phantoms (--smoke" in (dest / "summary.md").read_text()
    assert str(tmp_path) not in "".join(p.read_text() for p in dest.iterdir())
