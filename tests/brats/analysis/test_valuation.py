"""The valuation's subset predictions: under the mask they are ``forward_features`` with the subset's availability
mask, under zero-input the predictions of zeroed inputs; the two definitions give different values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brats_cggm.brats.analysis.absence import ABSENCE_MODES, absence_of, check_absence
from brats_cggm.brats.analysis.valuation import SubsetPredictor, summarize, valuate_cases
from brats_cggm.brats.inference.case_io import find_cases
from brats_cggm.brats.inference.model_loading import InferenceSettings
from brats_cggm.brats.inference.segmenter import BratsSegmenter
from brats_cggm.brats.model import build_network
from brats_cggm.core.availability import availability_of
from brats_cggm.core.shapley import all_subsets, mask_modalities, subset_key
from tests.helpers.inference_cases import SHAPE, write_brats_case
from tests.helpers.tiny_setup import trained_norms

MODALITIES = ("flair", "t1ce", "t1", "t2")


def _tiny_network() -> torch.nn.Module:
    """A tiny random network whose normalisations have random affine parameters, as training leaves them.

    At initialisation (weight 1, bias 0) an instance-normalised encoder maps a flat volume to zero features and
    the fusion's normalisation cancels the mask's rescaling, so the two definitions would give the same values.
    """
    torch.manual_seed(0)
    return trained_norms(build_network("cpu", modalities=MODALITIES, features=(4, 8, 16)).eval())


def test_mask_fast_path_equals_forward_features_for_every_subset():
    network = _tiny_network()
    subsets = [s for s in all_subsets(range(4)) if s]
    x = torch.randn(2, 4, 8, 8, 8)
    with torch.no_grad():
        out = SubsetPredictor(network, subsets, MODALITIES, absent="mask")(x)
        assert len(out) == 15
        for s in subsets:
            available = availability_of(s, 2, 4)
            expected = network.forward_features(x, available=available).logits
            torch.testing.assert_close(out[subset_key([MODALITIES[i] for i in s])], expected, atol=1e-5, rtol=0)
        # every modality present: the plain network
        torch.testing.assert_close(out[subset_key(MODALITIES)], network(x), atol=1e-5, rtol=0)


def test_mask_never_reads_an_absent_channel():
    network = _tiny_network()
    x = torch.randn(1, 4, 8, 8, 8)
    noisy = x.clone()
    noisy[:, 1:] = torch.randn(1, 3, 8, 8, 8) * 100
    with torch.no_grad():
        predictor = SubsetPredictor(network, [(0,)], MODALITIES, absent="mask")
        torch.testing.assert_close(predictor(x)["flair"], predictor(noisy)["flair"])


def test_zero_input_equals_zeroed_inputs():
    network = _tiny_network()
    subsets = all_subsets(range(4))
    x = torch.randn(1, 4, 8, 8, 8)
    with torch.no_grad():
        shared = SubsetPredictor(network, subsets, MODALITIES, absent="zero-input")
        plain = SubsetPredictor(torch.nn.Sequential(network), subsets, MODALITIES, absent="zero-input")
        assert shared.shared_encoders and not plain.shared_encoders
        out, reference = shared(x), plain(x)
        assert len(out) == 16 and set(out) == set(reference)
        for s in ((), (0, 2), (1,), (0, 1, 2, 3)):
            key = subset_key([MODALITIES[i] for i in s])
            torch.testing.assert_close(out[key], network(mask_modalities(x, s)), atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(reference[key], network(mask_modalities(x, s)))


def test_mask_and_zero_input_give_different_subset_predictions():
    network = _tiny_network()
    subsets = [s for s in all_subsets(range(4)) if s]
    x = torch.randn(1, 4, 8, 8, 8)
    with torch.no_grad():
        mask = SubsetPredictor(network, subsets, MODALITIES, absent="mask")(x)
        zero = SubsetPredictor(network, subsets, MODALITIES, absent="zero-input")(x)
    full = subset_key(MODALITIES)
    torch.testing.assert_close(mask[full], zero[full], atol=1e-5, rtol=0)  # nothing absent: one prediction
    for key in set(mask) - {full}:
        assert (mask[key] - zero[key]).abs().max() > 1e-3, key


def test_mask_refuses_what_it_cannot_define():
    network = _tiny_network()
    with pytest.raises(ValueError, match="zero-input"):
        SubsetPredictor(torch.nn.Sequential(network), [(0,)], MODALITIES, absent="mask")
    with pytest.raises(ValueError, match="empty subset"):
        SubsetPredictor(network, [(), (0,)], MODALITIES, absent="mask")
    with pytest.raises(ValueError, match="absent must be one of"):
        SubsetPredictor(network, [(0,)], MODALITIES, absent="zeros")
    assert [check_absence(mode) for mode in ABSENCE_MODES] == list(ABSENCE_MODES)


def _inferer(inputs: torch.Tensor, predictor: torch.nn.Module) -> dict[str, torch.Tensor]:
    return predictor(inputs)


def test_valuate_cases_values_differ_between_definitions_and_are_recorded():
    network = _tiny_network()
    torch.manual_seed(1)
    label = torch.zeros(3, 8, 8, 8)
    label[:, 2:6, 2:6, 2:6] = 1.0
    label[2] = 0.0  # an empty region: the empty prediction scores 1 there
    case = {"case_id": "c0", "image": torch.randn(4, 8, 8, 8), "label": label}

    def transform(item: dict) -> dict:
        return item

    results = {
        mode: valuate_cases(network, [case], transform, _inferer, "cpu", MODALITIES, absent=mode)
        for mode in ABSENCE_MODES
    }
    mask, zero = results["mask"][0], results["zero-input"][0]
    assert mask["absent"] == "mask" and zero["absent"] == "zero-input"
    assert set(mask["values"]) == set(zero["values"]) and len(mask["values"]) == 16
    np.testing.assert_allclose(mask["values"]["none"], [0.0, 0.0, 1.0, 1.0 / 3.0])  # nothing predicted
    full = subset_key(MODALITIES)
    np.testing.assert_allclose(mask["values"][full], zero["values"][full], atol=1e-6)
    differing = [k for k in mask["values"] if not np.allclose(mask["values"][k], zero["values"][k])]
    assert differing, "the two definitions gave the same value for every subset"
    for mode, cases in results.items():
        summary = summarize(cases, MODALITIES)
        assert summary["absent"] == mode and summary["absent_definition"]
    with pytest.raises(ValueError, match="mix"):
        absence_of([mask, zero])
    assert absence_of([{"values": {}}]) == "zero-input"  # reports before the option zeroed the inputs


@pytest.mark.parametrize("absent_files", [("t1ce",), ("t2",), ("flair", "t1")])
def test_a_subset_value_is_the_prediction_inference_drop_makes_from_only_those_files(tmp_path, absent_files):
    """One definition of absence: valuation's subset prediction on the full case equals ``--missing-modality
    drop`` on a folder holding only that subset's files (same weights, same case)."""
    network = _tiny_network()
    # one window over the whole volume and no crop, so both see the same preprocessed grid
    settings = InferenceSettings(modalities=MODALITIES, roi_size=SHAPE, preprocessing={"crop_foreground": False})
    full_case = find_cases(write_brats_case(tmp_path / "full", "c", "ras"))[0][0]
    partial_case = find_cases(write_brats_case(tmp_path / "partial", "c", "ras", skip=absent_files))[0][0]
    present = tuple(i for i, m in enumerate(MODALITIES) if m not in absent_files)

    segmenter = BratsSegmenter(network, settings, missing_modality="drop")
    x = segmenter.preprocessing(full_case)({"image": list(full_case.image)})["image"].as_tensor()[None]
    with torch.no_grad():
        values = SubsetPredictor(network, [present], MODALITIES)(x)
    expected = np.moveaxis(torch.sigmoid(values[subset_key([MODALITIES[i] for i in present])])[0].numpy(), 0, -1)
    inferred = segmenter(partial_case, probabilities=True)["probabilities"]
    np.testing.assert_allclose(inferred, expected, atol=1e-5)
