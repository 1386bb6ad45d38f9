"""Whole-volume inference on NIfTI scans: the python API (the command line is :mod:`brats_cggm.cli.infer`).

The network and its settings come from :mod:`brats_cggm.brats.inference.model_loading`, the cases and the output
files from :mod:`brats_cggm.brats.inference.case_io`. The preprocessing chain is
:func:`brats_cggm.brats.data.transforms.inference_transforms`, the one training validates with, with the
options of the training config; predictions go back to the input's voxel grid with
``monai.transforms.Invertd``. Segmentations are written with the input's own header (shape, qform, sform,
units), as ``uint8`` labels of a BraTS label convention.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, cast

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.transforms import Activationsd, AsDiscreted, Compose, CopyItemsd, Invertd, MapTransform, ToDeviced

from brats_cggm.brats.data.labels import REGIONS, ConvertToLabelsd
from brats_cggm.brats.data.nifti_checks import (
    AFFINE_TOLERANCE,
    InputFileError,
    check_same_grid,
    check_volume_values,
    load_checked_volume,
    load_nifti,
)
from brats_cggm.brats.data.transforms import inference_transforms
from brats_cggm.brats.inference.case_io import (
    MISSING_MODALITY_MODES,
    CaseInput,
    LoadedNiftiReader,
    SaveSegmentationd,
    case_record,
    check_inverted,
    inference_items,
    missing_file_text,
    missing_files_message,
    save_like_reference,
)
from brats_cggm.brats.inference.device_preprocessing import on_device, preprocessing_device
from brats_cggm.brats.inference.model_loading import InferenceSettings, load_model, save_run_config
from brats_cggm.brats.inference.postprocessing_rules import PostprocessingRules
from brats_cggm.brats.model import AvailabilityPredictor, MultiEncoderUNet

# MISSING_MODALITY_MODES, save_run_config, SaveSegmentationd, inference_items: re-exported for the bundle configs and
# the command line; CaseInput, InferenceSettings, load_model, save_like_reference: for the benchmark and the valuation.
__all__ = [
    "AVAILABLE_META_KEY",
    "MISSING_MODALITY_MODES",
    "PREPROCESSING_KEY",
    "BratsSegmenter",
    "CaseInput",
    "FlipTTA",
    "InferenceSettings",
    "InsertZeroChannelsd",
    "MissingModalityInferer",
    "SaveSegmentationd",
    "inference_items",
    "insert_zero_channels",
    "load_model",
    "postprocessing_transforms",
    "save_like_reference",
    "save_run_config",
    "stitch_on_cpu",
]

STITCH_CHOICES = ("auto", "device", "cpu")

#: Item key, in :meth:`BratsSegmenter.prepare`'s output, of the preprocessing chain that :meth:`BratsSegmenter.finish`
#: inverts.
PREPROCESSING_KEY = "preprocessing"

# ------------------------------------------------------------------------------------------ transforms


#: Key, in an image's meta data, of its modalities' availability (a bool tensor, one entry per network channel),
#: recorded by :class:`InsertZeroChannelsd` for :class:`MissingModalityInferer`.
AVAILABLE_META_KEY = "available_modalities"


class InsertZeroChannelsd(MapTransform):
    """Insert all-zero channels into ``keys`` so that missing modalities reach their branch as zeros.

    The image's meta data also gets, under :data:`AVAILABLE_META_KEY`, which channels hold a modality: that
    reaches the sliding window with the image (see :class:`MissingModalityInferer`).

    Args:
        keys: keys of the channel-first images.
        positions: indices, in the output, of the zero channels (ascending); the same for every item.
        allow_missing_keys: do not raise if a key is missing.
        positions_key: item key holding the positions instead (per item, e.g. ``"missing"`` of
            :func:`~brats_cggm.brats.inference.case_io.inference_items`); replaces ``positions``. An item
            without the key gets no zero channel.

    Raises:
        ValueError: if neither ``positions`` nor ``positions_key`` is given.
    """

    def __init__(
        self,
        keys: KeysCollection,
        positions: Sequence[int] | None = None,
        allow_missing_keys: bool = False,
        positions_key: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if positions is None and positions_key is None:
            raise ValueError("InsertZeroChannelsd needs positions or positions_key")
        self.positions = sorted(int(p) for p in positions or ())
        self.positions_key = positions_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.positions_key is None:
            positions = self.positions
        else:
            # an item without the key has every channel: MONAI Label's requests (image path only) are not
            # made by inference_items, which always sets it
            positions = sorted(int(p) for p in cast("Sequence[int]", d.get(self.positions_key) or ()))
        for key in self.key_iterator(d):
            channels = list(torch.unbind(d[key], dim=0))
            for p in positions:
                channels.insert(p, torch.zeros_like(channels[0]))
            image = torch.stack(channels, dim=0) if positions else d[key]
            if isinstance(image, MetaTensor):
                image.meta[AVAILABLE_META_KEY] = torch.tensor([i not in positions for i in range(len(channels))])
            d[key] = image
        return d


def insert_zero_channels(
    preprocessing: Compose, positions: Sequence[int] | None = None, positions_key: str | None = None
) -> Compose:
    """``preprocessing`` with :class:`InsertZeroChannelsd` on ``"image"`` right after loading.

    Right after loading, so that every later step sees the full channel set; the step is not invertible and
    ``Invertd`` passes over it.

    Args:
        preprocessing: a chain whose first step loads ``"image"`` (e.g.
            :func:`~brats_cggm.brats.data.transforms.inference_transforms`).
        positions: the zero channels, the same for every item.
        positions_key: item key holding each item's zero channels instead.

    Returns:
        A new chain.
    """
    steps = list(preprocessing.transforms)
    steps.insert(1, InsertZeroChannelsd(keys="image", positions=positions, positions_key=positions_key))
    return Compose(steps)


def postprocessing_transforms(
    preprocessing: Compose,
    label_convention: str = "brats2021",
    probabilities_key: str | None = None,
    output_device: str | torch.device | None = None,
) -> Compose:
    """Logits to labels in the input's voxel grid: sigmoid, inversion of ``preprocessing``, threshold, labels.

    Probabilities, not labels, are inverted, so that resampling (when the preprocessing resamples) is
    linear and the threshold is applied in the original grid. Every step runs where ``"pred"`` lies (with
    :func:`~brats_cggm.brats.inference.device_preprocessing.on_device`, on the GPU).

    Args:
        preprocessing: the transform that produced ``"image"`` (its operations are undone on ``"pred"``).
        label_convention: the labels written (see :data:`~brats_cggm.brats.data.labels.LABEL_CONVENTIONS`).
        probabilities_key: also keep the inverted TC/WT/ET probabilities under this key.
        output_device: move the labels (and probabilities) there at the end; None leaves them where they are.

    Returns:
        The transform, acting on ``"pred"`` (logits, channel-first) next to ``"image"``.
    """
    transforms: list = [
        Activationsd(keys="pred", sigmoid=True),
        Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True),
    ]
    if probabilities_key:
        transforms.append(CopyItemsd(keys="pred", names=probabilities_key))
    transforms += [
        AsDiscreted(keys="pred", threshold=0.5),
        ConvertToLabelsd(keys="pred", convention=label_convention),
    ]
    if output_device is not None:
        moved = ["pred", probabilities_key] if probabilities_key else ["pred"]
        transforms.append(ToDeviced(keys=moved, device=output_device))
    return Compose(transforms)


class FlipTTA(torch.nn.Module):
    """Test-time augmentation: average the sigmoid outputs over all flips of the spatial axes.

    Returns logits of the averaged probabilities, so that it can replace the network anywhere.

    Args:
        network: maps ``(B, C, *spatial)`` to region logits.
        spatial_dims: number of spatial dimensions.
    """

    def __init__(self, network: torch.nn.Module, spatial_dims: int = 3) -> None:
        super().__init__()
        self.network = network
        axes = range(2, 2 + spatial_dims)
        self.flips = [list(c) for r in range(spatial_dims + 1) for c in itertools.combinations(axes, r)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Averaged prediction of ``x`` (logits)."""
        total: torch.Tensor | None = None
        for dims in self.flips:
            logits = self.network(torch.flip(x, dims) if dims else x)
            prob = torch.sigmoid(logits.float())
            prob = torch.flip(prob, dims) if dims else prob
            total = prob if total is None else total + prob
        if total is None:  # never: the flips include the identity
            raise RuntimeError("no flips to average")
        # float32: in float16, 1 - eps rounds to 1 and the logit to inf.
        return torch.logit((total / len(self.flips)).clamp(1e-6, 1 - 1e-6))


