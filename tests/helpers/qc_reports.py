"""Folders of case reports as ``brats-cggm-infer --report`` writes them, for the QC page's tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

#: The cases of :func:`write_report_folder`: (case id, WT volume ml, flags); flagged B and C come first by default.
#: WT volumes sort differently as numbers (2.5 < 9 < 10 < 100) and as text ("10" < "100" < "2.5" < "9").
CASES: tuple[tuple[str, float, int], ...] = (("A", 10.0, 0), ("B", 2.5, 1), ("C", 100.0, 2), ("D", 9.0, 0))


def report(case_id: str, wt_ml: float = 10.0, flag_count: int = 0, overlay: bool = True, **changes: Any) -> dict:
    """A report of version 1 whose WT volume is ``wt_ml``, TC a fifth and ET a tenth of it, with ``flag_count`` flags;
    ``changes`` replace its entries."""
    record: dict[str, Any] = {
        "case_id": case_id,
        "segmentation": f"{case_id}.nii.gz",
        "modalities_used": ["flair", "t1", "t2"] if flag_count else ["flair", "t1", "t1ce", "t2"],
        "modalities_missing": ["t1ce"] if flag_count else [],
        "missing_modality": "drop",
        "report_version": 1,
        "regions": {
            name: {"volume_ml": wt_ml * share, "lesions": lesions, "largest_lesion_ml": wt_ml * share / lesions}
            for name, share, lesions in (("ET", 0.1, 1), ("TC", 0.2, 2), ("WT", 1.0, 4))
        },
        "flags": [{"name": f"flag{i}", "message": f"message {i} of {case_id}"} for i in range(flag_count)],
        "overlay": f"{case_id}.png" if overlay else None,
    }
    record.update(changes)
    return record


def write_case(folder: Path, record: dict, picture_size: tuple[int, int] = (240, 80)) -> None:
    """``<case>.json``, an empty stand-in label map and, if the record names one, the overlay PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{record['case_id']}.json").write_text(json.dumps(record, indent=2))
    (folder / record["segmentation"]).write_bytes(b"")
    if record["overlay"]:
        Image.new("RGB", picture_size, (200, 40, 40)).save(folder / record["overlay"])


def write_report_folder(folder: Path) -> Path:
    """The :data:`CASES` with their reports, overlays and label maps, plus an older record without
    ``report_version`` (skipped) and a file that is not JSON (unreadable)."""
    for case_id, wt_ml, flags in CASES:
        write_case(folder, report(case_id, wt_ml, flags))
    old = report("E")
    del old["report_version"]
    write_case(folder, old)
    (folder / "broken.json").write_text("{not json")
    return folder
