"""Training/validation splits: reproducible, recorded by a run and read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from brats_cggm.brats.data.splits import record_split, recorded_split, split_datalist, split_of_run


def _items(n: int) -> list[dict]:
    return [{"case_id": f"case_{i:03d}", "image": f"{i}.nii.gz"} for i in range(n)]


def test_split_deterministic() -> None:
    items = _items(10)
    train, val = split_datalist(items, val_fraction=0.3, seed=1)
    assert len(val) == 3 and len(train) == 7
    assert {i["case_id"] for i in train}.isdisjoint(i["case_id"] for i in val)
    assert sorted(i["case_id"] for i in train + val) == [i["case_id"] for i in items]
    # Same seed, shuffled input: same split; another seed: another split.
    assert split_datalist(items[::-1], val_fraction=0.3, seed=1) == (train, val)
    assert split_datalist(items, val_fraction=0.3, seed=2)[1] != val


def test_a_run_records_its_split(tmp_path: Path) -> None:
    items = _items(10)
    split = split_datalist(items, val_fraction=0.3, seed=4)
    path = record_split(tmp_path / "run", split, seed=4, val_fraction=0.3, dataset_dir=tmp_path / "data")
    assert path == tmp_path / "run" / "configs" / "split.json"
    record = recorded_split(tmp_path / "run")
    assert record["dataset_dir"] == str((tmp_path / "data").resolve()) and record["seed"] == 4
    assert record["validation"] == [i["case_id"] for i in split[1]]
    # the record decides, whatever the order of the items; values given must agree with it
    assert split_of_run(tmp_path / "run", items[::-1]) == split
    assert split_of_run(tmp_path / "run", items, seed=4, val_fraction=0.3) == split
    with pytest.raises(ValueError, match="trained with seed 4, not 0"):
        split_of_run(tmp_path / "run", items, seed=0)
    with pytest.raises(ValueError, match=r"1 of the run's cases are not in the data set, e.g. case_00"):
        split_of_run(tmp_path / "run", [i for i in items if i["case_id"] != split[1][0]["case_id"]])


def test_a_run_without_a_record_needs_its_seed(tmp_path: Path) -> None:
    items = _items(10)
    assert recorded_split(tmp_path) is None
    assert split_of_run(tmp_path, items, seed=2, val_fraction=0.3) == split_datalist(items, 0.3, seed=2)
    with pytest.raises(ValueError, match="records no split"):
        split_of_run(tmp_path, items, val_fraction=0.3)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "split.json").write_text('{"seed": 1}')
    with pytest.raises(ValueError, match="a split record needs the keys"):
        recorded_split(tmp_path)


def test_split_sizes() -> None:
    assert len(split_datalist(_items(2), val_fraction=0.01)[1]) == 1
    assert len(split_datalist(_items(3), val_fraction=0.99)[0]) == 1
    assert len(split_datalist(_items(10), num_val=4)[1]) == 4
    with pytest.raises(ValueError, match="at least 2"):
        split_datalist(_items(1))
    with pytest.raises(ValueError, match="num_val"):
        split_datalist(_items(3), num_val=3)
    with pytest.raises(ValueError, match="val_fraction"):
        split_datalist(_items(3), val_fraction=1.0)
    with pytest.raises(ValueError, match="repeat"):
        split_datalist(_items(2) + _items(1))
