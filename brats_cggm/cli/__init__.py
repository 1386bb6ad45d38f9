"""The command lines: one module per console script, each ``main(argv) -> int`` a short list of named steps.

- :mod:`~brats_cggm.cli.phantoms`: ``brats-cggm-phantoms``, write synthetic BraTS cases.
- :mod:`~brats_cggm.cli.prepare`: ``brats-cggm-prepare``, build the training cache ahead of a run.
- :mod:`~brats_cggm.cli.infer`: ``brats-cggm-infer``, segment NIfTI cases with a trained network.
- :mod:`~brats_cggm.cli.qc`: ``brats-cggm-qc``, the QC page of a folder of segmentations with reports.
- :mod:`~brats_cggm.cli.evaluate`: ``brats-cggm-evaluate``, Dice and HD95 of a folder of segmentations.
- :mod:`~brats_cggm.cli.fit_postprocessing`: ``brats-cggm-fit-postprocessing``, post-processing chosen on validation.
- :mod:`~brats_cggm.cli.valuate`: ``brats-cggm-valuate``, Shapley contribution of each modality.
- :mod:`~brats_cggm.cli.diagnose`: ``brats-cggm-diagnose``, imbalance diagnostics of trained runs.
- :mod:`~brats_cggm.cli.compare`: ``brats-cggm-compare``, balancing methods under one budget.
- :mod:`~brats_cggm.cli.select`: ``brats-cggm-select``, choose which unlabelled cases to annotate first.
- :mod:`~brats_cggm.cli.benchmark`: ``brats-cggm-benchmark``, the benchmark report.
- :mod:`~brats_cggm.cli.food101_features`: ``brats-cggm-food101-features``, precomputed Food-101 features.
- :mod:`~brats_cggm.cli.common`: the parser class, argument types, the error printer.

Exit status everywhere: 0 success, 1 failure, 2 bad arguments; errors go to stderr. Flags are kebab-case; a
folder the command writes into is ``--output-dir`` (``brats-cggm-phantoms`` takes it as its positional
``OUT_DIR``), a single file is ``--out FILE``. Flags are not abbreviated, and renamed flags have no aliases.
"""
