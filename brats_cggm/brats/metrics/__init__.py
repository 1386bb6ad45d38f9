"""Scoring segmentations: validation Dice, the challenge's evaluation, surface and lesion-wise metrics, regions."""

__all__ = [
    "case_scores",
    "challenge_regions",
    "evaluation",
    "evaluation_report",
    "lesion",
    "pairing",
    "surface",
    "validation",
]
