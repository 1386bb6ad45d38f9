"""Modality-balancing strategies behind one protocol (:class:`~brats_cggm.core.balancer.Balancer`).

Importing this package registers every strategy, so ``create_balancer(name, ...)`` knows them all:
``joint``, ``cggm``, ``ogm_ge``, ``opm``, ``inforeg``, ``relearning``, ``mmpareto``. Modality dropout is
not a balancer but a training option that composes with all of them
(:class:`~brats_cggm.engine.modality_dropout.ModalityDropout`).
Modality valuation (Shapley values) is in :mod:`brats_cggm.core.shapley`.
"""

from brats_cggm.balancing import cggm, inforeg, joint, mmpareto, ogm, opm, relearning  # noqa: F401
from brats_cggm.balancing.registry import available_balancers, balancer_class, create_balancer, register_balancer
from brats_cggm.core.balancer import Balancer, StepContext

__all__ = ["Balancer", "StepContext", "available_balancers", "balancer_class", "create_balancer", "register_balancer"]
