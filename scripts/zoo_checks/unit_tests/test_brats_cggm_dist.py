"""The Model Zoo's distributed unit test of the brats_cggm bundle (``ci/unit_tests/test_<bundle>_dist.py``).

Modelled on the zoo's ``test_brats_mri_segmentation_dist.py``: ``[train, multi_gpu_train]`` with the overrides
exported to ``configs/train_override.json``, initialised here for the property check (``check_config``), then
run by ``torchrun`` in a child process. The zoo launches this file with ``torchrun ci/unit_tests/runner.py --b
brats_cggm --dist True``; without a GPU it runs one process on the CPU with gloo. ``export_config_and_run_mgpu_cmd``
sets the child's ``PYTHONPATH`` to ``bundle_root`` alone, so the package must be installed (not on PYTHONPATH).
"""

import os
import shutil
import tempfile
import unittest

import torch
from utils import export_config_and_run_mgpu_cmd

from brats_cggm.brats.phantoms.geometric import ensure_phantom_dataset

BUNDLE_ROOT = "models/brats_cggm"

TRAIN_OVERRIDE = {  # mgpu train
    "bundle_root": BUNDLE_ROOT,
    "max_epochs": 1,
    "val_interval": 1,
    "num_workers": 0,
    "cache": "none",
}


class TestBratsCggmMGPU(unittest.TestCase):
    def setUp(self):
        self.work_dir = tempfile.mkdtemp()
        self.dataset_dir = os.path.join(self.work_dir, "data")
        ensure_phantom_dataset(self.dataset_dir, n=5, shape=(32, 32, 32), seed=0)

    def tearDown(self):
        shutil.rmtree(self.work_dir)

    def test_train_mgpu_config(self):
        override = {**TRAIN_OVERRIDE, "dataset_dir": self.dataset_dir}
        override["output_dir"] = os.path.join(self.work_dir, "train")
        # the best model in the run's folder, not <bundle_root>/models/model.pt (train.yaml's default given a
        # bundle_root): the bundle's own weights stay as they are
        override["model_path"] = os.path.join(override["output_dir"], "models", "model.pt")
        n_gpu = torch.cuda.device_count()
        if n_gpu == 0:
            override["device"] = "cpu"  # gloo, one process
        train_file = os.path.join(BUNDLE_ROOT, "configs/train.yaml")
        mgpu_train_file = os.path.join(BUNDLE_ROOT, "configs/multi_gpu_train.yaml")
        export_config_and_run_mgpu_cmd(
            config_file=[train_file, mgpu_train_file],
            logging_file=os.path.join(BUNDLE_ROOT, "configs/logging.conf"),
            meta_file=os.path.join(BUNDLE_ROOT, "configs/metadata.json"),
            override_dict=override,
            output_path=os.path.join(BUNDLE_ROOT, "configs/train_override.json"),
            ngpu=max(n_gpu, 1),
            check_config=True,
        )
        self.assertTrue(os.path.isfile(os.path.join(override["output_dir"], "metrics.json")))
        self.assertTrue(os.path.isfile(override["model_path"]))


if __name__ == "__main__":
    unittest.main()
