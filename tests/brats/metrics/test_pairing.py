"""Finding and pairing the files of two folders: by hand, MSD references."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_cggm.brats.metrics.pairing import evaluate_folders
from tests.helpers.segmentation_folders import by_hand


def test_evaluate_folders_by_hand(folders: tuple[Path, Path]):
    result = evaluate_folders(*folders)
    assert [r["case_id"] for r in result.rows] == ["A", "B", "C", "D", "E"]
    assert result.ids("missing_reference") == ["D"] and result.ids("missing_prediction") == ["E"]
    assert not result.complete
    rows = {r["case_id"]: r for r in result.rows}
    for case, expected in by_hand().items():
        assert rows[case]["status"] == "ok"
        for name, value in expected.items():
            assert rows[case][name] == pytest.approx(value, abs=1e-5), (case, name)


def test_msd_references_in_their_own_convention(msd_dataset: Path, tmp_path: Path):
    msd_to_brats = np.array([0, 2, 1, 4], dtype=np.uint8)  # ED 1 -> 2, NET 2 -> 1, ET 3 -> 4
    ref = msd_dataset / "labelsTr" / "BRATS_001.nii.gz"
    image = nib.load(str(ref))
    pred = tmp_path / "pred" / "BRATS_001.nii.gz"
    pred.parent.mkdir()
    nib.save(nib.Nifti1Image(msd_to_brats[np.asarray(image.dataobj).astype(int)], image.affine), str(pred))
    result = evaluate_folders(tmp_path / "pred", msd_dataset, "brats2021", "msd")
    assert result.ids("ok") == ["BRATS_001"]
    assert result.ids("missing_prediction") == ["BRATS_002", "BRATS_003"]
    row = result.rows[0]
    assert [row[f"dice_{r}"] for r in ("et", "tc", "wt")] == [1.0, 1.0, 1.0]
