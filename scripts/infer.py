#!/usr/bin/env python
"""Segment NIfTI scans with a trained brats_cggm model (same as ``brats-cggm-infer``).

python scripts/infer.py --input CASES_DIR --bundle runs/brats_cggm --output predictions/
"""

import sys

from brats_cggm.brats.inference import main

if __name__ == "__main__":
    sys.exit(main())
