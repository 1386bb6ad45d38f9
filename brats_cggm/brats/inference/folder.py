"""A folder of cases into output files: the stages of ``brats-cggm-infer`` for one case, and their options.

:class:`CaseStages` is what :func:`~brats_cggm.brats.inference.pipeline.run_pipeline` runs for each case: its
outputs checked, its files read and checked, preprocessing (:meth:`CaseStages.load`), the network
(:meth:`CaseStages.predict`), inversion, post-processing and writing (:meth:`CaseStages.finish`), a failure turned
into the case's line (:meth:`CaseStages.describe`). With ``OutputOptions.report``, :meth:`CaseStages.load` also takes
from the images what the case report needs and :meth:`CaseStages.finish` computes the report and draws its picture
before writing anything (:mod:`brats_cggm.brats.reporting`). ``brats-cggm-infer`` and the benchmark's inference
section both segment folders with it, so the benchmark measures what a user runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from brats_cggm.brats.data.nifti_checks import InputFileError, load_nifti, strip_nifti_extension
from brats_cggm.brats.inference.case_io import (
    CaseInput,
    output_path,
    record_path,
    save_case_record,
    save_like_reference,
    sequences_note,
)
from brats_cggm.brats.inference.pipeline import STAGES, Finished, detach_item, run_pipeline
from brats_cggm.brats.inference.segmenter import PREPROCESSING_KEY, BratsSegmenter
from brats_cggm.brats.reporting.overlay import overlay_path, save_overlay
from brats_cggm.brats.reporting.report_inputs import (
    CaseReport,
    ReportInputs,
    build_report,
    read_sequences,
    report_inputs,
)
from brats_cggm.core.files import refuse_existing

__all__ = [
    "CaseResult",
    "CaseStages",
    "OutputOptions",
    "case_outputs",
    "failure_line",
    "save_outputs",
    "segment_case",
]


@dataclass(frozen=True)
class OutputOptions:
    """Where and how a case's outputs are written (``brats-cggm-infer``'s output options).

    Attributes:
        output_dir: the folder of the outputs.
        name_template: a case's label-map file name, ``{case_id}`` replaced.
        labels: the label convention of the label maps (``brats2021``, ``brats2023``).
        save_probabilities: also write the TC/WT/ET probabilities beside each label map.
        overwrite: replace existing outputs.
        skip_existing: skip a case whose outputs are all there (and replace the remains of an interrupted one).
        missing_modality: what a missing modality file means (``error``, ``drop``, ``zero``), for the records.
        report: add the case report to each record and write the overlay picture ``<name>.png`` beside it (see
            :mod:`brats_cggm.brats.reporting`).
    """

    output_dir: Path
    name_template: str = "{case_id}.nii.gz"
    labels: str = "brats2021"
    save_probabilities: bool = False
    overwrite: bool = False
    skip_existing: bool = False
    missing_modality: str = "error"
    report: bool = False


def failure_line(case_id: str, message: str) -> str:
    """``"<case_id>: <problem>"`` on one line (the message's own case id prefix kept, not doubled)."""
    message = " ".join(message.split())
    return message if message.startswith(f"{case_id}: ") else f"{case_id}: {message}"


@dataclass
class CaseResult:
    """What became of one case: its output file, stage times
    (:data:`~brats_cggm.brats.inference.pipeline.STAGES`) and the sequences it was predicted
    from (see :func:`~brats_cggm.brats.inference.case_io.sequences_note`), the one-line reason it failed, or that it
    was skipped (``--skip-existing``, its outputs all there); ``warnings`` are printed before its line.

    ``seconds`` is the sum of its stage times: in a pipeline the stages of different cases overlap, so a case's
    work, not the wall-clock time between its start and its end."""

    case_id: str
    target: Path | None = None
    times: dict[str, float] | None = None
    seconds: float = 0.0
    failure: str | None = None
    skipped: bool = False
    sequences: str = ""
    warnings: list[str] = field(default_factory=list)


def case_outputs(case_id: str, options: OutputOptions) -> tuple[Path, Path | None]:
    """A case's label map and, with ``--save-probabilities``, its probabilities file (else None).

    Raises:
        ValueError: a case id or ``--name-template`` that cannot name a file in the output folder.
    """
    target = output_path(options.output_dir, case_id, options.name_template)
    if not options.save_probabilities:
        return target, None
    return target, target.with_name(strip_nifti_extension(target.name) + "_probabilities.nii.gz")


def _check_existing(target: Path, prob_target: Path | None, options: OutputOptions) -> bool:
    """Whether the case's outputs may be written: False to skip the case (``--skip-existing``, all there).

    The label map is written last, so it says the case is done: probabilities, a picture or a record without it
    are the remains of an interrupted case and, under ``--skip-existing``, are replaced.

    Raises:
        FileExistsError: an output exists that may not be replaced (the message says which flag would).
    """
    record = record_path(target)
    picture = overlay_path(record) if options.report else None
    if options.overwrite:
        return True
    if not options.skip_existing:
        refuse_existing(
            (t for t in (target, prob_target, record, picture) if t is not None),
            False,
            "to replace it, or --skip-existing to keep it",
        )
        return True
    if not target.exists():
        return True
    if prob_target is not None and not prob_target.exists():
        raise FileExistsError(
            f"{target}: exists without its probabilities {prob_target.name} (written by a run without "
            "--save-probabilities?); pass --overwrite to segment the case again"
        )
    if not record.exists():
        raise FileExistsError(
            f"{target}: exists without its record {record.name} of the sequences used (written by an older "
            "brats-cggm-infer?); pass --overwrite to segment the case again"
        )
    return False


def save_outputs(
    result: dict,
    record: dict,
    case: CaseInput,
    target: Path,
    prob_target: Path | None,
    options: OutputOptions,
    report: CaseReport | None = None,
) -> None:
    """Write a case's probabilities, overlay picture, record (with its report) and label map, each atomically, the
    label map last.

    The label map is the file that says the case is done (``--skip-existing``): what comes before it, left by an
    interrupted run, is replaced under ``--skip-existing``; everything else follows ``--overwrite``.
    """
    used, missing = record["modalities_used"], record["modalities_missing"]
    description = f"brats-cggm seq={sequences_note(used, missing, options.missing_modality)}"
    Path(options.output_dir).mkdir(parents=True, exist_ok=True)
    replace_remains = options.overwrite or options.skip_existing
    if prob_target is not None:
        save_like_reference(result["probabilities"], case.reference, prob_target, replace_remains, description)
    if report is not None:
        save_overlay(report.png, overlay_path(record_path(target)), replace_remains)
        record = {**record, **report.fields}
    save_case_record(record, record_path(target), replace_remains)
    save_like_reference(result["labels"], case.reference, target, options.overwrite, description)


@dataclass
class _LoadedCase:
    """A case between its stages: its outputs, record, preprocessed item (or, until it is preprocessed in this
    process, its images) and stage times so far."""

    case: CaseInput
    target: Path
    prob_target: Path | None
    record: dict[str, Any]
    data: dict[Any, Any]
    times: dict[str, float]
    warnings: list[str]
    images: Mapping[str, Any] | None = None
    report_inputs: ReportInputs | None = None


class CaseStages:
    """The stages of ``brats-cggm-infer`` for one case, as :func:`~brats_cggm.brats.inference.pipeline.run_pipeline`
    runs them: :meth:`load` (outputs checked, files read and checked, preprocessing), :meth:`predict` (the
    network), :meth:`finish` (inversion, post-processing, writing); :meth:`describe` turns a stage's exception into
    the case's failure line.

    Args:
        segmenter: the network and its run options (``missing_modality`` among them).
        options: the output options (``output_dir``, ``name_template``, ``labels``, ``save_probabilities``,
            ``overwrite``, ``skip_existing``, ``missing_modality``).
        detach: :meth:`load` runs in another process: its item leaves the preprocessing chain behind (see
            :func:`~brats_cggm.brats.inference.pipeline.detach_item`). When the segmenter preprocesses on a GPU,
            the workers only read and check, and :meth:`predict` preprocesses (CUDA stays in this process).
        model: with ``options.report``, the reports' ``model_details`` (see
            :func:`~brats_cggm.brats.reporting.report_inputs.model_description`).
    """

    def __init__(
        self,
        segmenter: BratsSegmenter,
        options: OutputOptions,
        detach: bool = False,
        model: Mapping[str, Any] | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.options = options
        self.detach = detach
        self.model = dict(model or {})
        device = segmenter.preprocess_device
        self.prepare_in_predict = detach and device is not None and torch.device(device).type != "cpu"

    def load(self, case: CaseInput) -> _LoadedCase | Finished[CaseResult]:
        """Check the case's outputs (skipped under ``--skip-existing``), read and check its files, preprocess."""
        target, prob_target = case_outputs(case.case_id, self.options)
        if not _check_existing(target, prob_target, self.options):
            return Finished(CaseResult(case.case_id, target, skipped=True))
        times: dict[str, float] = {}
        images = self.segmenter.check(case, times=times)
        record = self.segmenter.case_record(case, target)
        warnings = []
        if case.missing and self.options.missing_modality == "zero":
            names = "/".join(record["modalities_missing"])
            warnings.append(f"{case.case_id}: no {names} file: that branch gets zeros, expect lower quality")
        inputs = None
        if self.options.report:
            start = time.perf_counter()
            inputs = self._report_inputs(case, images)
            times["check"] = times.get("check", 0.0) + time.perf_counter() - start
        if self.prepare_in_predict:
            return _LoadedCase(case, target, prob_target, record, {}, times, warnings, images, inputs)
        start = time.perf_counter()
        data = self.segmenter.prepare(case, images)
        del images  # the decompressed files: the worker holds no more than the item it hands on
        if self.detach:
            data = detach_item(data, PREPROCESSING_KEY)
        times["preprocess"] = time.perf_counter() - start
        return _LoadedCase(case, target, prob_target, record, data, times, warnings, report_inputs=inputs)

    def _report_inputs(self, case: CaseInput, images: Mapping[str, Any]) -> ReportInputs:
        """What the report takes from the case's images while they are in memory (counted as ``check`` time)."""
        sequences = read_sequences(images, self.segmenter.settings.modalities, case.image, case.channel_order)
        preprocessing = self.segmenter.settings.preprocessing
        reference = images.get(case.reference)
        reference = load_nifti(case.reference) if reference is None else reference
        return report_inputs(reference, sequences, preprocessing.get("pixdim"), preprocessing.get("axcodes", "RAS"))

    def predict(self, loaded: _LoadedCase) -> _LoadedCase:
        """The sliding window, on the segmenter's device (preprocessing first when it runs on that device)."""
        if loaded.images is not None:
            start = time.perf_counter()
            loaded.data = self.segmenter.prepare(loaded.case, loaded.images)
            loaded.images = None
            loaded.times["preprocess"] = time.perf_counter() - start
        start = time.perf_counter()
        loaded.data = self.segmenter.predict(loaded.case, loaded.data)
        loaded.times["network"] = time.perf_counter() - start
        return loaded

    def finish(self, loaded: _LoadedCase) -> CaseResult:
        """Invert, post-process and write the case's outputs (each atomically, the label map last)."""
        case, options = loaded.case, self.options
        result = self.segmenter.finish(
            case, loaded.data, options.labels, probabilities=options.save_probabilities, times=loaded.times
        )
        loaded.data = {}  # the whole-volume logits: freed before writing
        start = time.perf_counter()
        report = None
        if loaded.report_inputs is not None:
            # computed and drawn before anything is written: a case whose report fails leaves no file
            report = build_report(
                result["labels"],
                loaded.report_inputs,
                options.labels,
                case.case_id,
                overlay_path(record_path(loaded.target)).name,
                loaded.record["modalities_missing"],
                options.missing_modality,
                self.model,
            )
            loaded.report_inputs = None
        save_outputs(result, loaded.record, case, loaded.target, loaded.prob_target, options, report)
        loaded.times["write"] = time.perf_counter() - start
        record = loaded.record
        sequences = sequences_note(record["modalities_used"], record["modalities_missing"], options.missing_modality)
        times = {k: loaded.times.get(k, 0.0) for k in STAGES}
        return CaseResult(
            case.case_id, loaded.target, times, sum(times.values()), sequences=sequences, warnings=loaded.warnings
        )

    def describe(self, case: CaseInput, exc: Exception) -> CaseResult:
        """The failure of ``case``: ``"<case_id>: <problem>"`` (the exception's type named unless it is a plain
        input, existing-file or value error)."""
        plain = (InputFileError, FileExistsError, ValueError)
        message = str(exc) if isinstance(exc, plain) else f"{type(exc).__name__}: {exc}"
        return CaseResult(case.case_id, failure=failure_line(case.case_id, message))


def segment_case(segmenter: BratsSegmenter, case: CaseInput, options: OutputOptions) -> CaseResult:
    """Check, segment and save one case; any failure is returned, not raised, so that the batch goes on.

    Args:
        segmenter: the network and its run options (``missing_modality`` among them).
        case: the case's files.
        options: the output options (see :class:`CaseStages`).

    Returns:
        The output file, times and sequences used; the output file and ``skipped`` (``--skip-existing``, every
        output there, nothing read); or the failure line ``"<case_id>: <problem>"`` (nothing written).
    """
    stages = CaseStages(segmenter, options)
    return next(run_pipeline([case], stages.load, stages.predict, stages.finish, stages.describe, workers=0))
