"""``brats-cggm-infer``: segment brain tumours in NIfTI scans with a trained network.

    brats-cggm-infer --input CASES_DIR --bundle runs/brats_cggm --output-dir predictions/

The python API (:class:`~brats_cggm.brats.inference.segmenter.BratsSegmenter`, the cases and output files of
:mod:`brats_cggm.brats.inference.case_io`) does the work; this module reads the command line, checks it, and
reports one line per case. A case that fails is reported and skipped; the others are still segmented.

A folder runs as a pipeline (:mod:`brats_cggm.brats.inference.pipeline`): ``--workers`` processes read, check and
preprocess the next cases while the network runs on the current one, and a background thread inverts and
writes the finished ones; ``--workers 0`` runs the stages one case after the other. The outputs are the same.

Each segmentation records the sequences it was predicted from: in a JSON file beside it (``<name>.json``) and in
its NIfTI header's ``descrip`` field. With ``--report`` that JSON file also holds the case's report (region volumes,
lesions, input grid, model, quality flags; :mod:`brats_cggm.brats.reporting`) and an overlay picture ``<name>.png``
is written beside it; at the end the folder's QC page ``index.html`` is rebuilt from every report it holds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from brats_cggm.brats.data.discovery import DEFAULT_MODALITIES, PATTERN_PRESETS, check_unique_case_ids
from brats_cggm.brats.data.labels import LABEL_CONVENTIONS
from brats_cggm.brats.data.nifti_checks import AFFINE_TOLERANCE, InputFileError, strip_nifti_extension
from brats_cggm.brats.inference.case_io import (
    MSD_CHANNELS,
    CaseInput,
    check_case_id,
    check_output_dir,
    find_cases,
    output_path,
)
from brats_cggm.brats.inference.device_preprocessing import PREPROCESS_CHOICES
from brats_cggm.brats.inference.folder import (
    CaseResult,
    CaseStages,
    OutputOptions,
    case_outputs,
    failure_line,
)
from brats_cggm.brats.inference.model_loading import InferenceSettings, load_model
from brats_cggm.brats.inference.pipeline import DEFAULT_WORKERS, STAGES, run_pipeline
from brats_cggm.brats.inference.postprocessing_rules import RULES_KEY
from brats_cggm.brats.inference.segmenter import (
    MISSING_MODALITY_MODES,
    STITCH_CHOICES,
    BratsSegmenter,
)
from brats_cggm.brats.reporting.overlay import require_pillow
from brats_cggm.brats.reporting.qc_page import QC_PAGE_NAME, write_qc_page
from brats_cggm.brats.reporting.report_inputs import model_description
from brats_cggm.cli.common import (
    CommandParser,
    non_negative_float,
    non_negative_int,
    overlap_fraction,
    positive_int,
    print_error,
    print_warning,
)
from brats_cggm.core.devices import resolve_device
from brats_cggm.core.files import refuse_existing

__all__ = ["build_parser", "main", "output_options"]

PROG = "brats-cggm-infer"


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


def build_parser() -> CommandParser:
    """The arguments of ``brats-cggm-infer``."""
    p = CommandParser(
        prog=PROG,
        description="Segment brain tumours (BraTS labels) in NIfTI scans with a brats_cggm bundle or TorchScript file.",
    )
    src = p.add_argument_group("input")
    src.add_argument(
        "--input",
        help="case folder (NIfTI files, or DICOM series folders named for their modality), folder of case folders, "
        "MSD folder or MSD 4-D file",
    )
    for m in DEFAULT_MODALITIES:
        src.add_argument(
            f"--{m}",
            metavar="PATH",
            help=f"{m} NIfTI file or DICOM series folder of a single case (instead of --input)",
        )
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
    src.add_argument(
        "--missing-modality",
        choices=MISSING_MODALITY_MODES,
        default="error",
        help="a case that lacks a modality file: error (default) refuses it, naming the file; drop segments it from "
        "the sequences it has, with the absence the network was trained with (availability mask; not with "
        "--torchscript); zero is the old behaviour: the network sees a flat zero image it was never trained on",
    )
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
    out.add_argument("--output-dir", required=True, help="output folder")
    out.add_argument("--name-template", default="{case_id}.nii.gz", help="output file name (default {case_id}.nii.gz)")
    out.add_argument("--labels", choices=sorted(LABEL_CONVENTIONS), default="brats2021", help="default brats2021")
    out.add_argument(
        "--save-probabilities", action="store_true", help="also write <name>_probabilities.nii.gz (X, Y, Z, TC/WT/ET)"
    )
    out.add_argument(
        "--postprocess",
        action="store_true",
        help="apply the post-processing rules of the model's config (its postprocessing_rules entry, written by "
        "brats-cggm-fit-postprocessing): small components removed, small enhancing tumour relabelled",
    )
    out.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="add the case report (region volumes and lesions, input grid, model, quality flags) to each <name>.json "
        "and write an overlay picture <name>.png beside it (needs Pillow; default --no-report)",
    )
    out.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    out.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip the cases whose outputs all exist (continue an interrupted run); not with --overwrite",
    )
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
        "--preprocess-on",
        choices=PREPROCESS_CHOICES,
        default="auto",
        help="where orientation, resampling, crop, normalisation and their inversion run after the read: the CPU, "
        "or the compute device (auto: the device when it is a GPU, unless --stitch cpu)",
    )
    run.add_argument(
        "--workers",
        type=non_negative_int,
        default=DEFAULT_WORKERS,
        help=f"processes that read, check and preprocess the next cases while the network runs (default "
        f"{DEFAULT_WORKERS}); 0: every step in this process, one case after the other",
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
        # a DICOM series folder named for its modality alone (case/flair/) names no case: its parent does
        bare = {first_modality.lower()} | {
            p[first_modality].lstrip("_-. ").lower() for p in PATTERN_PRESETS.values() if first_modality in p
        }
        if Path(first).is_dir() and case_id.lower() in bare:
            case_id = Path(first).resolve().parent.name
        for preset in PATTERN_PRESETS.values():
            case_id = case_id.removesuffix(preset.get(first_modality, "\0"))
    return CaseInput(case_id, image)


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> torch.device:
    """Refuse contradictory or malformed arguments (exit 2 through ``parser.error``).

    Returns:
        The compute device.
    """
    explicit = any(getattr(args, m) for m in DEFAULT_MODALITIES)
    if bool(args.input) == explicit:
        parser.error("give either --input or explicit modality files (--flair --t1 --t1ce --t2)")
    if args.torchscript is None and args.bundle is None:
        parser.error("give a model: --bundle DIR [--checkpoint FILE], or --torchscript FILE")
    if args.torchscript is not None and args.checkpoint is not None:
        parser.error("--checkpoint goes with --bundle, not with --torchscript")
    if args.skip_existing and args.overwrite:
        parser.error("--skip-existing keeps existing outputs, --overwrite replaces them: give one of them")
    try:
        output_path(args.output_dir, "case", args.name_template)
        return resolve_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))


def load_segmenter(args: argparse.Namespace, device: torch.device) -> BratsSegmenter:
    """The network of ``--bundle``/``--torchscript`` wrapped with the run options; its warnings printed one a line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        network, settings = load_model(args.bundle, args.checkpoint, args.torchscript, device)
    for warning in caught:
        print_warning(str(warning.message))
    rules = None
    if args.postprocess:
        rules = settings.postprocessing_rules
        if rules is None:
            raise ValueError(
                f"--postprocess: {settings.source} has no {RULES_KEY} entry; choose them with "
                "brats-cggm-fit-postprocessing RUN_DIR, or leave out --postprocess"
            )
    return BratsSegmenter(
        network,
        settings,
        device=device,
        roi_size=args.roi,
        overlap=args.overlap,
        sw_batch_size=args.sw_batch_size,
        tta=args.tta,
        amp=not args.no_amp,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
        affine_tolerance=args.affine_tolerance,
        stitch=args.stitch,
        postprocess=rules,
        missing_modality=args.missing_modality,
        preprocess_on=args.preprocess_on,
    )


