"""UPMC Food-101 (101 classes, text + image): data layouts, frozen-backbone network, task and metrics."""

from brats_cggm.adapters.food101.data import load_food101, read_food101_records
from brats_cggm.adapters.food101.features import extract_food101_features
from brats_cggm.adapters.food101.model import build_food101_network
from brats_cggm.adapters.food101.task import Food101ClassificationTask

__all__ = [
    "Food101ClassificationTask",
    "build_food101_network",
    "extract_food101_features",
    "load_food101",
    "read_food101_records",
]
