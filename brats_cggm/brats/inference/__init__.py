"""Segmenting cases with a trained model: the segmenter, its file I/O, model loading, post-processing and its fit."""

__all__ = [
    "case_io",
    "model_loading",
    "postprocessing",
    "postprocessing_fit",
    "postprocessing_rules",
    "segmenter",
]