def collect_cases(args: argparse.Namespace, settings: InferenceSettings) -> tuple[list[CaseInput], list[str]]:
    """The cases to segment, and one failure line per case found unusable while looking for them.

    Discovery's warnings (cases read from outside an MSD folder) are printed one a line.

    Raises:
        InputFileError: the input cannot be read as cases.
        DuplicateCaseError: two cases have the same id, or ``--name-template`` gives two cases one output file
            (both named), before anything is segmented.
    """
    if any(getattr(args, m) for m in DEFAULT_MODALITIES):
        return [_explicit_case(args, settings.modalities)], []
    patterns = {**PATTERN_PRESETS[args.patterns], **dict(args.pattern)}
    msd_channels = [c.strip() for c in args.msd_channels.split(",")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        cases, problems = find_cases(args.input, settings.modalities, patterns, msd_channels)
    for warning in caught:
        print_warning(str(warning.message))
    outputs, options = [], output_options(args)
    for case in cases:
        try:
            files = [case.image] if isinstance(case.image, str) else [p for p in case.image if p is not None]
            outputs.append((case_outputs(case.case_id, options)[0].name, files[0] if files else case.case_id))
        except ValueError:  # a bad case id: that case fails alone, when it is segmented
            continue
    # a template without {case_id} would give every case one file: the second would replace the first
    check_unique_case_ids(outputs, f"--name-template {args.name_template!r}", what="output file")
    return cases, [failure_line(name, message) for name, message in problems]


def report_model(segmenter: BratsSegmenter, args: argparse.Namespace, n_cases: int) -> None:
    """The one line saying which model runs how, on how many cases."""
    rules = segmenter.postprocess
    postprocess = f"; post-processing {json.dumps(rules.to_config())}" if rules is not None else ""
    print(
        f"model: {segmenter.settings.source}; modalities {','.join(segmenter.settings.modalities)}; "
        f"window {segmenter.roi_size}, overlap {segmenter.inferer.overlap}{', TTA' if args.tta else ''}; "
        f"device {segmenter.device}{' (AMP)' if segmenter.amp else ''}{postprocess}; {n_cases} case(s)",
        flush=True,
    )


def output_options(args: argparse.Namespace) -> OutputOptions:
    """The output options of the command line."""
    return OutputOptions(
        output_dir=Path(args.output_dir),
        name_template=args.name_template,
        labels=args.labels,
        save_probabilities=args.save_probabilities,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        missing_modality=args.missing_modality,
        report=args.report,
    )


def model_record(args: argparse.Namespace, segmenter: BratsSegmenter) -> dict:
    """The reports' ``model_details``: the bundle, the weights file and its SHA-256 (read once), the post-processing."""
    if args.torchscript is not None:
        weights = Path(args.torchscript)
    else:
        weights = Path(args.checkpoint) if args.checkpoint else Path(args.bundle) / "models" / "model.pt"
    rules = segmenter.postprocess
    return model_description(
        weights, args.bundle, segmenter.settings.source, None if rules is None else rules.to_config()
    )


def report_case(index: int, n_cases: int, result: CaseResult) -> None:
    """The line of a segmented case (its times and output file) or a skipped one, or its failure line on stderr."""
    for warning in result.warnings:
        print_warning(warning)
    if result.failure is not None:
        print_error(result.failure)
        return
    if result.skipped:
        print(f"[{index}/{n_cases}] {result.case_id}: skipped, its outputs exist -> {result.target}", flush=True)
        return
    t = result.times
    if t is None:  # never: a segmented case has its times
        raise ValueError(f"{result.case_id}: segmented without step times")
    stages = ", ".join(f"{k} {t[k]:.2f}" for k in STAGES if k in t)
    print(
        f"[{index}/{n_cases}] {result.case_id}: {result.seconds:.2f} s ({stages}); "
        f"sequences {result.sequences} -> {result.target}",
        flush=True,
    )


def report_summary(done: int, failures: Sequence[str], elapsed: float, skipped: int | None = None) -> int:
    """The summary line and the list of failures; the exit status.

    Args:
        done: cases segmented.
        failures: one line per failed case.
        elapsed: seconds.
        skipped: cases skipped for their existing outputs; None (no ``--skip-existing``) leaves them out.
    """
    print(
        f"summary: {done} segmented, "
        + ("" if skipped is None else f"{skipped} skipped (outputs exist), ")
        + f"{len(failures)} failed, {elapsed:.1f} s"
        + (f" ({elapsed / done:.2f} s per segmented case)" if done else ""),
        flush=True,
    )
    if failures:
        print("failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def write_page(args: argparse.Namespace) -> Path | None:
    """Write the output folder's QC page over every case report it holds (this run's and earlier ones').

    Returns:
        The page, or None (with an ``error:`` line) when it could not be written.
    """
    try:
        page = write_qc_page(args.output_dir, overwrite=args.overwrite or args.skip_existing)
    except OSError as exc:
        print_error(f"QC page: {exc}")
        return None
    print(f"QC page: {page}")
    return page


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point ``brats-cggm-infer``.

    Args:
        argv: arguments (without the program name); ``sys.argv[1:]`` when None.

    Returns:
        0 when every case was segmented (or, with ``--skip-existing``, skipped), 1 when a case or the model failed,
        2 for bad arguments.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    device = check_arguments(parser, args)
    try:
        # before any work: an unwritable output would otherwise be found after segmenting every case
        check_output_dir(args.output_dir)
    except OSError as exc:
        print_error(str(exc))
        return 1
    try:
        if args.report:
            require_pillow()  # before any work: the pictures would otherwise fail every case
            # the folder's page is rebuilt at the end; refused now, not after segmenting every case
            refuse_existing([Path(args.output_dir) / QC_PAGE_NAME], args.overwrite or args.skip_existing)
        segmenter = load_segmenter(args, device)
        cases, failures = collect_cases(args, segmenter.settings)
        model = model_record(args, segmenter) if args.report else None
    except (ValueError, OSError, InputFileError, ImportError) as exc:
        print_error(str(exc))
        return 1
    report_model(segmenter, args, len(cases))
    # One line per failed case, "<case_id>: <file>: <problem>", printed at once and listed at the end.
    for line in failures:
        print_error(line)
    total_start = time.perf_counter()
    done = skipped = 0
    # a worker beyond the cases that come after the first would have nothing to read ahead
    workers = min(args.workers, max(len(cases) - 1, 0))
    stages = CaseStages(segmenter, output_options(args), detach=workers > 0, model=model)
    results = run_pipeline(cases, stages.load, stages.predict, stages.finish, stages.describe, workers=workers)
    # in case order: the pipeline hands the results back in the order of the cases
    for index, result in enumerate(results, start=1):
        report_case(index, len(cases), result)
        if result.failure is not None:
            failures.append(result.failure)
        elif result.skipped:
            skipped += 1
        else:
            done += 1
    elapsed = time.perf_counter() - total_start
    if args.report and done + skipped > 0 and write_page(args) is None:
        return 1
    return report_summary(done, failures, elapsed, skipped if args.skip_existing else None)


if __name__ == "__main__":
    sys.exit(main())
