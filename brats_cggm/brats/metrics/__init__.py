"""Scoring segmentations: validation Dice, the challenge's evaluation, surface and lesion-wise metrics, regions."""

__all__ = [
    "challenge_regions",
    "evaluation",
    "lesion",
    "surface",
    "validation",
]
