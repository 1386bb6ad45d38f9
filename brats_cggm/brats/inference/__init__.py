"""Segmenting cases with a trained model: segmenter, file I/O, folder pipeline, model loading, post-processing."""

__all__ = [
    "case_io",
    "device_preprocessing",
    "folder",
    "model_loading",
    "onnx_runtime",
    "pipeline",
    "postprocessing",
    "postprocessing_fit",
    "postprocessing_rules",
    "segmenter",
]
