"""CMU-MOSI (sentiment regression in [−3, 3]) from the MulT pickle: data, network, task and metrics."""

from brats_cggm.adapters.mosi.data import load_mosi
from brats_cggm.adapters.mosi.metrics import mosi_metrics
from brats_cggm.adapters.mosi.model import build_mosi_network
from brats_cggm.adapters.mosi.task import MosiRegressionTask

__all__ = ["MosiRegressionTask", "build_mosi_network", "load_mosi", "mosi_metrics"]
