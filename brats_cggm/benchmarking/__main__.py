"""``python -m brats_cggm.benchmarking --worker KIND PAYLOAD``: the entry of the benchmark's worker subprocesses.

The command line itself is ``brats-cggm-benchmark`` (:mod:`brats_cggm.cli.benchmark`, also
``python -m brats_cggm.cli.benchmark``): the library does not import the command line built on it.
"""

import sys

from brats_cggm.benchmarking.worker import worker_main

if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2], sys.argv[3]))
    print(
        "python -m brats_cggm.benchmarking runs only the worker subprocesses (--worker KIND PAYLOAD); "
        "the command is brats-cggm-benchmark (or python -m brats_cggm.cli.benchmark).",
        file=sys.stderr,
    )
    sys.exit(2)
