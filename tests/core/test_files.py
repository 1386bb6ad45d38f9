from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from brats_cggm.core.files import atomic_path, save_new_file, temporary_files, to_jsonable, write_json


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_to_jsonable_gives_json_types():
    value = {
        1: (np.float32(0.5), np.int64(3)),
        "tensor": torch.tensor([1.0, 2.0]),
        "scalar": torch.tensor(4),
        "array": np.arange(3),
        "set": {7},
        "path": Path("a/b"),
        "device": torch.device("cpu"),
        "plain": [None, True, "x", 1.5],
    }
    assert to_jsonable(value) == {
        "1": [0.5, 3],
        "tensor": [1.0, 2.0],
        "scalar": 4,
        "array": [0, 1, 2],
        "set": [7],
        "path": "a/b",
        "device": "cpu",
        "plain": [None, True, "x", 1.5],
    }
    json.dumps(to_jsonable(value))


def test_write_json_is_indented_with_a_newline_and_the_open_mode(tmp_path):
    path = write_json(tmp_path / "sub" / "out.json", {"a": np.float64(1.0)})
    assert path.read_text() == '{\n  "a": 1.0\n}\n'
    assert _mode(path) == 0o666 & ~_umask()
    with pytest.raises(ValueError):
        write_json(tmp_path / "nan.json", {"a": math.nan}, allow_nan=False)
    assert not (tmp_path / "nan.json").exists() and not temporary_files(tmp_path / "nan.json")


def test_atomic_path_renames_on_success_and_keeps_the_target_on_failure(tmp_path):
    target = tmp_path / "image.nii.gz"
    with atomic_path(target, suffix=".nii.gz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tmp.nii.gz") and tmp.name.startswith(".image")
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and _mode(target) == 0o666 & ~_umask()
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.nii.gz"]


def test_atomic_path_without_overwrite_refuses_an_existing_target(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError), atomic_path(target, overwrite=False) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"old"
    with atomic_path(tmp_path / "fresh.bin", overwrite=False) as tmp:
        tmp.write_bytes(b"new")
    assert (tmp_path / "fresh.bin").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.bin", "out.bin"]


def test_refuse_existing_names_the_file_and_the_flag(tmp_path: Path) -> None:
    from brats_cggm.core.files import existing_file_error, refuse_existing

    missing, present = tmp_path / "a.json", tmp_path / "b.md"
    present.write_text("x")
    refuse_existing([missing], overwrite=False)  # nothing there: no error
    refuse_existing([missing, present], overwrite=True)  # asked to replace
    with pytest.raises(FileExistsError, match=r"b\.md: exists; pass --overwrite to replace it$"):
        refuse_existing([missing, present], overwrite=False)
    with pytest.raises(FileExistsError, match=r"b\.md: exists; pass --force or another folder$"):
        refuse_existing(iter([present]), False, advice="or another folder", flag="--force")
    assert str(existing_file_error(present)) == f"{present}: exists; pass --overwrite to replace it"


def test_save_new_file_writes_text_or_bytes_and_replaces_only_with_overwrite(tmp_path: Path):
    page = save_new_file(tmp_path / "index.html", "<p>é</p>")
    assert page.read_bytes() == "<p>é</p>".encode()
    with pytest.raises(FileExistsError, match=r"index.html: exists; pass --overwrite"):
        save_new_file(page, b"other")
    assert page.read_text(encoding="utf-8") == "<p>é</p>"
    save_new_file(page, b"other", overwrite=True)
    assert page.read_bytes() == b"other" and temporary_files(page) == []
