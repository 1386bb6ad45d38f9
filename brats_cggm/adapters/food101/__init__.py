"""UPMC Food-101 (101 classes, text + image): data layouts, feature extraction and the frozen-backbone network.

Its task is :class:`~brats_cggm.adapters.task.ClassificationTask` (see ``configs/tasks/food101.yaml``).
"""

from brats_cggm.adapters.food101.data import load_food101, read_food101_records
from brats_cggm.adapters.food101.features import extract_food101_features
from brats_cggm.adapters.food101.model import build_food101_network

__all__ = [
    "build_food101_network",
    "extract_food101_features",
    "load_food101",
    "read_food101_records",
]
