"""Reading files of tensors: a crafted pickle is refused without running it, and without torch's unsafe advice."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from brats_cggm.core.safe_load import WeightsLoadError, load_failure_message, load_tensors
from tests.helpers.crafted_files import code_running_checkpoint, unsafe_advice


def test_tensors_and_plain_types_load(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2), "epoch": 3, "names": ["flair"]}, tmp_path / "ok.pt")
    loaded = load_tensors(tmp_path / "ok.pt")
    assert torch.equal(loaded["w"], torch.ones(2)) and loaded["epoch"] == 3 and loaded["names"] == ["flair"]


@pytest.mark.parametrize("zipped", [True, False])
def test_a_crafted_pickle_is_refused_without_advice_and_never_run(tmp_path: Path, zipped: bool) -> None:
    crafted = code_running_checkpoint(tmp_path / "crafted.pt", tmp_path / "code_ran", zipped=zipped)
    with pytest.raises(WeightsLoadError) as info:
        load_tensors(crafted)
    message = str(info.value)
    assert message.startswith(f"{crafted}: refused, it holds more than tensors and plain types (")
    assert "GLOBAL io.open" in message and "could run code" in message
    assert unsafe_advice(message) == [] and info.value.__context__ is None  # torch's own text is not chained
    assert not (tmp_path / "code_ran").exists()


def test_a_pickle_torch_did_not_write_is_unreadable_without_advice(tmp_path: Path) -> None:
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(WeightsLoadError) as info, pytest.warns(UserWarning, match="pickle protocol"):
        load_tensors(path)
    assert "cannot be read as tensors (UnpicklingError: Unsupported operand" in str(info.value)
    assert unsafe_advice(str(info.value)) == []


@pytest.mark.parametrize(("content", "expected"), [(b"hello", "KeyError"), (None, "RuntimeError: PytorchStreamReader")])
def test_unreadable_files_name_the_error(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "bad.pt"
    if content is None:  # a checkpoint cut short
        torch.save({"w": torch.ones(100)}, path)
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(WeightsLoadError, match=rf"bad.pt: cannot be read as tensors \({expected}"):
        load_tensors(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt: does not exist"):
        load_tensors(tmp_path / "missing.pt")


def test_advice_in_any_error_is_dropped() -> None:
    allowlist = pickle.UnpicklingError(
        "Weights only load failed. WeightsUnpickler error: Can only build Tensor, Parameter, OrderedDict or types "
        "allowlisted via `add_safe_globals`, but got <class 'x.Evil'>"
    )
    assert "(got <class 'x.Evil'>)" in load_failure_message(allowlist)
    assert unsafe_advice(load_failure_message(allowlist)) == []
    message = load_failure_message(RuntimeError("retry with weights_only=False"))
    assert message == "cannot be read as tensors (RuntimeError: not a file of tensors)"
