"""Loading a trained run: which saved network."""

from __future__ import annotations

from pathlib import Path

import pytest

from brats_cggm.brats.analysis.runs import run_weights


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
