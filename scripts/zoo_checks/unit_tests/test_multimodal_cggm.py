"""The Model Zoo's unit test of the multimodal_cggm bundle, as its ``ci/unit_tests/test_<bundle>.py`` files are written.

Modelled on the zoo's ``test_brats_mri_segmentation.py`` and ``test_brats_cggm.py`` here: train, then inference,
each through ``ConfigWorkflow`` with its property check. The bundle has no evaluate config (the test split is
evaluated at the end of training, into ``metrics.json``), so there is no evaluate test. Copied into a Model Zoo
checkout's ``ci/unit_tests/`` by ``scripts/zoo_checks/run_zoo_checks.sh`` and run there from the checkout's root
(``python ci/unit_tests/runner.py --b multimodal_cggm``); the bundle is ``models/multimodal_cggm``.

The bundle's configs need a task overlay (data, network, task), which lives in the brats-cggm repository's
``configs/tasks/``, not in the bundle: its folder is read from ``BRATS_CGGM_TASKS_DIR`` (set by the script).
Data: a tiny synthetic CMU-MOSI pickle written in ``setUp`` (``brats_cggm.adapters.synthetic``; nothing is
downloaded). Inference loads the bundle's ``models/model.pt``, which the zoo's directory check requires and the
script trains with the same overlay.
"""

import csv
import os
import shutil
import tempfile
import unittest

import torch
from monai.bundle import ConfigWorkflow
from utils import check_workflow

from brats_cggm.adapters.synthetic import write_mosi_pickle

BUNDLE_ROOT = "models/multimodal_cggm"
DEVICE = "cuda:0" if torch.cuda.is_available() else "cpu"
SIZES = {"train": 16, "valid": 8, "test": 8}


def mosi_overlay():
    tasks_dir = os.environ.get("BRATS_CGGM_TASKS_DIR")
    if not tasks_dir:
        raise RuntimeError("BRATS_CGGM_TASKS_DIR: the brats-cggm repository's configs/tasks folder is not set")
    return os.path.join(tasks_dir, "mosi.yaml")


def _files(*names):
    """The meta and logging files, and train.yaml, the MOSI overlay and ``names`` as one config list."""
    configs = [os.path.join(BUNDLE_ROOT, "configs/train.yaml"), mosi_overlay()]
    return {
        "logging_file": os.path.join(BUNDLE_ROOT, "configs/logging.conf"),
        "meta_file": os.path.join(BUNDLE_ROOT, "configs/metadata.json"),
        "config_file": configs + [os.path.join(BUNDLE_ROOT, f"configs/{name}.yaml") for name in names],
    }


class TestMultimodalCggm(unittest.TestCase):
    def setUp(self):
        self.work_dir = tempfile.mkdtemp()
        self.dataset_dir = os.path.join(self.work_dir, "mosi_data.pkl")
        write_mosi_pickle(self.dataset_dir, sizes=SIZES)

    def tearDown(self):
        shutil.rmtree(self.work_dir)

    def test_train_config(self):
        override = {
            "bundle_root": BUNDLE_ROOT,
            "dataset_dir": self.dataset_dir,
            "output_dir": os.path.join(self.work_dir, "train"),
            "max_epochs": 1,
            "batch_size": 8,
            "num_workers": 0,
            "device": DEVICE,
        }
        trainer = ConfigWorkflow(workflow_type="train", **_files(), **override)
        check_workflow(trainer, check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(override["output_dir"], "models", "model.pt")))
        self.assertTrue(os.path.isfile(os.path.join(override["output_dir"], "metrics.json")))

    def test_infer_config(self):
        override = {
            "bundle_root": BUNDLE_ROOT,
            "dataset_dir": self.dataset_dir,
            "output_dir": os.path.join(self.work_dir, "pred"),
            "device": DEVICE,
        }
        inferrer = ConfigWorkflow(workflow_type="infer", **_files("inference"), **override)
        check_workflow(inferrer, check_properties=True)
        with open(os.path.join(override["output_dir"], "predictions.csv"), newline="") as f:
            self.assertEqual(len(list(csv.DictReader(f))), SIZES["test"])


if __name__ == "__main__":
    unittest.main()
