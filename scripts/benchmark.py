"""Benchmark brats-cggm: balancer overhead, whole-volume inference, data pipeline, scaling.

    python scripts/benchmark.py --quick --out bench_cpu.json
    python scripts/benchmark.py --device cuda --preset full --out bench_gpu.json

The same command as ``brats-cggm-benchmark`` (``brats_cggm.cli.benchmark``), runnable from a checkout without
``pip install -e .``; see ``docs/performance.md``.
"""

import sys
from pathlib import Path

try:
    from brats_cggm.cli.benchmark import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from brats_cggm.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main(prog=Path(sys.argv[0]).name))
