"""Diagnosing & Re-learning (Wei et al., ECCV 2024, arXiv 2407.09705).

Every ``reinit_epoch`` epochs (at most ``reinit_num`` times) each encoder is **diagnosed** by how
separable its features are: its features of a few training batches and of a few held-out batches are
clustered (k-means, k = number of classes, each set on its own) and the cluster *purity* (the fraction
of samples whose label is their cluster's majority label) is computed on each. A modality that is
well learnt on training data but not on held-out data is over-trained; its encoder is softly
**re-initialised** towards its initial parameters:

    gap_u = |purity_train(u) − purity_val(u)|,   α_u = tanh(λ · gap_u),
    θ_u ← α_u · θ_u^{init} + (1 − α_u) · θ_u.

Segmentation adaptation (BraTS). There is no class per sample, so the diagnosis runs on **voxel
features**: the encoder level ``level`` (default the deepest, the most semantic) of each modality,
with each voxel's class taken from the targets at that resolution (nearest). Multi-channel region
targets (TC, WT, ET) are turned into one class per voxel by their bit pattern, i.e. background, edema,
necrosis and enhancing tumour for nested BraTS regions, so k = regions + background = 4. Up to
``voxels_per_class`` voxels of each class are sampled per batch (stratified, else background would
dominate and every purity would be ≈ 1). Validation batches are whole volumes: each is randomly cropped
(zero-padded where smaller) to ``crop_size``, by default the spatial size of the training batches just
diagnosed, so the cost stays that of a training batch and the network's size constraints hold.
Classification tasks (features ``(B, C)``, integer targets) use the samples themselves.

Held-out data: ``heldout_loader`` when given, else the data loader of the validator that a MONAI
``ValidationHandler`` runs on the trainer (so an overlay needs no reference into the bundle).

Task-agnostic: the balancer reads batches through the trainer (``engine.prepare_batch``) and features
through ``network.forward_features``; k-means is a small torch implementation (k-means++ start), no
scikit-learn. Purities are all-reduced over ranks before deciding, so every replica re-initialises alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from brats_cggm.balancing.registry import register_balancer
from brats_cggm.core.balancer import Balancer
from brats_cggm.core.distributed import all_reduce_mean, unwrap
from brats_cggm.core.modules import forward_features, module_list

__all__ = [
    "SCALES",
    "RelearningBalancer",
    "cluster_purity",
    "find_validation_loader",
    "kmeans",
    "minmax_scale",
    "reinit_alpha",
    "soft_reinit_",
    "voxel_samples",
]


def kmeans(
    x: torch.Tensor, k: int, iters: int = 30, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding.

    Args:
        x: ``(N, D)`` samples.
        k: number of clusters (reduced to N if N < k).
        iters: maximum number of Lloyd iterations.
        generator: random generator (CPU) for the seeding.

    Returns:
        ``(assignments (N,), centres (k, D))``.
    """
    x = x.float()
    n = x.shape[0]
    k = max(1, min(int(k), n))
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    dist = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = dist.sum()
        if total <= 0:
            idx = int(torch.randint(n, (1,), generator=generator))
        else:
            idx = int(torch.multinomial((dist / total).cpu(), 1, generator=generator))
        centres.append(x[idx])
        dist = torch.minimum(dist, ((x - x[idx]) ** 2).sum(1))
    c = torch.stack(centres)
    assign = torch.cdist(x, c).argmin(1)
    for _ in range(iters):
        new = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        keep = counts > 0
        c = torch.where(keep.unsqueeze(1), new / counts.clamp_min(1).unsqueeze(1), c)
        updated = torch.cdist(x, c).argmin(1)
        if torch.equal(updated, assign):
            break
        assign = updated
    return assign, c


#: How features are scaled before k-means (``RelearningBalancer(scale=...)``).
SCALES = ("none", "minmax")


