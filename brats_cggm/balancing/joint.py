"""Joint training: the baseline with no balancing."""

from __future__ import annotations

from brats_cggm.balancing.registry import register_balancer
from brats_cggm.core.balancer import Balancer

__all__ = ["JointBalancer"]


@register_balancer("joint")
class JointBalancer(Balancer):
    """Plain joint training; the auxiliary heads are trained on detached features and only monitored."""
