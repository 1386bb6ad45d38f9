"""scripts/preprocessing_time.py on a tiny phantom, through its command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "preprocessing_time.py"


def test_prints_both_chains_and_their_ratio(tmp_path: Path):
    command = [sys.executable, str(SCRIPT), "--work", str(tmp_path), "--shape", "28", "26", "24", "--repeats", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*command, "--pixdim", "1.5", "1.5", "2"], capture_output=True, text=True, env=env, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu" and result["shape"] == [28, 26, 24]
    assert result["cpu_chain_s"] > 0 and result["device_chain_s"] > 0
    assert result["device_over_cpu"] == result["device_chain_s"] / result["cpu_chain_s"]
    assert len([p for p in (tmp_path / "28x26x24").iterdir() if p.is_dir()]) == 1  # the case, written once