def minmax_scale(x: torch.Tensor, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    """Each feature (column) mapped linearly onto ``[low, high]`` over the samples (``docs/methods.md`` §4.1).

    The authors' code scales the features this way (scikit-learn's ``MinMaxScaler(feature_range=(-1, 1))``)
    before k-means, each set of samples on its own; a constant feature goes to ``low``, as there.

    Args:
        x: ``(N, D)`` samples.
        low: the lower end.
        high: the upper end.

    Returns:
        ``(N, D)`` scaled samples (float).
    """
    x = x.float()
    minimum = x.min(0, keepdim=True).values
    spread = x.max(0, keepdim=True).values - minimum
    spread = torch.where(spread > 0, spread, torch.ones_like(spread))
    return low + (x - minimum) / spread * (high - low)


def cluster_purity(assignments: torch.Tensor, labels: torch.Tensor) -> float:
    """Purity ``(1/N) Σ_c max_j |{n: cluster n = c, label n = j}|``."""
    assignments, labels = assignments.long().flatten(), labels.long().flatten()
    if assignments.numel() == 0:
        return float("nan")
    _, labels = torch.unique(labels, return_inverse=True)
    num_labels = int(labels.max()) + 1
    table = torch.bincount(assignments * num_labels + labels, minlength=(int(assignments.max()) + 1) * num_labels)
    return float(table.view(-1, num_labels).max(1).values.sum()) / assignments.numel()


def reinit_alpha(gaps: torch.Tensor, lam: float) -> torch.Tensor:
    """``α = tanh(λ·gap)``."""
    return torch.tanh(lam * gaps.float())


@torch.no_grad()
def soft_reinit_(params: Iterable[torch.nn.Parameter], initial: Iterable[torch.Tensor], alpha: float) -> None:
    """``θ ← α·θ_init + (1 − α)·θ``, in place."""
    for p, init in zip(params, initial, strict=True):
        p.mul_(1.0 - alpha).add_(init.to(p.device, p.dtype), alpha=alpha)


def _class_map(targets: torch.Tensor) -> torch.Tensor:
    """One class index per voxel ``(B, *S)``: bit pattern of multi-channel masks, or the label itself."""
    if targets.shape[1] == 1:
        return targets[:, 0].round().long()
    weights = (2 ** torch.arange(targets.shape[1], device=targets.device)).view(1, -1, *([1] * (targets.ndim - 2)))
    return ((targets >= 0.5).long() * weights).sum(1)


def voxel_samples(
    feature: torch.Tensor, targets: torch.Tensor, per_class: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples ``(N, C)`` and labels ``(N,)`` from one batch's features (see the module docstring).

    Args:
        feature: ``(B, C, *S)`` voxel features (when ``targets`` has as many dimensions), else per-sample
            features: ``(B, C)``, or ``(B, L, C)`` token sequences (averaged over the tokens).
        targets: ``(B, R, *S')`` region masks / ``(B, 1, *S')`` labels (segmentation), or per sample:
            ``(B,)`` / ``(B, 1)`` class indices (real values are rounded, e.g. MOSI's sentiment
            scores into its 7 classes) or ``(B, K)`` one-hot / scores (arg-max).
        per_class: voxels drawn per class (stratified); ignored for per-sample features.
        generator: random generator for the voxel draw.
    """
    if feature.ndim != targets.ndim or feature.ndim == 2:
        if feature.ndim > 2:
            feature = feature.float().mean(dim=tuple(range(1, feature.ndim - 1)))
        labels = targets.reshape(targets.shape[0], -1)
        labels = labels.argmax(1) if labels.shape[1] > 1 else labels[:, 0].round()
        return feature.float(), labels.long()
    classes = _class_map(targets).float().unsqueeze(1)
    classes = F.interpolate(classes, size=feature.shape[2:], mode="nearest")[:, 0].long().flatten()
    samples = feature.float().movedim(1, -1).reshape(-1, feature.shape[1])
    picks = []
    for c in torch.unique(classes):
        idx = torch.nonzero(classes == c).flatten()
        if idx.numel() > per_class:
            idx = idx[torch.randperm(idx.numel(), generator=generator)[:per_class].to(idx.device)]
        picks.append(idx)
    idx = torch.cat(picks)
    return samples[idx], classes[idx]


def find_validation_loader(engine: Any) -> Iterable | None:
    """The data loader of the validator a ``ValidationHandler`` (or similar) runs on ``engine``, or None."""
    from ignite.engine import Events

    # ignite wraps filtered handlers (``EPOCH_COMPLETED(every=n)``) and keeps the original as ``_parent``
    for handler, _, _ in getattr(engine, "_event_handlers", {}).get(Events.EPOCH_COMPLETED, []):
        parent = getattr(handler, "_parent", None)
        handler = parent() if parent is not None else handler
        loader = getattr(getattr(handler, "validator", None), "data_loader", None)
        if loader is not None:
            return loader
    return None


def _random_crop(inputs: torch.Tensor, targets: torch.Tensor, size: Sequence[int], generator: torch.Generator):
    spatial = inputs.shape[2:]
    pads = []
    for s, c in zip(reversed(spatial), reversed(size)):
        pads += [0, max(0, c - s)]
    if any(pads):
        inputs, targets = F.pad(inputs, pads), F.pad(targets, pads)
    slices = [slice(None), slice(None)]
    for s, c in zip(inputs.shape[2:], size):
        start = int(torch.randint(s - c + 1, (1,), generator=generator))
        slices.append(slice(start, start + c))
    return inputs[tuple(slices)], targets[tuple(slices)]


@register_balancer("relearning")
class RelearningBalancer(Balancer):
    """Diagnosing & Re-learning as a balancer plug-in (acts at epoch end).

    Args:
        modalities: modality names, in the network's encoder order.
        heldout_loader: held-out batches for the diagnosis; None = the trainer's validation loader (see
            :func:`find_validation_loader`).
        lam: λ of ``α = tanh(λ·gap)`` (paper: 3).
        reinit_epoch: diagnose every this many epochs (paper: 15–20).
        reinit_num: at most this many re-initialisations (paper: 2–3).
        num_clusters: k; None = regions + background for multi-channel targets, else the number of
            labels in the training sample.
        level: which level of a multi-scale encoder's features is diagnosed (-1 = deepest).
        voxels_per_class: voxels drawn per class and batch (segmentation).
        max_batches: batches read from each loader per diagnosis.
        crop_size: spatial size of the random crop taken from every held-out batch; None = the spatial
            size of the training batches (no crop where they match; never used for ``(B, C)`` inputs).
        kmeans_iters: Lloyd iterations.
        seed: seed of the voxel draws, crops and k-means seeding.
        scale: ``"none"`` (the features as they are) or ``"minmax"`` (each feature onto [−1, 1] over the samples
            of the set being clustered, the authors' code; :func:`minmax_scale`).
    """

    @classmethod
    def short_run_kwargs(cls, max_epochs: int) -> dict[str, Any]:
        """Two diagnoses within the budget, at a third and two thirds of it (paper: every 15–20 epochs).

        A one-epoch run gets none: a re-initialisation needs epochs after it to re-learn.
        """
        if max_epochs < 2:
            return {}
        return {"reinit_epoch": max(1, max_epochs // 3), "reinit_num": 2}

    def __init__(
        self,
        modalities: Sequence[str],
        heldout_loader: Iterable | None = None,
        lam: float = 3.0,
        reinit_epoch: int = 15,
        reinit_num: int = 2,
        num_clusters: int | None = None,
        level: int = -1,
        voxels_per_class: int = 256,
        max_batches: int = 4,
        crop_size: Sequence[int] | None = None,
        kmeans_iters: int = 30,
        seed: int = 0,
        scale: str = "none",
    ) -> None:
        super().__init__(modalities)
        if reinit_epoch < 1:
            raise ValueError(f"reinit_epoch must be at least 1, got {reinit_epoch}")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        self.scale = scale
        self.heldout_loader = heldout_loader
        self.lam, self.reinit_epoch, self.reinit_num = float(lam), int(reinit_epoch), int(reinit_num)
        self.num_clusters = None if num_clusters is None else int(num_clusters)
        self.level, self.voxels_per_class, self.max_batches = int(level), int(voxels_per_class), int(max_batches)
        self.crop_size = None if crop_size is None else tuple(int(c) for c in crop_size)
        self.kmeans_iters, self.seed = int(kmeans_iters), int(seed)
        self.engine: Any = None
        self.initial: list[list[torch.Tensor]] | None = None
        self.reinit_count = 0
        num = len(self.modalities)
        self.last = {"purity_train": torch.zeros(num), "purity_val": torch.zeros(num), "alpha": torch.zeros(num)}

    def attach(self, engine: Any) -> None:
        self.engine = engine
        if self.initial is None:
            network = unwrap(engine.network)
            self.initial = [
                [p.detach().cpu().clone() for p in enc.parameters()] for enc in module_list(network, "encoders")
            ]

    def due(self, epoch: int) -> bool:
        """Whether a diagnosis (and re-initialisation) runs after ``epoch``; never after the last epoch,
        where re-learning has no epoch left and would only degrade the final weights."""
        state = getattr(self.engine, "state", None)
        last = getattr(state, "max_epochs", None)
        if last is not None and epoch >= last:
            return False
        return epoch % self.reinit_epoch == 0 and self.reinit_count < self.reinit_num

    def epoch_completed(self, epoch: int) -> None:
        if not self.due(epoch):
            return
        if self.engine is None:
            raise RuntimeError("relearning: attach(engine) was not called, so there is no data to diagnose")
        heldout = self.heldout_loader if self.heldout_loader is not None else find_validation_loader(self.engine)
        if heldout is None:
            raise RuntimeError(
                "relearning needs held-out data: pass heldout_loader or attach a ValidationHandler to the trainer"
            )
        if self.initial is None:
            raise RuntimeError("relearning: attach(engine) was not called, so there are no initial weights")
        network = unwrap(self.engine.network)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        purity_train, train_size = self.diagnose(network, self.engine.data_loader, generator, crop_size=None)
        purity_val, _ = self.diagnose(network, heldout, generator, crop_size=self.crop_size or train_size)
        gaps = (purity_train - purity_val).abs()
        alphas = reinit_alpha(gaps, self.lam)
        for i, encoder in enumerate(module_list(network, "encoders")):
            soft_reinit_(encoder.parameters(), self.initial[i], float(alphas[i]))
        self.reinit_count += 1
        self.last = {"purity_train": purity_train, "purity_val": purity_val, "alpha": alphas}
        for i, name in enumerate(self.modalities):
            self._scalars[f"relearning/purity_train/{name}"] = float(purity_train[i])
            self._scalars[f"relearning/purity_val/{name}"] = float(purity_val[i])
            self._scalars[f"relearning/gap/{name}"] = float(gaps[i])
            self._scalars[f"relearning/alpha/{name}"] = float(alphas[i])
        self._scalars["relearning/reinit_count"] = float(self.reinit_count)
        # activity (docs/methods.md §0.3): the number of resets and each reset's α per modality
        self.activity_statistics.add("relearning/resets")
        for i, name in enumerate(self.modalities):
            self.activity_statistics.record(f"relearning/alpha/{name}/reset{self.reinit_count}", float(alphas[i]))

    @torch.no_grad()
    def diagnose(
        self,
        network: torch.nn.Module,
        loader: Iterable,
        generator: torch.Generator,
        crop_size: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, tuple[int, ...] | None]:
        """Cluster purity of each modality's features on up to ``max_batches`` batches of ``loader``.

        Args:
            network: the bare network (``forward_features``).
            loader: the batches.
            generator: random generator of the crops, voxel draws and k-means seeding.
            crop_size: random crop of every batch with spatial dimensions (None: no crop).

        Returns:
            ``(purity per modality (M,), spatial size of the batches read or None for (B, C) inputs)``.
        """
        engine = self.engine
        spatial = None
        was_training = network.training
        network.eval()
        samples: list[list[torch.Tensor]] = [[] for _ in self.modalities]
        labels: list[list[torch.Tensor]] = [[] for _ in self.modalities]
        region_channels = None
        try:
            for batchdata in itertools.islice(loader, self.max_batches):
                batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
                inputs, targets = batch[0], batch[1]
                if isinstance(inputs, torch.Tensor):
                    inputs = inputs.as_subclass(torch.Tensor)
                targets = targets.as_subclass(torch.Tensor)
                if targets.ndim > 2 and targets.shape[1] > 1:
                    region_channels = int(targets.shape[1])
                if isinstance(inputs, torch.Tensor) and inputs.ndim > 2 and targets.ndim == inputs.ndim:
                    if crop_size is not None and tuple(inputs.shape[2:]) != tuple(crop_size):
                        inputs, targets = _random_crop(inputs, targets, crop_size, generator)
                    spatial = tuple(int(d) for d in inputs.shape[2:])
                features = forward_features(network, inputs).features
                for i, f in enumerate(features):
                    f = f if isinstance(f, torch.Tensor) else f[self.level]
                    x, y = voxel_samples(f, targets, self.voxels_per_class, generator)
                    samples[i].append(x.cpu())
                    labels[i].append(y.cpu())
        finally:
            network.train(was_training)
        purities = torch.zeros(len(self.modalities))
        for i in range(len(self.modalities)):
            x, y = torch.cat(samples[i]), torch.cat(labels[i])
            if self.scale == "minmax":
                x = minmax_scale(x)
            k = self.num_clusters or (region_channels + 1 if region_channels else int(torch.unique(y).numel()))
            assign, _ = kmeans(x, k, self.kmeans_iters, generator)
            purities[i] = cluster_purity(assign, y)
        return all_reduce_mean(purities.to(engine.state.device)).cpu(), spatial

    def state_dict(self) -> dict[str, Any]:
        return {
            "reinit_count": self.reinit_count,
            "initial": self.initial,
            "last": {k: v.clone() for k, v in self.last.items()},
            "activity": self.activity_statistics.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reinit_count = int(state_dict["reinit_count"])
        if state_dict.get("initial") is not None:
            self.initial = [[t.clone() for t in r] for r in state_dict["initial"]]
        self.last = {k: v.clone().float() for k, v in state_dict["last"].items()}
        self.activity_statistics.load_state_dict(state_dict.get("activity"))