# ------------------------------------------------------------------------------------------ segmenting


def stitch_on_cpu(stitch: str, device: torch.device, voxels: int, channels: int, free_bytes: int | None = None) -> bool:
    """Whether the sliding window should stitch the whole-volume output in CPU memory.

    Args:
        stitch: ``"device"`` (where the windows run), ``"cpu"``, or ``"auto"``: CPU when the compute device
            is a GPU and the stitching buffers (input, output, weights, float32) would take more than half of
            its free memory.
        device: where the windows run.
        voxels: voxels of the (preprocessed) volume.
        channels: input plus output channels.
        free_bytes: free device memory; queried from CUDA when None.

    Returns:
        True to stitch on the CPU while the windows run on ``device``.

    Raises:
        ValueError: for an unknown ``stitch``.
    """
    if stitch not in STITCH_CHOICES:
        raise ValueError(f"stitch must be one of {STITCH_CHOICES}, got {stitch!r}")
    if device.type == "cpu" or stitch == "device":
        return False
    if stitch == "cpu":
        return True
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
    # the output, the importance-weighted count map and the input, all float32
    return 4 * voxels * (channels + 1) > free_bytes // 2


def _check_takes_mask(network: torch.nn.Module) -> None:
    """Refuse ``--missing-modality drop`` for a network that cannot be given an availability mask."""
    if isinstance(network, torch.jit.ScriptModule):
        raise ValueError(
            "--missing-modality drop needs the network's availability mask, which a TorchScript model (forward "
            "only) cannot take: use --bundle with the run's weights, or --missing-modality error or zero"
        )
    if not callable(getattr(network, "forward_features", None)):
        raise ValueError(
            f"--missing-modality drop needs a network with forward_features(x, available=...); "
            f"{type(network).__name__} has none"
        )


