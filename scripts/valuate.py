#!/usr/bin/env python
"""Shapley contribution of each modality of a trained BraTS network (same as ``brats-cggm-valuate``).

    python scripts/valuate.py --bundle bundles/brats_cggm --checkpoint runs/brats_cggm/models/model.pt \
        --dataset_dir data/brats_phantoms --output runs/brats_cggm/valuation
"""

import sys

from brats_cggm.brats.valuation import main

if __name__ == "__main__":
    sys.exit(main())
