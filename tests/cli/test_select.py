"""``brats-cggm-select``: outputs, determinism, exclusions, the encoders file and the errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from brats_cggm.brats.encoder_weights import load_encoder_weights
from brats_cggm.brats.model import build_network
from brats_cggm.brats.phantoms.geometric import write_phantom_dataset
from brats_cggm.cli.select import main

FAST = ["--steps", "2", "--batch-size", "2", "--patch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six unlabelled phantom cases of 24^3 (the labels removed). Read-only."""
    root = tmp_path_factory.mktemp("select") / "pool"
    write_phantom_dataset(root, n=6, shape=(24, 24, 24), seed=0)
    for label in root.glob("*/*_seg.nii.gz"):
        label.unlink()
    return root


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_random_writes_csv_and_json_deterministically(pool: Path, tmp_path: Path, capsys):
    out = tmp_path / "sel.csv"
    assert main(["--pool", str(pool), "--budget", "3", "--strategy", "random", "--out", str(out), "--seed", "4"]) == 0
    rows = _rows(out)
    assert [r["rank"] for r in rows] == ["1", "2", "3"] and len({r["case_id"] for r in rows}) == 3
    record = json.loads(out.with_suffix(".json").read_text())
    assert [s["case_id"] for s in record["selected"]] == [r["case_id"] for r in rows]
    assert record["pool_size"] == 6 and record["budget"] == 3 and record["strategy"] == "random"
    assert capsys.readouterr().out.split() == [r["case_id"] for r in rows]
    again = tmp_path / "again.csv"
    main(["--pool", str(pool), "--budget", "3", "--strategy", "random", "--out", str(again), "--seed", "4"])
    assert again.read_text() == out.read_text()


def test_excluded_cases_are_never_chosen(pool: Path, tmp_path: Path):
    ids = sorted(p.name for p in pool.iterdir())
    listing = tmp_path / "labelled.txt"
    listing.write_text(f"# already labelled\n{ids[0]}\n\n{ids[1]}\n")
    out = tmp_path / "sel.csv"
    argv = ["--pool", str(pool), "--budget", "3", "--strategy", "random", "--out", str(out)]
    assert main([*argv, "--exclude", str(listing), ids[2]]) == 0
    chosen = {r["case_id"] for r in _rows(out)}
    assert chosen == set(ids[3:])
    assert json.loads(out.with_suffix(".json").read_text())["excluded"] == ids[:3]


def test_mmcsal_writes_scores_gap_and_encoders_that_initialise_a_network(pool: Path, tmp_path: Path):
    out, encoders = tmp_path / "sel.csv", tmp_path / "enc.pt"
    argv = ["--pool", str(pool), "--budget", "2", "--strategy", "mmcsal", "--out", str(out), *FAST]
    assert main([*argv, "--encoders-out", str(encoders)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert len(record["selected"]) == 2 and record["modality_gap"] >= 0.0
    assert record["pretraining"]["steps"] == 2 and record["details"]["lambda_align"] == 0.5
    network = build_network("cpu", ("flair", "t1ce", "t1", "t2"))
    before = [p.clone() for p in network.encoders.parameters()]
    load_encoder_weights(network, encoders)
    saved = torch.load(encoders, weights_only=True)
    assert torch.equal(
        network.encoders[0].state_dict()["levels.0.conv1.conv.weight"],
        saved["encoders"]["flair"]["levels.0.conv1.conv.weight"],
    )
    assert any(not torch.equal(a, b) for a, b in zip(before, network.encoders.parameters()))
    # the outputs exist now: a second run is refused before any work, and names them
    assert main([*argv, "--encoders-out", str(encoders)]) == 1


@pytest.mark.parametrize("strategy", ["kmeans", "typiclust", "probcover"])
def test_baselines_run_through_the_command(pool: Path, tmp_path: Path, strategy: str):
    pytest.importorskip("sklearn")
    out = tmp_path / "sel.csv"
    argv = ["--pool", str(pool), "--budget", "2", "--strategy", strategy, "--out", str(out), *FAST]
    assert main(argv) == 0
    assert len(_rows(out)) == 2


def test_existing_output_is_refused_without_overwrite(pool: Path, tmp_path: Path, capsys):
    out = tmp_path / "sel.csv"
    out.write_text("keep\n")
    argv = ["--pool", str(pool), "--budget", "2", "--strategy", "random", "--out", str(out)]
    assert main(argv) == 1
    assert "sel.csv" in capsys.readouterr().err and out.read_text() == "keep\n"
    assert main([*argv, "--overwrite"]) == 0 and out.read_text().startswith("rank,case_id,score")


def test_budget_larger_than_the_pool_after_exclusions_names_the_numbers(pool: Path, tmp_path: Path, capsys):
    ids = sorted(p.name for p in pool.iterdir())
    argv = ["--pool", str(pool), "--budget", "5", "--strategy", "random", "--out", str(tmp_path / "s.csv")]
    assert main([*argv, "--exclude", ids[0], ids[1]]) == 1
    err = capsys.readouterr().err
    assert "budget (5)" in err and "pool (4 cases)" in err and "6 in" in err and "2 excluded" in err
    assert not (tmp_path / "s.csv").exists()


def test_budget_below_one_is_a_usage_error(pool: Path, tmp_path: Path, capsys):
    argv = ["--pool", str(pool), "--budget", "0", "--strategy", "random", "--out", str(tmp_path / "s.csv")]
    assert main(argv) == 2
    assert "--budget must be at least 1, got 0" in capsys.readouterr().err


def test_unknown_excluded_ids_are_named(pool: Path, tmp_path: Path, capsys):
    argv = ["--pool", str(pool), "--budget", "2", "--strategy", "random", "--out", str(tmp_path / "s.csv")]
    assert main([*argv, "--exclude", "BraTS2021_99999", "nobody"]) == 1
    assert "BraTS2021_99999, nobody" in capsys.readouterr().err


def test_a_case_missing_a_modality_is_named(pool: Path, tmp_path: Path, capsys):
    broken = tmp_path / "pool"
    shutil.copytree(pool, broken)
    victim = sorted(broken.glob("*/*_t1ce.nii.gz"))[0]
    victim.unlink()
    argv = ["--pool", str(broken), "--budget", "2", "--strategy", "random", "--out", str(tmp_path / "s.csv")]
    assert main(argv) == 1
    assert victim.parent.name in capsys.readouterr().err
