#!/usr/bin/env python
"""Shapley contribution of each modality of a trained BraTS network (same as ``brats-cggm-valuate``).

    python scripts/valuate.py --bundle runs/brats_cggm --dataset_dir data/brats_phantoms \
        --output runs/brats_cggm/valuation

``--bundle`` is a training ``output_dir`` (its ``configs/inference.json`` and ``models/model.pt``) or a
bundle folder; ``--checkpoint`` picks other weights (e.g. ``models/checkpoint.pt``).
"""

import sys

from brats_cggm.brats.valuation import main

if __name__ == "__main__":
    sys.exit(main())
