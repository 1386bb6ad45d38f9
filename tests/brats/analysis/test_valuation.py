"""The valuation's subset predictions equal the predictions of zeroed inputs."""

from __future__ import annotations

import torch

from brats_cggm.brats.analysis.valuation import SubsetPredictor
from brats_cggm.brats.model import build_network
from brats_cggm.core.shapley import all_subsets, mask_modalities, subset_key

MODALITIES = ("flair", "t1ce", "t1", "t2")


def test_subset_predictor_equals_zeroed_inputs():
    torch.manual_seed(0)
    network = build_network("cpu", modalities=MODALITIES, features=(4, 8, 16)).eval()
    subsets = all_subsets(range(4))
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        shared = SubsetPredictor(network, subsets, MODALITIES)
        plain = SubsetPredictor(torch.nn.Sequential(network), subsets, MODALITIES)  # no encode(): masked inputs
        assert shared.shared_encoders and not plain.shared_encoders
        out, reference = shared(x), plain(x)
        assert len(out) == 16 and set(out) == set(reference)
        for s in ((), (0, 2), (1,), (0, 1, 2, 3)):
            key = subset_key([MODALITIES[i] for i in s])
            torch.testing.assert_close(out[key], network(mask_modalities(x, s)), atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(reference[key], network(mask_modalities(x, s)))
