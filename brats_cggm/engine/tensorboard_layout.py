"""TensorBoard's custom-scalars layout of a balanced training run: the "modality balance" charts.

TensorBoard's Custom Scalars tab draws each chart's tags (regular expressions) on one set of axes, so the four
modalities' curves of one quantity can be compared at a glance: the auxiliary heads' training Dice, the
encoders' gradient norms and each per-modality quantity of the balancer (e.g. CGGM's coefficients ``cggm/B/<m>``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["LAYOUT_CATEGORY", "balancer_chart_groups", "modality_balance_layout"]

#: The category (section) the charts appear under in the Custom Scalars tab.
LAYOUT_CATEGORY = "modality balance"


def balancer_chart_groups(balancer_tags: Iterable[str], modalities: Sequence[str]) -> list[str]:
    """The per-modality quantities among a balancer's scalar tags, in order of first appearance.

    A balancer's scalars are named ``<balancer>/<quantity>/<modality>`` (``cggm/B/flair``); the group of such a tag
    is ``<balancer>/<quantity>``. Tags that do not end in a modality name (e.g. a global loss) form no group.

    Args:
        balancer_tags: the tags a balancer reports.
        modalities: the modality names.

    Returns:
        The groups, e.g. ``["cggm/epsilon", "cggm/delta", "cggm/B"]``.
    """
    groups: list[str] = []
    for tag in balancer_tags:
        group, _, last = str(tag).rpartition("/")
        if group and last in modalities and group not in groups:
            groups.append(group)
    return groups


def modality_balance_layout(
    modalities: Sequence[str],
    balancer_tags: Iterable[str] = (),
    utilization_tag: str = "train/modality_dice",
) -> dict[str, dict[str, list]]:
    """The layout for ``SummaryWriter.add_custom_scalars``: one multi-line chart per per-modality quantity.

    Charts: ``<utilization_tag>`` (the auxiliary heads' per-modality training Dice), ``grad_norm`` (each encoder's
    gradient norm), then one per group of :func:`balancer_chart_groups` (a balancer without per-modality scalars
    adds none). Each chart lists the exact tags of its four curves (escaped: tags are regular expressions there).

    Args:
        modalities: the modality names, in encoder order.
        balancer_tags: the balancer's scalar tags (e.g. the keys of one iteration's ``output["balancer"]``).
        utilization_tag: the prefix of the per-modality training Dice tags.

    Returns:
        ``{LAYOUT_CATEGORY: {chart title: ["Multiline", [tag regex, ...]]}}``.
    """

    def chart(prefix: str) -> list:
        return ["Multiline", [re.escape(f"{prefix}/{m}") for m in modalities]]

    charts = {utilization_tag: chart(utilization_tag), "grad_norm": chart("grad_norm")}
    charts.update({group: chart(group) for group in balancer_chart_groups(balancer_tags, modalities)})
    return {LAYOUT_CATEGORY: charts}
