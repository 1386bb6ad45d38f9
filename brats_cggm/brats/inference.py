"""Whole-volume inference on NIfTI scans: the python API and the ``brats-cggm-infer`` command.

The network and its settings come from :mod:`brats_cggm.brats.inference_model`, the cases and the output
files from :mod:`brats_cggm.brats.inference_io`. The preprocessing chain is
:func:`brats_cggm.brats.transforms.inference_transforms`, the one training validates with, with the
options of the training config; predictions go back to the input's voxel grid with
``monai.transforms.Invertd``. Segmentations are written with the input's own header (shape, qform, sform,
units), as ``uint8`` labels of a BraTS label convention.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import time
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.inferers import SlidingWindowInferer
from monai.transforms import Activationsd, AsDiscreted, Compose, CopyItemsd, Invertd, MapTransform

from brats_cggm.brats.cli_types import non_negative_float, overlap_fraction, positive_int
from brats_cggm.brats.data import DEFAULT_MODALITIES, PATTERN_PRESETS
from brats_cggm.brats.inference_io import (
    MSD_CHANNELS,
    CaseInput,
    SaveSegmentationd,
    check_case_id,
    check_inverted,
    check_output_dir,
    find_cases,
    inference_items,
    output_path,
    save_like_reference,
)
from brats_cggm.brats.inference_model import InferenceSettings, load_model, save_run_config
from brats_cggm.brats.labels import LABEL_CONVENTIONS, REGIONS, ConvertToLabelsd
from brats_cggm.brats.nifti_checks import (
    AFFINE_TOLERANCE,
    InputFileError,
    check_same_grid,
    check_volume_values,
    load_checked_volume,
    strip_nifti_extension,
)
from brats_cggm.brats.transforms import inference_transforms
from brats_cggm.core.devices import resolve_device

# save_run_config, SaveSegmentationd, inference_items: re-exported for the bundle configs.
__all__ = [
    "BratsSegmenter",
    "FlipTTA",
    "InsertZeroChannelsd",
    "SaveSegmentationd",
    "inference_items",
    "main",
    "postprocessing_transforms",
    "save_run_config",
    "stitch_on_cpu",
]

STITCH_CHOICES = ("auto", "device", "cpu")

# ------------------------------------------------------------------------------------------ transforms


class InsertZeroChannelsd(MapTransform):
    """Insert all-zero channels into ``keys`` so that missing modalities reach their branch as zeros.

    Args:
        keys: keys of the channel-first images.
        positions: indices, in the output, of the zero channels (ascending).
        allow_missing_keys: do not raise if a key is missing.
    """

    def __init__(self, keys: KeysCollection, positions: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.positions = sorted(int(p) for p in positions)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            channels = list(torch.unbind(d[key], dim=0))
            for p in self.positions:
                channels.insert(p, torch.zeros_like(channels[0]))
            d[key] = torch.stack(channels, dim=0)
        return d


def postprocessing_transforms(
    preprocessing: Compose, label_convention: str = "brats2021", probabilities_key: str | None = None
) -> Compose:
    """Logits to labels in the input's voxel grid: sigmoid, inversion of ``preprocessing``, threshold, labels.

    Probabilities, not labels, are inverted, so that resampling (when the preprocessing resamples) is
    linear and the threshold is applied in the original grid.

    Args:
        preprocessing: the transform that produced ``"image"`` (its operations are undone on ``"pred"``).
        label_convention: the labels written (see :data:`~brats_cggm.brats.labels.LABEL_CONVENTIONS`).
        probabilities_key: also keep the inverted TC/WT/ET probabilities under this key.

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
        total = None
        for dims in self.flips:
            logits = self.network(torch.flip(x, dims) if dims else x)
            prob = torch.sigmoid(logits.float())
            prob = torch.flip(prob, dims) if dims else prob
            total = prob if total is None else total + prob
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

    Raises:
        ValueError: if no sliding-window size is known, or ``stitch`` is unknown.
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
    ) -> None:
        if stitch not in STITCH_CHOICES:
            raise ValueError(f"stitch must be one of {STITCH_CHOICES}, got {stitch!r}")
        self.stitch = stitch
        self.device = torch.device(device)
        self.settings = settings
        self.network = network.to(self.device).eval()
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

    def check(self, case: CaseInput, allow_missing: bool = False) -> None:
        """Read every file of ``case`` and check it (see :mod:`brats_cggm.brats.nifti_checks`).

        Raises:
            InputFileError: naming the file and the problem.
        """
        if isinstance(case.image, str):
            order = case.channel_order or list(range(len(self.settings.modalities)))
            _, data = load_checked_volume(case.image, ndim=4, min_channels=max(order) + 1, check_values=False)
            for name, channel in zip(self.settings.modalities, order, strict=True):
                check_volume_values(case.image, data[..., channel], f"channel {channel} ({name})")
            return
        if len(case.image) != len(self.settings.modalities):
            raise ValueError(f"{case.case_id}: {len(case.image)} files for modalities {self.settings.modalities}")
        if len(case.missing) == len(case.image):
            raise InputFileError(case.case_id, "no modality file at all")
        # The files given first: a missing modality is reported only for an otherwise usable case.
        loaded = [(p, load_checked_volume(p, ndim=3)[0]) for p in case.image if p is not None]
        check_same_grid(loaded, tolerance=self.affine_tolerance)
        if case.missing and not allow_missing:
            names = [self.settings.modalities[i] for i in case.missing]
            raise InputFileError(case.case_id, f"no {'/'.join(names)} file (use --missing-modality zero to run anyway)")

    def preprocessing(self, case: CaseInput) -> Compose:
        """The training preprocessing for ``case`` (with zero channels for missing modalities)."""
        transform = inference_transforms(channel_order=case.channel_order, **self.settings.preprocessing)
        if case.missing:
            # Right after loading: every later step then sees the full channel set.
            steps = list(transform.transforms)
            steps.insert(1, InsertZeroChannelsd(keys="image", positions=case.missing))
            transform = Compose(steps)
        return transform

    def __call__(
        self, case: CaseInput, label_convention: str = "brats2021", probabilities: bool = False
    ) -> dict[str, Any]:
        """Segment one (checked) case.

        Args:
            case: the case.
            label_convention: labels of the output.
            probabilities: also return the TC/WT/ET probabilities.

        Returns:
            ``"labels"``: ``(X, Y, Z)`` uint8 in the input's grid; ``"probabilities"`` (if asked):
            ``(X, Y, Z, 3)`` float32; ``"times"``: seconds spent preprocessing, predicting, postprocessing.
        """
        times = {}
        start = time.perf_counter()
        preprocessing = self.preprocessing(case)
        image = case.image if isinstance(case.image, str) else [p for p in case.image if p is not None]
        data = preprocessing({"image": image})
        times["preprocess"] = time.perf_counter() - start

        start = time.perf_counter()
        batch = data["image"].unsqueeze(0)
        channels = batch.shape[1] + len(REGIONS)
        if stitch_on_cpu(self.stitch, self.device, batch[0, 0].numel(), channels):
            # the windows go to the device one batch at a time; the volume and its output stay in CPU memory
            stitch_device = {"device": torch.device("cpu")}
        else:
            batch, stitch_device = batch.to(self.device), {}
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            logits = self.inferer(batch, self.predictor, **stitch_device)
        data["pred"] = logits[0].float().cpu()
        times["predict"] = time.perf_counter() - start

        start = time.perf_counter()
        key = "probabilities" if probabilities else None
        data = postprocessing_transforms(preprocessing, label_convention, key)(data)
        out: dict[str, Any] = {"labels": check_inverted(data["pred"], case.reference)[0].astype(np.uint8)}
        if probabilities:
            out["probabilities"] = np.moveaxis(np.asarray(data["probabilities"], dtype=np.float32), 0, -1)
        times["postprocess"] = time.perf_counter() - start
        out["times"] = times
        return out


