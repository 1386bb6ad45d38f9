"""Studying a trained run: imbalance diagnostics and Shapley modality valuation."""

__all__ = [
    "diagnostics",
    "diagnostics_report",
    "lesionwise",
    "probes",
    "runs",
    "valuation",
]
