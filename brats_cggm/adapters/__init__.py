"""Task adapters beyond BraTS: CMU-MOSI, IEMOCAP and UPMC Food-101 in their users' file formats.

Each subpackage (``mosi``, ``iemocap``, ``food101``) holds the data loaders, the network builder and
the task (loss, utilization ε, metrics); ``common`` holds what they share. Nothing here is imported by
the engine or the balancers; the bundle ``bundles/multimodal_cggm`` wires them together.
"""
