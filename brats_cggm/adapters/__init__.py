"""Task adapters beyond BraTS: CMU-MOSI, IEMOCAP and UPMC Food-101 in their users' file formats.

Shared by the three tasks, one module per concern:

- ``errors``: :class:`AdapterDataError`, raised for unusable input files;
- ``data``: feature files, data sets and :class:`MultimodalSplits` (what a task's loader returns);
- ``batching``: padding collate and ``prepare_batch`` for the engines;
- ``model``: the sequence networks (:class:`MultimodalTransformer`, its auxiliary heads, the predictor);
- ``metrics``: accuracy, F1 and the epoch metric :class:`PredictionMetric`;
- ``task``: :class:`ClassificationTask` (IEMOCAP, Food-101);
- ``reporting``: ``metrics.json`` with the test split's metrics;
- ``bundle_guards``: clear errors for a bundle composed or run without what a task needs.

The subpackages (``mosi``, ``iemocap``, ``food101``) hold each task's readers and what only that task
needs (MOSI's regression task and metrics, Food-101's frozen backbones and feature extraction); ``mult``
reads the MulT pickles of MOSI and IEMOCAP. Nothing here is imported by the engine or the balancers;
the bundle ``bundles/multimodal_cggm`` wires them together.
"""
