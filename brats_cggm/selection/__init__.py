"""Cold-start case selection: which unlabelled cases to annotate first (docs/methods.md §8).

MMCSAL (reconstructed): self-supervised multimodal pre-training of the network's per-modality encoders on the
unlabelled pool (:mod:`.pretraining`, losses in :mod:`.losses`), per-case embeddings (:mod:`.embeddings`) and
the selection strategies (:mod:`.strategies`: MMCSAL, random, k-means centres, TypiClust, ProbCover).
"""
