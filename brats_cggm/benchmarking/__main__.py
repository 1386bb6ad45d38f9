"""The benchmark's worker subprocesses: ``python -m brats_cggm.benchmarking --worker KIND PAYLOAD``.

Internal: :func:`~brats_cggm.benchmarking.memory.run_worker` starts it. The command is ``brats-cggm-benchmark``
(:mod:`brats_cggm.cli.benchmark`); run otherwise, this module says so on stderr and exits with 2.
"""

import sys

from brats_cggm.benchmarking.worker import worker_main

if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2], sys.argv[3]))
    print(
        "error: python -m brats_cggm.benchmarking only runs the benchmark's worker subprocesses "
        "(--worker KIND PAYLOAD); the command is brats-cggm-benchmark",
        file=sys.stderr,
    )
    sys.exit(2)