# ------------------------------------------------------------------------------------------------ CLI


def _parse_pattern(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected MODALITY=SUFFIX (e.g. t1ce=-t1c), got {text!r}")
    modality, suffix = text.split("=", 1)
    return modality.strip(), suffix


def _case_id_arg(text: str) -> str:
    try:
        return check_case_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser_cli() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="brats-cggm-infer",
        description="Segment brain tumours (BraTS labels) in NIfTI scans with a brats_cggm bundle or TorchScript file.",
    )
    src = p.add_argument_group("input")
    src.add_argument("--input", help="case folder, folder of case folders, MSD folder or MSD 4-D file")
    for m in DEFAULT_MODALITIES:
        src.add_argument(f"--{m}", metavar="FILE", help=f"{m} file of a single case (instead of --input)")
    src.add_argument(
        "--case-id", type=_case_id_arg, help="case identifier with explicit files (default: from the first file name)"
    )
    src.add_argument(
        "--patterns",
        default="brats2021",
        choices=sorted(PATTERN_PRESETS),
        help="file name suffixes (default brats2021)",
    )
    src.add_argument(
        "--pattern",
        action="append",
        type=_parse_pattern,
        default=[],
        metavar="MOD=SUFFIX",
        help="override one modality's file suffix, e.g. t1ce=-t1c (repeatable)",
    )
    src.add_argument(
        "--msd-channels",
        default=",".join(MSD_CHANNELS),
        help=f"modality of each channel of 4-D files (default {','.join(MSD_CHANNELS)}, the MSD Task01 order)",
    )
    src.add_argument("--missing-modality", choices=("error", "zero"), default="error", help="default: error")
    src.add_argument(
        "--affine-tolerance",
        type=non_negative_float,
        default=AFFINE_TOLERANCE,
        help="largest affine difference between modalities",
    )
    model = p.add_argument_group("model")
    model.add_argument("--bundle", help="bundle folder (configs/ + models/model.pt) or training output_dir")
    model.add_argument(
        "--checkpoint", help="weights instead of the bundle's models/model.pt (model.pt or checkpoint.pt)"
    )
    model.add_argument("--torchscript", help="TorchScript model (monai.bundle ckpt_export)")
    out = p.add_argument_group("output")
    out.add_argument("--output", required=True, help="output folder")
    out.add_argument("--name-template", default="{case_id}.nii.gz", help="output file name (default {case_id}.nii.gz)")
    out.add_argument("--labels", choices=sorted(LABEL_CONVENTIONS), default="brats2021", help="default brats2021")
    out.add_argument(
        "--save-probabilities", action="store_true", help="also write <name>_probabilities.nii.gz (X, Y, Z, TC/WT/ET)"
    )
    out.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    run = p.add_argument_group("run")
    run.add_argument(
        "--roi",
        type=positive_int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="sliding window (default: training patch)",
    )
    run.add_argument(
        "--overlap", type=overlap_fraction, help="sliding-window overlap in [0, 1) (default: from the config)"
    )
    run.add_argument("--sw-batch-size", type=positive_int, help="windows per forward pass (default: from the config)")
    run.add_argument("--tta", action="store_true", help="test-time augmentation: average over 8 flips")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    run.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    run.add_argument(
        "--stitch",
        choices=STITCH_CHOICES,
        default="auto",
        help="where the whole-volume output is assembled: on the compute device, or in CPU memory with only the "
        "windows on the GPU (auto: CPU when it would take more than half the free GPU memory)",
    )
    run.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: on a terminal)"
    )
    return p


