"""IEMOCAP (four emotion classes) from the MMIN feature tree or the MulT pickle.

Its network is :class:`~brats_cggm.adapters.model.MultimodalTransformer` and its task
:class:`~brats_cggm.adapters.task.ClassificationTask` (see ``configs/tasks/iemocap.yaml``).
"""

from brats_cggm.adapters.iemocap.data import load_iemocap, load_iemocap_mmin, load_iemocap_mult

__all__ = [
    "load_iemocap",
    "load_iemocap_mmin",
    "load_iemocap_mult",
]
