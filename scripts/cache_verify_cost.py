"""Measure what checking the disk cache costs on full-size cases (docs/performance.md, "Cache verification").

Usage::

    python scripts/cache_verify_cost.py --cases 4 --work /tmp/cache_verify_cost

Writes full-size phantoms (240x240x155), builds their training entries, then times, per case: hashing the
input files (SHA-256, what ``cache_verify: content`` does at every start and ``stat`` only for changed
files), the stat check, a first verification of an entry (structure and CRC-32 of every array, once per
process) and a memoised one (every later open). The page cache is warm (the files were just written): a cold
read adds the disk's read time for the same bytes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _time_case(item: dict, entry: str, repeats: int) -> dict[str, float]:
    from brats_cggm.brats.data.cache.fingerprint import file_sha256, fingerprint_problem, input_paths
    from brats_cggm.brats.data.cache.integrity import forget_verified, read_meta, verify_entry

    paths = input_paths(item)
    meta = read_meta(entry)
    return {
        "input_mb_per_case": sum(Path(p).stat().st_size for p in paths) / 1e6,
        "entry_mb_per_case": sum(f["size"] for f in meta["files"].values()) / 1e6,
        "sha256_inputs_ms_per_case": _median_ms(lambda: [file_sha256(p) for p in paths], repeats),
        "stat_check_ms_per_case": _median_ms(lambda: fingerprint_problem(meta["inputs"], item, "stat"), repeats),
        "entry_first_verify_ms": _median_ms(lambda: (forget_verified(), verify_entry(entry)), repeats),
        "entry_memoised_verify_ms": _median_ms(lambda: verify_entry(entry), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--work", default="/tmp/cache_verify_cost")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from brats_cggm.brats.data.cache.disk import fill_cache
    from brats_cggm.brats.data.discovery import discover_dataset
    from brats_cggm.brats.phantoms.geometric import write_phantom_dataset

    work = Path(args.work)
    data = work / "data"
    if not data.is_dir():
        write_phantom_dataset(data, n=args.cases, shape=(240, 240, 155), seed=0)
    items = discover_dataset(data).items[: args.cases]
    options = {"label_convention": "brats2021", "channel_order": None, "pixdim": [1.0, 1.0, 1.0]}
    start = time.perf_counter()
    entries = fill_cache(items, "train", work / "cache", (32, 32, 32), options, progress=False)
    build_s = time.perf_counter() - start

    rows = [_time_case(item, entry["entry"], args.repeats) for item, entry in zip(items, entries)]

    def median(name: str) -> float:
        return statistics.median(row[name] for row in rows)

    result = {
        "cases": len(items),
        "build_s_total": round(build_s, 1),
        **{name: round(median(name), 3) for name in rows[0]},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
