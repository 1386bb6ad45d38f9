"""``brats-cggm-fit-postprocessing RUN_DIR``: the entry and table it writes, refusals, the metrics it maximises."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from brats_cggm.brats.data.discovery import discover_dataset
from brats_cggm.brats.data.splits import split_datalist
from brats_cggm.brats.inference.postprocessing_fit import case_score
from brats_cggm.brats.inference.postprocessing_rules import PostprocessingRules
from brats_cggm.cli.fit_postprocessing import main


@pytest.fixture
def run_dir(tiny_run_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny training run."""
    return Path(shutil.copytree(tiny_run_dir, tmp_path / "run"))


def _refuse_to_fit(*args, **kwargs):
    raise AssertionError("segmented although the result could not be written")


def test_fit_writes_rules_and_table_and_refuses_to_replace_them(
    run_dir: Path, phantom_dataset: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    config_path = run_dir / "configs" / "inference.json"
    before = json.loads(config_path.read_text())
    argv = [str(run_dir), "--dataset-dir", str(phantom_dataset), "--device", "cpu", "--metric", "global_dice"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    config = json.loads(config_path.read_text())
    # the rest of the run config is untouched; the entry reads back as rules
    assert {k: v for k, v in config.items() if k != "postprocessing_rules"} == before
    rules = PostprocessingRules.from_config(config["postprocessing_rules"], str(config_path))
    assert rules.unit == "mm3"
    table = (run_dir / "configs" / "postprocessing.md").read_text()
    validation = split_datalist(discover_dataset(phantom_dataset).items, val_fraction=0.2, seed=0)[1]
    assert f"on {len(validation)} validation case(s) ({validation[0]['case_id']}" in table
    assert (
        "| global Dice |" in table
        and "| lesion-wise HD95 (mm) |" in table
        and "maximising the mean global_dice" in table
    )
    # every rule and size of the grid was tried (4 rules x 7 sizes); a kept one raised the score
    trials = [line for line in table.splitlines() if line.startswith("| min_")]
    assert len(trials) == 28
    for line in trials:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[4] == "yes":
            assert float(cells[3]) > float(cells[2])
    assert "written:" in out

    # a second fit is refused before any work, the config unchanged; --overwrite replaces the entry
    import brats_cggm.cli.fit_postprocessing as command

    monkeypatch.setattr(command, "fit_postprocessing", _refuse_to_fit)
    text = config_path.read_text()
    assert main(argv) == 1
    assert "has a postprocessing_rules entry already; pass --overwrite" in capsys.readouterr().err
    assert config_path.read_text() == text
    monkeypatch.undo()
    recorded = [str(run_dir), "--device", "cpu", "--metric", "global_dice", "--overwrite"]  # data set: the run's
    assert main(recorded) == 0
    (run_dir / "configs" / "split.json").unlink()  # a run of an older version
    assert main(recorded) == 1
    assert "records no data set (configs/split.json)" in capsys.readouterr().err


def test_fit_errors(tmp_path: Path, capsys):
    assert main([str(tmp_path / "nowhere"), "--device", "cpu"]) == 1
    assert "configs/inference.json: no run config" in capsys.readouterr().err
    (tmp_path / "bad" / "configs").mkdir(parents=True)
    (tmp_path / "bad" / "configs" / "inference.json").write_text("[1, 2]")
    assert main([str(tmp_path / "bad"), "--device", "cpu"]) == 1
    assert "not a JSON object" in capsys.readouterr().err
    for bad in (["--val-fraction", "1.5"], ["--metric", "hd95"]):
        with pytest.raises(SystemExit) as exc:
            main([str(tmp_path), *bad])
        assert exc.value.code == 2


def test_case_score_by_hand():
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:4, 2:4, 2:4] = 2  # edema only: no ET, no TC
    pred = ref.copy()
    pred[7, 7, 7] = 2  # a one-voxel false-positive lesion
    # WT: lesions matched Dice 1 and a false positive 0 -> 0.5; ET and TC: no lesion on either side -> 1
    assert case_score(pred, ref, (1, 1, 1), "brats2021", "lesionwise_dice") == pytest.approx((1 + 1 + 0.5) / 3)
    # global: WT Dice 2 * 8 / (8 + 9), ET and TC empty on both sides -> 1
    assert case_score(pred, ref, (1, 1, 1), "brats2021", "global_dice") == pytest.approx((2 + 16 / 17) / 3)
    pred[5, 5, 5] = 4  # a false-positive ET lesion where the reference has none: ET and TC score 0
    assert case_score(pred, ref, (1, 1, 1), "brats2021", "lesionwise_dice") == pytest.approx((0 + 0 + 1 / 3) / 3)
    with pytest.raises(ValueError, match="metric must be one of"):
        case_score(pred, ref, (1, 1, 1), "brats2021", "nsd")
