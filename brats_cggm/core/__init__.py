"""The contracts the engine, the balancers and the tasks share; imports nothing else of ``brats_cggm``.

- :mod:`~brats_cggm.core.outputs`: what a multimodal network hands to the engine (``MultimodalOutput``);
- :mod:`~brats_cggm.core.availability`: the availability mask, the one definition of an absent modality;
- :mod:`~brats_cggm.core.task`: the ``Task`` protocol (loss, auxiliary targets, utilization);
- :mod:`~brats_cggm.core.balancer`: the ``Balancer`` protocol and its ``StepContext``;
- :mod:`~brats_cggm.core.distributed`: rank queries and collectives, no-ops without a process group;
- :mod:`~brats_cggm.core.files`: atomic writes (one permission policy), ``to_jsonable``, ``write_json``;
- :mod:`~brats_cggm.core.devices`: ``resolve_device``, the one place a default device is chosen;
- :mod:`~brats_cggm.core.locks`: lock files that name their holder (run folders, cache entries);
- :mod:`~brats_cggm.core.safe_load`: ``load_tensors`` (``torch.load(weights_only=True)``) and the one message a
  refused or unreadable weights file gets;
- :mod:`~brats_cggm.core.resources`: where the shipped bundles and overlay configs are (checkout or installed).
"""
