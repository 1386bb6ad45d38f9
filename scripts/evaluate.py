#!/usr/bin/env python
"""Dice and HD95 of ET, TC and WT of a folder of segmentations (same as ``brats-cggm-evaluate``).

python scripts/evaluate.py predictions/ BraTS2021_Training_Data/ --output-dir results/
"""

import sys

from brats_cggm.brats.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
