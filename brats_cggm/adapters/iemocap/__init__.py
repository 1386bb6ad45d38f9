"""IEMOCAP (four emotion classes) from the MMIN feature tree or the MulT pickle."""

from brats_cggm.adapters.iemocap.data import load_iemocap, load_iemocap_mmin, load_iemocap_mult
from brats_cggm.adapters.iemocap.model import build_iemocap_network
from brats_cggm.adapters.iemocap.task import IemocapClassificationTask

__all__ = [
    "IemocapClassificationTask",
    "build_iemocap_network",
    "load_iemocap",
    "load_iemocap_mmin",
    "load_iemocap_mult",
]