def _explicit_case(args: argparse.Namespace, modalities: Sequence[str]) -> CaseInput:
    files = {m: getattr(args, m, None) for m in DEFAULT_MODALITIES}
    unknown = [m for m in modalities if m not in files]
    if unknown:
        raise ValueError(f"the network needs modalities {unknown}, which have no command line flag; use --input")
    image = [files[m] for m in modalities]
    first = next(p for p in image if p is not None)
    case_id = args.case_id
    if not case_id:
        case_id = strip_nifti_extension(Path(first).name)
        first_modality = modalities[image.index(first)]
        for preset in PATTERN_PRESETS.values():
            case_id = case_id.removesuffix(preset.get(first_modality, "\0"))
    return CaseInput(case_id, image)


def _failure_line(case_id: str, message: str) -> str:
    message = " ".join(message.split())
    return message if message.startswith(f"{case_id}: ") else f"{case_id}: {message}"


def _err(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point ``brats-cggm-infer``.

    Args:
        argv: arguments (without the program name); ``sys.argv[1:]`` when None.

    Returns:
        0 when every case was segmented, 1 when a case or the model failed, 2 for bad arguments.
    """
    parser = _parser_cli()
    args = parser.parse_args(argv)
    explicit = any(getattr(args, m) for m in DEFAULT_MODALITIES)
    if bool(args.input) == explicit:
        parser.error("give either --input or explicit modality files (--flair --t1 --t1ce --t2)")
    if args.torchscript is None and args.bundle is None:
        parser.error("give a model: --bundle DIR [--checkpoint FILE], or --torchscript FILE")
    if args.torchscript is not None and args.checkpoint is not None:
        parser.error("--checkpoint goes with --bundle, not with --torchscript")
    try:
        output_path(args.output, "case", args.name_template)
        device = resolve_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    patterns = {**PATTERN_PRESETS[args.patterns], **dict(args.pattern)}
    msd_channels = [c.strip() for c in args.msd_channels.split(",")]

    try:
        # before any work: an unwritable output would otherwise be found after segmenting every case
        check_output_dir(args.output)
    except OSError as exc:
        _err(str(exc))
        return 1

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            network, settings = load_model(args.bundle, args.checkpoint, args.torchscript, device)
        for warning in caught:
            print(f"warning: {' '.join(str(warning.message).split())}", file=sys.stderr, flush=True)
        progress = sys.stderr.isatty() if args.progress is None else args.progress
        segmenter = BratsSegmenter(
            network,
            settings,
            device=device,
            roi_size=args.roi,
            overlap=args.overlap,
            sw_batch_size=args.sw_batch_size,
            tta=args.tta,
            amp=not args.no_amp,
            progress=progress,
            affine_tolerance=args.affine_tolerance,
            stitch=args.stitch,
        )
        if explicit:
            cases, problems = [_explicit_case(args, settings.modalities)], []
        else:
            cases, problems = find_cases(args.input, settings.modalities, patterns, msd_channels)
    except (ValueError, FileNotFoundError, InputFileError) as exc:
        _err(str(exc))
        return 1
    print(
        f"model: {settings.source}; modalities {','.join(settings.modalities)}; window {segmenter.roi_size}, "
        f"overlap {segmenter.inferer.overlap}{', TTA' if args.tta else ''}; device {device}"
        f"{' (AMP)' if segmenter.amp else ''}; {len(cases)} case(s)",
        flush=True,
    )
    # One line per failed case, "<case_id>: <file>: <problem>", printed at once and listed at the end.
    failures = [_failure_line(name, message) for name, message in problems]
    for line in failures:
        _err(line)
    out_dir = Path(args.output)
    total_start = time.perf_counter()
    done = 0
    for index, case in enumerate(cases, start=1):
        start = time.perf_counter()
        try:
            target = output_path(out_dir, case.case_id, args.name_template)
            prob_target = target.with_name(strip_nifti_extension(target.name) + "_probabilities.nii.gz")
            for t in (target, prob_target) if args.save_probabilities else (target,):
                if t.exists() and not args.overwrite:
                    raise FileExistsError(f"{t}: exists; pass --overwrite to replace it")
            segmenter.check(case, allow_missing=args.missing_modality == "zero")
            if case.missing:
                names = "/".join(settings.modalities[i] for i in case.missing)
                print(
                    f"warning: {case.case_id}: no {names} file: that branch gets zeros, expect lower quality",
                    file=sys.stderr,
                    flush=True,
                )
            result = segmenter(case, args.labels, probabilities=args.save_probabilities)
            out_dir.mkdir(parents=True, exist_ok=True)
            # Probabilities first: the segmentation, the file that says the case is done, appears last.
            if args.save_probabilities:
                save_like_reference(result["probabilities"], case.reference, prob_target, args.overwrite)
            save_like_reference(result["labels"], case.reference, target, args.overwrite)
        except Exception as exc:  # one case's failure must not stop the batch
            plain = (InputFileError, FileExistsError, ValueError)
            message = str(exc) if isinstance(exc, plain) else f"{type(exc).__name__}: {exc}"
            failures.append(_failure_line(case.case_id, message))
            _err(failures[-1])
            continue
        done += 1
        t = result["times"]
        print(
            f"[{index}/{len(cases)}] {case.case_id}: {time.perf_counter() - start:.2f} s "
            f"(preprocess {t['preprocess']:.2f}, predict {t['predict']:.2f}, postprocess {t['postprocess']:.2f}) "
            f"-> {target}",
            flush=True,
        )
    elapsed = time.perf_counter() - total_start
    print(
        f"summary: {done} segmented, {len(failures)} failed, {elapsed:.1f} s"
        + (f" ({elapsed / done:.2f} s per segmented case)" if done else ""),
        flush=True,
    )
    if failures:
        print("failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
