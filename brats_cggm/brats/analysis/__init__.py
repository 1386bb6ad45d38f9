"""Studying a trained run: imbalance diagnostics and Shapley modality valuation."""

__all__ = [
    "absence",
    "diagnostics",
    "diagnostics_report",
    "lesionwise",
    "probes",
    "runs",
    "valuation",
]
