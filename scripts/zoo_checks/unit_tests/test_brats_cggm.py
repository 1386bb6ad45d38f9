"""The Model Zoo's unit test of the brats_cggm bundle, as its ``ci/unit_tests/test_<bundle>.py`` files are written.

Modelled on the zoo's ``test_brats_mri_segmentation.py``: train, then ``[train, evaluate]`` as a train workflow,
then inference, each through ``ConfigWorkflow`` with its property check. Copied into a Model Zoo checkout's
``ci/unit_tests/`` by ``scripts/zoo_checks/run_zoo_checks.sh`` and run there from the checkout's root
(``python ci/unit_tests/runner.py --b brats_cggm``); the bundle is ``models/brats_cggm``. Data: a few small
phantoms generated in ``setUp`` (nothing is downloaded).
"""

import os
import shutil
import tempfile
import unittest

import torch
from monai.bundle import ConfigWorkflow
from utils import check_workflow

from brats_cggm.brats.phantoms.geometric import ensure_phantom_dataset

BUNDLE_ROOT = "models/brats_cggm"
DEVICE = "cuda:0" if torch.cuda.is_available() else "cpu"

TRAIN_OVERRIDE = {  # train, evaluate
    "bundle_root": BUNDLE_ROOT,
    "max_epochs": 1,
    "val_interval": 1,
    "num_workers": 0,
    "cache": "none",
    "device": DEVICE,
}

INFER_OVERRIDE = {"bundle_root": BUNDLE_ROOT, "handlers#0#_disabled_": True, "device": DEVICE}


def _files(name):
    return {
        "logging_file": os.path.join(BUNDLE_ROOT, "configs/logging.conf"),
        "meta_file": os.path.join(BUNDLE_ROOT, "configs/metadata.json"),
        "config_file": os.path.join(BUNDLE_ROOT, f"configs/{name}.yaml"),
    }


class TestBratsCggm(unittest.TestCase):
    def setUp(self):
        self.work_dir = tempfile.mkdtemp()
        self.dataset_dir = os.path.join(self.work_dir, "data")
        ensure_phantom_dataset(self.dataset_dir, n=5, shape=(32, 32, 32), seed=0)

    def tearDown(self):
        shutil.rmtree(self.work_dir)

    def test_train_eval_config(self):
        override = {**TRAIN_OVERRIDE, "dataset_dir": self.dataset_dir}
        override["output_dir"] = os.path.join(self.work_dir, "train")
        # given a bundle_root, train.yaml writes its best model to <bundle_root>/models/model.pt (MONAI Label's
        # layout): kept in the run's folder, so the bundle's own weights stay as they are
        override["model_path"] = os.path.join(override["output_dir"], "models", "model.pt")
        trainer = ConfigWorkflow(workflow_type="train", **_files("train"), **override)
        check_workflow(trainer, check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(override["output_dir"], "models", "model.pt")))

        # evaluate.yaml on top of train.yaml, as the zoo composes them (a "train" workflow); the weights of the
        # run above, the metrics into a folder of their own
        files = _files("train")
        files["config_file"] = [files["config_file"], os.path.join(BUNDLE_ROOT, "configs/evaluate.yaml")]
        override["ckpt_path"] = os.path.join(override["output_dir"], "models", "model.pt")
        override["output_dir"] = os.path.join(self.work_dir, "eval")
        validator = ConfigWorkflow(workflow_type="train", **files, **override)
        check_workflow(validator, check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(override["output_dir"], "metrics_summary.json")))

    def test_infer_config(self):
        override = {**INFER_OVERRIDE, "dataset_dir": self.dataset_dir}
        override["output_dir"] = os.path.join(self.work_dir, "pred")
        inferrer = ConfigWorkflow(workflow_type="infer", **_files("inference"), **override)
        check_workflow(inferrer, check_properties=True)
        self.assertEqual(len([f for f in os.listdir(override["output_dir"]) if f.endswith(".nii.gz")]), 5)


if __name__ == "__main__":
    unittest.main()
