"""Precompute Food-101 text/image features with frozen local models (see brats_cggm.adapters.food101.features)."""

import sys

from brats_cggm.adapters.food101.features import main

if __name__ == "__main__":
    sys.exit(main())
