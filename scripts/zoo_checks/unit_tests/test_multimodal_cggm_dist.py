"""The Model Zoo's distributed unit test of the multimodal_cggm bundle (``ci/unit_tests/test_<bundle>_dist.py``).

Modelled on ``test_brats_cggm_dist.py``: ``[train, MOSI overlay, multi_gpu_train]`` with the overrides exported
to ``configs/train_override.json``, initialised here for the property check (``check_config``), then run by
``torchrun`` in a child process. Launched with ``torchrun ci/unit_tests/runner.py --b multimodal_cggm --dist
True``; without a GPU it runs one process on the CPU with gloo. The task overlay's folder comes from
``BRATS_CGGM_TASKS_DIR`` (see ``test_multimodal_cggm.py``); the data is a tiny synthetic MOSI pickle.
"""

import os
import shutil
import tempfile
import unittest

import torch
from test_multimodal_cggm import SIZES, mosi_overlay
from utils import export_config_and_run_mgpu_cmd

from brats_cggm.adapters.synthetic import write_mosi_pickle

BUNDLE_ROOT = "models/multimodal_cggm"


class TestMultimodalCggmMGPU(unittest.TestCase):
    def setUp(self):
        self.work_dir = tempfile.mkdtemp()
        self.dataset_dir = os.path.join(self.work_dir, "mosi_data.pkl")
        write_mosi_pickle(self.dataset_dir, sizes=SIZES)

    def tearDown(self):
        shutil.rmtree(self.work_dir)

    def test_train_mgpu_config(self):
        override = {
            "bundle_root": BUNDLE_ROOT,
            "dataset_dir": self.dataset_dir,
            "output_dir": os.path.join(self.work_dir, "train"),
            "max_epochs": 1,
            "batch_size": 8,
            "num_workers": 0,
        }
        n_gpu = torch.cuda.device_count()
        if n_gpu == 0:
            override["device"] = "cpu"  # gloo, one process
        export_config_and_run_mgpu_cmd(
            config_file=[
                os.path.join(BUNDLE_ROOT, "configs/train.yaml"),
                mosi_overlay(),
                os.path.join(BUNDLE_ROOT, "configs/multi_gpu_train.yaml"),
            ],
            logging_file=os.path.join(BUNDLE_ROOT, "configs/logging.conf"),
            meta_file=os.path.join(BUNDLE_ROOT, "configs/metadata.json"),
            override_dict=override,
            output_path=os.path.join(BUNDLE_ROOT, "configs/train_override.json"),
            ngpu=max(n_gpu, 1),
            check_config=True,
        )
        self.assertTrue(os.path.isfile(os.path.join(override["output_dir"], "metrics.json")))


if __name__ == "__main__":
    unittest.main()
