"""``python -m brats_cggm.benchmarking``: the command line, or with ``--worker KIND PAYLOAD`` a worker subprocess."""

import sys

from brats_cggm.benchmarking.worker import worker_main

if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2], sys.argv[3]))
    from brats_cggm.cli.benchmark import main

    sys.exit(main())
