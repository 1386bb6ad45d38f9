"""Run by ``tests/brats/data/cache/test_disk.py`` under torchrun (CPU, gloo): fill a disk cache from every rank.

``sys.argv``: the data set folder, the cache folder, the output folder; writes ``rank<r>.json``: the cases this
rank built in a first and a second fill, and the entries it got back.
"""

# ruff: noqa: E402 (transformers is blocked before the imports)
from __future__ import annotations

import json
import sys
from pathlib import Path

# MONAI imports transformers eagerly when it is installed (seconds per process); nothing here needs it
sys.modules.setdefault("transformers", None)  # type: ignore[arg-type]

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]
from brats_cggm.brats.data.cache import disk
from brats_cggm.brats.data.discovery import discover_dataset
from brats_cggm.engine.distributed import destroy_distributed, get_rank, init_distributed


def main() -> None:
    dataset_dir, cache_dir, out = sys.argv[1:4]
    init_distributed("cpu")
    built: list[str] = []
    build = disk._build_entry
    disk._build_entry = lambda job, head=None: built.append(job[0]["case_id"]) or build(job, head)
    items = discover_dataset(dataset_dir).items
    options = {"label_convention": "brats2021", "channel_order": None, "pixdim": [1.0, 1.0, 1.0]}
    entries = disk.fill_cache(items, "val", cache_dir, data_options=options, progress=False)
    first = list(built)
    built.clear()
    disk.fill_cache(items, "val", cache_dir, data_options=options, progress=False)
    result = {"first": first, "second": list(built), "entries": [e["entry"] for e in entries]}
    (Path(out) / f"rank{get_rank()}.json").write_text(json.dumps(result))
    destroy_distributed()


if __name__ == "__main__":
    main()
