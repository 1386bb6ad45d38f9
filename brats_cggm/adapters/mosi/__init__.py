"""CMU-MOSI (sentiment regression in [−3, 3]) from the MulT pickle: data, task and metrics.

Its network is :class:`~brats_cggm.adapters.model.MultimodalTransformer` with one output (see
``configs/tasks/mosi.yaml``).
"""

from brats_cggm.adapters.mosi.data import load_mosi
from brats_cggm.adapters.mosi.metrics import mosi_metrics
from brats_cggm.adapters.mosi.task import MosiRegressionTask

__all__ = ["MosiRegressionTask", "load_mosi", "mosi_metrics"]