class MissingModalityInferer(SlidingWindowInferer):
    """``SlidingWindowInferer`` that predicts each case from the modalities it has (the bundle's ``drop`` mode).

    Under ``"drop"``, the network runs through :class:`~brats_cggm.brats.model.AvailabilityPredictor` for the
    channels that :class:`InsertZeroChannelsd` recorded as present in the input's meta data, as
    :meth:`BratsSegmenter.predictor_for` does; a case with every modality, and every case under ``"error"`` or
    ``"zero"``, runs through the plain network.

    Args:
        roi_size: the window, as ``SlidingWindowInferer``.
        args: forwarded to ``SlidingWindowInferer``.
        missing_modality: one of :data:`MISSING_MODALITY_MODES`.
        available_key: meta data key of the availability.
        kwargs: forwarded to ``SlidingWindowInferer``.

    Raises:
        ValueError: for an unknown ``missing_modality``.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        *args: Any,
        missing_modality: str = "error",
        available_key: str = AVAILABLE_META_KEY,
        **kwargs: Any,
    ) -> None:
        super().__init__(roi_size, *args, **kwargs)
        if missing_modality not in MISSING_MODALITY_MODES:
            raise ValueError(f"missing_modality must be one of {MISSING_MODALITY_MODES}, got {missing_modality!r}")
        self.missing_modality = missing_modality
        self.available_key = available_key

    def predictor(self, inputs: torch.Tensor, network: Any) -> Any:
        """What the window runs for ``inputs``: the network, or its prediction from the present channels.

        Args:
            inputs: the batch ``(B, M, *spatial)``, a ``MetaTensor`` carrying the availability.
            network: the network.

        Returns:
            A callable mapping windows to region logits.

        Raises:
            ValueError: under ``"drop"``, if the input carries no availability (the preprocessing lacks
                :class:`InsertZeroChannelsd`), the cases of one batch differ in it, or the network takes no mask.
        """
        if self.missing_modality != "drop":
            return network
        meta = inputs.meta if isinstance(inputs, MetaTensor) else {}
        if self.available_key not in meta:
            raise ValueError(
                f"missing_modality drop: the input has no {self.available_key!r} meta data; the preprocessing "
                "needs InsertZeroChannelsd (see insert_zero_channels)"
            )
        available = torch.as_tensor(meta[self.available_key]).bool().reshape(-1, inputs.shape[1])
        if bool(available.all()):
            return network
        # one mask per call: the predictor of a batch serves all its windows
        if not bool((available == available[0]).all()):
            raise ValueError("missing_modality drop: the cases of a batch lack different modalities; use batch_size 1")
        _check_takes_mask(network)
        present = [int(i) for i in torch.nonzero(available[0]).flatten()]
        return AvailabilityPredictor(cast("MultiEncoderUNet", network), present)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(inputs, self.predictor(inputs, network), *args, **kwargs)


def _missing_message(case: CaseInput, modalities: Sequence[str]) -> str:
    """Why a case lacking files is refused: each missing file (where it was looked for) and the flag to use."""
    files = [missing_file_text(modalities[i], case.expected.get(i)) for i in case.missing]
    return missing_files_message(files, "--missing-modality")


class BratsSegmenter:
    """Segment cases with a network: checks, training preprocessing, sliding window, inversion, labels.

    Args:
        network: maps ``(B, M, *spatial)`` to region logits (``MultiEncoderUNet`` or TorchScript).
        settings: the training settings (see :func:`load_model`).
        device: where to run.
        roi_size: sliding-window size; ``settings.roi_size`` when None.
        overlap: sliding-window overlap; ``settings.overlap`` when None.
        sw_batch_size: windows per forward pass; ``settings.sw_batch_size`` when None.
        tta: average over the flips of every spatial axis (8 passes).
        amp: mixed precision; None turns it on for CUDA.
        progress: show a progress bar of the sliding window.
        affine_tolerance: largest affine difference between a case's modalities.
        stitch: where the whole-volume output is assembled (see :func:`stitch_on_cpu`): ``"cpu"`` keeps
            only the windows on the GPU, for volumes whose output does not fit beside the network.
        postprocess: post-processing rules applied to the labels in the input's grid (sizes in mm³ use the
            input's voxel spacing); None: none (``settings.postprocessing_rules`` is not applied unless passed).
        missing_modality: a case lacking a modality file is refused by :meth:`check` (``"error"``), predicted
            from its present modalities through the availability mask (``"drop"``, needs a network with
            ``forward_features(x, available=...)``), or given zeros in the missing channels (``"zero"``). In
            every mode the missing channels hold zeros; under ``"drop"`` they are never read.
        preprocess_on: where the preprocessing after the read and the inversion run (see
            :func:`~brats_cggm.brats.inference.device_preprocessing.preprocessing_device`): ``"cpu"``, the
            compute ``"device"``, or ``"auto"`` (the device when it is a GPU).

    Raises:
        ValueError: if no sliding-window size is known, ``stitch``, ``preprocess_on`` or ``missing_modality`` is
            unknown, or ``"drop"`` is asked of a network that takes no availability mask (TorchScript).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        settings: InferenceSettings,
        device: str | torch.device = "cpu",
        roi_size: Sequence[int] | None = None,
        overlap: float | None = None,
        sw_batch_size: int | None = None,
        tta: bool = False,
        amp: bool | None = None,
        progress: bool = False,
        affine_tolerance: float = AFFINE_TOLERANCE,
        stitch: str = "auto",
        postprocess: PostprocessingRules | None = None,
        missing_modality: str = "error",
        preprocess_on: str = "auto",
    ) -> None:
        self.postprocess = postprocess
        if missing_modality not in MISSING_MODALITY_MODES:
            raise ValueError(f"missing_modality must be one of {MISSING_MODALITY_MODES}, got {missing_modality!r}")
        if missing_modality == "drop":
            _check_takes_mask(network)
        self.missing_modality = missing_modality
        if stitch not in STITCH_CHOICES:
            raise ValueError(f"stitch must be one of {STITCH_CHOICES}, got {stitch!r}")
        self.stitch = stitch
        self.device = torch.device(device)
        #: where the device chain runs (see :meth:`preprocessing`); None: the CPU chain
        self.preprocess_device = preprocessing_device(preprocess_on, self.device, stitch)
        self.settings = settings
        self.network = network.to(self.device).eval()
        self.tta = tta
        #: the predictor of a case with every modality (see :meth:`predictor_for`)
        self.predictor = FlipTTA(self.network) if tta else self.network
        roi = roi_size if roi_size is not None else settings.roi_size
        if roi is None:
            raise ValueError("no sliding-window size: the config has no patch_size, pass --roi X Y Z")
        divisor = getattr(network, "divisor", 1)
        if any(int(s) % divisor for s in roi):
            raise ValueError(f"sliding-window size {tuple(roi)} must be a multiple of {divisor} for this network")
        self.roi_size = tuple(int(s) for s in roi)
        self.amp = self.device.type == "cuda" if amp is None else bool(amp and self.device.type == "cuda")
        self.affine_tolerance = affine_tolerance
        self.inferer = SlidingWindowInferer(
            roi_size=self.roi_size,
            sw_batch_size=sw_batch_size or settings.sw_batch_size,
            overlap=settings.overlap if overlap is None else overlap,
            mode="gaussian",
            progress=progress,
            sw_device=self.device,
        )

    def check(
        self, case: CaseInput, allow_missing: bool | None = None, times: dict[str, float] | None = None
    ) -> dict[str, nib.Nifti1Image]:
        """Read every file of ``case`` and check it (see :mod:`brats_cggm.brats.data.nifti_checks`).

        Args:
            case: the case.
            allow_missing: accept a case that lacks a modality file; None: unless ``missing_modality`` is
                ``"error"``.
            times: if given, gets ``"read"`` (seconds reading and decompressing the files) and ``"check"`` (the
                rest: header, value and grid checks); one pass does both, each file is read once.

        Returns:
            The images read, by path: passed to :meth:`__call__`, they spare reading the files again.

        Raises:
            InputFileError: naming the file and the problem.
        """
        start = time.perf_counter()
        timings: dict[str, float] = {"read": 0.0}
        images = self._check(case, allow_missing, timings)
        if times is not None:
            times["read"] = timings["read"]
            times["check"] = max(time.perf_counter() - start - timings["read"], 0.0)
        return images

    def _check(
        self, case: CaseInput, allow_missing: bool | None, timings: dict[str, float]
    ) -> dict[str, nib.Nifti1Image]:
        """:meth:`check`, adding the seconds spent reading to ``timings["read"]``."""
        if isinstance(case.image, str):
            order = case.channel_order or list(range(len(self.settings.modalities)))
            image, data = load_checked_volume(
                case.image, ndim=4, min_channels=max(order) + 1, check_values=False, timings=timings
            )
            for name, channel in zip(self.settings.modalities, order, strict=True):
                check_volume_values(case.image, data[..., channel], f"channel {channel} ({name})")
            return {case.image: image}
        if len(case.image) != len(self.settings.modalities):
            raise ValueError(f"{case.case_id}: {len(case.image)} files for modalities {self.settings.modalities}")
        if len(case.missing) == len(case.image):
            raise InputFileError(case.case_id, "no modality file at all")
        # The files given first: a missing modality is reported only for an otherwise usable case.
        loaded = [(p, load_checked_volume(p, ndim=3, timings=timings)[0]) for p in case.image if p is not None]
        check_same_grid(loaded, tolerance=self.affine_tolerance)
        if allow_missing is None:
            allow_missing = self.missing_modality != "error"
        if case.missing and not allow_missing:
            raise InputFileError(case.case_id, _missing_message(case, self.settings.modalities))
        return dict(loaded)

    def case_record(self, case: CaseInput, segmentation: str | os.PathLike) -> dict[str, Any]:
        """The JSON record of ``case``'s segmentation (:func:`~brats_cggm.brats.inference.case_io.case_record`).

        Args:
            case: the case.
            segmentation: its segmentation file.

        Returns:
            The record: the sequences used and missing, the mode, the inputs read and the model.
        """
        inputs = [case.image] if isinstance(case.image, str) else [p for p in case.image if p is not None]
        modalities = self.settings.modalities
        return case_record(
            case.case_id, segmentation, modalities, case.missing, self.missing_modality, inputs, self.settings.source
        )

    def predictor_for(self, case: CaseInput) -> torch.nn.Module:
        """What the sliding window runs for ``case``: under ``"drop"``, a case lacking modalities is predicted
        from the others through the availability mask (with TTA, each flip too); otherwise the network.

        Args:
            case: the case.

        Returns:
            A module mapping ``(B, M, *spatial)`` to region logits.
        """
        if not case.missing or self.missing_modality != "drop":
            return self.predictor
        present = [i for i in range(len(self.settings.modalities)) if i not in case.missing]
        # the constructor checked that the network takes a mask (_check_takes_mask)
        network = AvailabilityPredictor(cast("MultiEncoderUNet", self.network), present)
        return FlipTTA(network) if self.tta else network

    def preprocessing(self, case: CaseInput, images: Mapping[str, nib.Nifti1Image] | None = None) -> Compose:
        """The training preprocessing for ``case`` (with zero channels for missing modalities, which under
        ``"drop"`` only hold their place); with the device chain, every step after the read runs on
        ``preprocess_device`` (see :func:`~brats_cggm.brats.inference.device_preprocessing.on_device`).

        Args:
            case: the case.
            images: its images already read (see :meth:`check`); None reads the files (a DICOM series folder
                as :func:`~brats_cggm.brats.data.nifti_checks.load_nifti` reads it).
        """
        paths = [case.image] if isinstance(case.image, str) else [p for p in case.image if p is not None]
        # MONAI has no reader for a DICOM series folder: the reader that holds the images read has one
        series = any(os.path.isdir(p) for p in paths)
        reader = None if images is None and not series else LoadedNiftiReader(images or {})
        transform = inference_transforms(channel_order=case.channel_order, reader=reader, **self.settings.preprocessing)
        if self.preprocess_device is not None:
            transform = on_device(transform, self.preprocess_device)
        return insert_zero_channels(transform, positions=case.missing) if case.missing else transform

    def prepare(self, case: CaseInput, images: Mapping[str, nib.Nifti1Image] | None = None) -> dict[Hashable, Any]:
        """The preprocessing stage: ``case``'s images through :meth:`preprocessing`.

        Args:
            case: the (checked) case.
            images: its images as :meth:`check` returned them; None reads the files again.

        Returns:
            The item: ``"image"`` (channel-first, its applied operations recorded for the inversion) and, under
            :data:`PREPROCESSING_KEY`, the chain that made it (for :meth:`finish`).
        """
        preprocessing = self.preprocessing(case, images)
        image = case.image if isinstance(case.image, str) else [p for p in case.image if p is not None]
        data: dict[Hashable, Any] = dict(preprocessing({"image": image}))
        data[PREPROCESSING_KEY] = preprocessing
        return data

    def predict(self, case: CaseInput, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """The network stage: the sliding window over ``data["image"]`` on :attr:`device`.

        Args:
            case: the case (under ``"drop"`` its missing modalities choose the predictor).
            data: the item from :meth:`prepare`.

        Returns:
            A new item with ``"pred"``: region logits ``(3, *spatial)``, float32, in CPU memory.
        """
        data = dict(data)
        batch = data["image"].unsqueeze(0)
        channels = batch.shape[1] + len(REGIONS)
        if stitch_on_cpu(self.stitch, self.device, batch[0, 0].numel(), channels):
            # the windows go to the device one batch at a time; the volume and its output stay in CPU memory
            stitch_device = {"device": torch.device("cpu")}
        else:
            batch, stitch_device = batch.to(self.device), {}
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            logits = self.inferer(batch, self.predictor_for(case), **stitch_device)
        # inverted where the preprocessing ran (the device chain's device, or the CPU), unless stitched on the CPU
        data["pred"] = logits[0].float().to("cpu" if stitch_device else self.preprocess_device or "cpu")
        return data

    def finish(
        self,
        case: CaseInput,
        data: Mapping[Hashable, Any],
        label_convention: str = "brats2021",
        probabilities: bool = False,
        times: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        """The inversion and post-processing stage: logits to labels in the input's grid.

        Args:
            case: the case.
            data: the item from :meth:`predict`. Without :data:`PREPROCESSING_KEY` (an item that crossed a
                process boundary) the chain is built again from ``case``; its recorded operations must then
                carry no transform ids (see :func:`~brats_cggm.brats.inference.pipeline.detach_item`).
            label_convention: labels of the output.
            probabilities: also return the TC/WT/ET probabilities.
            times: if given, gets ``"invert"`` (sigmoid, inversion, threshold, labels) and ``"postprocess"``
                (the post-processing rules; 0 without them).

        Returns:
            ``"labels"``: ``(X, Y, Z)`` uint8 in the input's grid; ``"probabilities"`` (if asked):
            ``(X, Y, Z, 3)`` float32.
        """
        start = time.perf_counter()
        data = dict(data)
        preprocessing = data.pop(PREPROCESSING_KEY, None)
        if preprocessing is None:  # built again: inverting reads no file
            preprocessing = self.preprocessing(case)
        key = "probabilities" if probabilities else None
        data = postprocessing_transforms(preprocessing, label_convention, key, output_device="cpu")(data)
        labels = check_inverted(data["pred"], case.reference)[0].astype(np.uint8)
        out: dict[str, Any] = {"labels": labels}
        if probabilities:
            out["probabilities"] = np.moveaxis(np.asarray(data["probabilities"], dtype=np.float32), 0, -1)
        inverted = time.perf_counter()
        if self.postprocess is not None:
            spacing = tuple(float(z) for z in load_nifti(case.reference).header.get_zooms()[:3])
            out["labels"] = self.postprocess.apply(labels, label_convention, spacing)
        if times is not None:
            times["invert"] = inverted - start
            times["postprocess"] = time.perf_counter() - inverted
        return out

    def __call__(
        self,
        case: CaseInput,
        label_convention: str = "brats2021",
        probabilities: bool = False,
        images: Mapping[str, nib.Nifti1Image] | None = None,
    ) -> dict[str, Any]:
        """Segment one (checked) case: :meth:`prepare`, :meth:`predict` and :meth:`finish`, one after the other.

        Args:
            case: the case.
            label_convention: labels of the output.
            probabilities: also return the TC/WT/ET probabilities.
            images: the case's images as :meth:`check` returned them; None reads the files again.

        Returns:
            ``"labels"``: ``(X, Y, Z)`` uint8 in the input's grid; ``"probabilities"`` (if asked):
            ``(X, Y, Z, 3)`` float32; ``"times"``: seconds spent preprocessing, predicting (the network),
            inverting and postprocessing (``"postprocess"``: inversion and rules together, as before;
            ``"invert"`` and ``"rules"`` apart).
        """
        times = {}
        start = time.perf_counter()
        data = self.prepare(case, images)
        times["preprocess"] = time.perf_counter() - start
        start = time.perf_counter()
        data = self.predict(case, data)
        times["predict"] = time.perf_counter() - start
        finish_times: dict[str, float] = {}
        out = self.finish(case, data, label_convention, probabilities, finish_times)
        times["invert"] = finish_times["invert"]
        times["rules"] = finish_times["postprocess"]
        times["postprocess"] = finish_times["invert"] + finish_times["postprocess"]
        out["times"] = times
        return out
