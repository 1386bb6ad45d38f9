"""Inference inputs and outputs: finding the cases of an input path, writing segmentations with the input's header.

Files are only located here; they are read and checked by :mod:`brats_cggm.brats.data.nifti_checks`.

A modality may also be a DICOM series folder (read by :mod:`brats_cggm.brats.data.dicom`). In a case folder,
the sub-folder of a modality is found by name (see :func:`series_folder_matches`): it ends in the modality's
file name suffix (``<case>_flair/``), or it is the modality's name or its suffix without the separator
(``flair/``, ``t2f/``; either case). A modality's NIfTI file takes no folder beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelReader
from monai.data.utils import correct_nifti_header_if_necessary
from monai.transforms import MapTransform, SaveImaged
from monai.utils import ensure_tuple

from brats_cggm.brats.data.discovery import DEFAULT_MODALITIES, PATTERN_PRESETS, check_unique_case_ids, discover_msd
from brats_cggm.brats.data.nifti_checks import InputFileError, is_nifti_name, load_nifti, strip_nifti_extension
from brats_cggm.brats.reporting.overlay import overlay_path, save_overlay
from brats_cggm.brats.reporting.report_inputs import CaseReport, build_report, inputs_from_files, model_description
from brats_cggm.core.files import atomic_path, existing_file_error, refuse_existing, save_new_file

__all__ = [
    "DESCRIP_BYTES",
    "MISSING_MODALITY_MODES",
    "MSD_CHANNELS",
    "CaseInput",
    "LoadedNiftiReader",
    "SaveSegmentationd",
    "case_record",
    "check_case_id",
    "check_inverted",
    "check_output_dir",
    "find_cases",
    "inference_items",
    "missing_file_text",
    "missing_files_message",
    "nifti_description",
    "output_path",
    "record_path",
    "save_case_record",
    "save_like_reference",
    "sequences_note",
    "series_folder_matches",
]

#: Channel order of MSD Task01 4-D files (FLAIR, T1w, T1gd, T2w) in this package's modality names.
MSD_CHANNELS: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")

#: Size of a NIfTI-1 header's ``descrip`` field (``char[80]``).
DESCRIP_BYTES = 80

#: What to do with a case that lacks a modality file: refuse it; predict from the modalities present through
#: the network's availability mask (the absence it was trained with); or give the network zeros in its place.
MISSING_MODALITY_MODES = ("error", "drop", "zero")


def check_case_id(case_id: str) -> str:
    """Refuse a case identifier that cannot name a file inside the output folder.

    Args:
        case_id: the identifier (from ``--case-id``, a file or a folder name).

    Returns:
        ``case_id``.

    Raises:
        ValueError: if it is empty, holds a path separator or a control character, or starts with a dot
            (``..`` would leave the folder; hidden names are how temporary outputs are written).
    """
    if not case_id:
        raise ValueError("bad case id '': empty")
    separators = {"/", "\\", os.sep, *(os.altsep or "")}
    if any(c in separators for c in case_id) or any(ord(c) < 32 for c in case_id):
        raise ValueError(f"bad case id {case_id!r}: path separators and control characters are not allowed")
    if case_id.startswith("."):
        raise ValueError(f"bad case id {case_id!r}: must not start with '.'")
    return case_id


def check_output_dir(output_dir: str | os.PathLike, flag: str = "--output-dir") -> Path:
    """Check, before any work, that ``output_dir`` is or can become a writable folder; creates nothing.

    Args:
        output_dir: the folder (it need not exist yet).
        flag: how the user gave it, for the message.

    Returns:
        The path.

    Raises:
        NotADirectoryError: if it, or a folder it would be created in, is a file.
        PermissionError: if it (or, when it does not exist, its nearest existing parent) is not writable.
    """
    path = Path(output_dir)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise NotADirectoryError(f"{flag} {path}: {where}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" (it would be created in {existing})"
        raise PermissionError(f"{flag} {path}: not writable{where}")
    return path


def output_path(output_dir: str | os.PathLike, case_id: str, name_template: str = "{case_id}.nii.gz") -> Path:
    """Where a case's segmentation goes.

    Args:
        output_dir: the output folder.
        case_id: the case identifier.
        name_template: file name with ``{case_id}``; must end in ``.nii.gz`` or ``.nii``.

    Returns:
        The path.

    Raises:
        ValueError: for a bad case identifier (see :func:`check_case_id`), or a template that is not a NIfTI
            file name in ``output_dir``.
    """
    check_case_id(case_id)
    try:
        name = name_template.format(case_id=case_id)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"bad --name-template {name_template!r}: only {{case_id}} can be used ({exc})") from exc
    if not is_nifti_name(name) or "/" in name or os.sep in name or name.startswith("."):
        raise ValueError(f"bad --name-template {name_template!r}: gives {name!r}, expected a .nii.gz or .nii file name")
    return Path(output_dir) / name


def save_like_reference(
    array: np.ndarray,
    reference: str | os.PathLike,
    path: str | os.PathLike,
    overwrite: bool = False,
    description: str = "brats_cggm",
) -> Path:
    """Write ``array`` with the header of ``reference`` (qform, sform and their codes, units), atomically.

    The file is written to a hidden temporary name in the target folder and renamed; without
    ``overwrite`` the rename is a hard link, which fails rather than replace a file that appeared meanwhile.

    Args:
        array: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` data whose first three axes match the reference.
        reference: the input NIfTI file whose space the data is in.
        path: the output file (``.nii.gz`` or ``.nii``).
        overwrite: replace an existing file.
        description: the header's ``descrip`` text (cut to its 80 bytes by :func:`nifti_description`).

    Returns:
        ``path``.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
        ValueError: if the shape does not match the reference.
    """
    path = Path(path)
    ref = load_nifti(reference)
    if tuple(array.shape[:3]) != tuple(ref.shape[:3]):
        raise ValueError(f"{path}: output shape {array.shape[:3]} differs from {ref.shape[:3]} of {reference}")
    refuse_existing([path], overwrite)
    header = ref.header.copy()
    klass = type(ref)
    # affine=None keeps the header's qform and sform (and codes) as they are instead of rewriting both.
    image = klass(array, None, header=header)
    image.set_data_dtype(array.dtype)
    image.header.set_slope_inter(1.0, 0.0)
    image.header["cal_min"] = 0
    image.header["cal_max"] = 0
    image.header["descrip"] = nifti_description(description)
    image.header["intent_code"] = 0
    ext = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    try:
        with atomic_path(path, suffix=ext, overwrite=overwrite) as tmp:
            nib.save(image, str(tmp))
    except FileExistsError:
        raise existing_file_error(path) from None
    return path


def nifti_description(text: str) -> bytes:
    """``text`` as a NIfTI ``descrip`` field: ASCII, at most :data:`DESCRIP_BYTES` bytes.

    Args:
        text: the description.

    Returns:
        The bytes; a longer text is cut and ends in ``...`` so that a reader sees it was cut.
    """
    data = text.encode("ascii", errors="replace")
    if len(data) <= DESCRIP_BYTES:
        return data
    return data[: DESCRIP_BYTES - 3] + b"..."


def sequences_note(used: Sequence[str], missing: Sequence[str], mode: str) -> str:
    """The sequences a prediction used, in one short line: ``"flair,t1,t2 (t1ce missing: drop)"``.

    Args:
        used: the modalities read.
        missing: the modalities without a file.
        mode: how the missing ones were handled (``--missing-modality``).

    Returns:
        The line (no mention of a mode when nothing is missing).
    """
    note = ",".join(used)
    return f"{note} ({','.join(missing)} missing: {mode})" if missing else note


def record_path(segmentation: str | os.PathLike) -> Path:
    """The JSON record written next to a segmentation: its name with ``.json`` for ``.nii.gz``/``.nii``."""
    path = Path(segmentation)
    return path.with_name(strip_nifti_extension(path.name) + ".json")


def case_record(
    case_id: str,
    segmentation: str | os.PathLike,
    modalities: Sequence[str],
    missing: Iterable[int],
    missing_modality: str,
    inputs: Sequence[str | os.PathLike],
    model: str | None,
) -> dict[str, Any]:
    """The JSON record of a case's segmentation: which sequences it was predicted from.

    Args:
        case_id: the case.
        segmentation: its segmentation file.
        modalities: the network's modalities, in order.
        missing: indices of the modalities the case lacks.
        missing_modality: the mode (``error``, ``drop``, ``zero``).
        inputs: the files read.
        model: where the weights were loaded from.

    Returns:
        ``case_id``, ``segmentation`` (file name), ``modalities_used`` and ``modalities_missing`` (network
        order), ``missing_modality``, ``inputs`` and ``model``.
    """
    absent = {int(i) for i in missing}
    return {
        "case_id": str(case_id),
        "segmentation": Path(segmentation).name,
        "modalities_used": [m for i, m in enumerate(modalities) if i not in absent],
        "modalities_missing": [modalities[i] for i in sorted(absent)],
        "missing_modality": missing_modality,
        "inputs": [str(p) for p in inputs],
        "model": model,
    }


def save_case_record(record: Mapping[str, Any], path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a case's JSON record atomically, with the no-replace rule of :func:`save_like_reference`.

    Args:
        record: JSON-compatible values.
        path: the ``.json`` file.
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    return save_new_file(path, json.dumps(record, indent=2) + "\n", overwrite)


def check_inverted(labels: torch.Tensor, reference: str) -> np.ndarray:
    """``labels`` ``(C, X, Y, Z)`` as an array, after checking that they are in ``reference``'s grid.

    Args:
        labels: an inverted prediction (a ``MetaTensor`` carries its affine).
        reference: the input file.

    Returns:
        The array.

    Raises:
        RuntimeError: if shape or affine differ (a bug in the inversion, never the user's input).
    """
    ref = load_nifti(reference)
    array = np.asarray(labels.detach().cpu())
    # A mismatch here would be a bug in the inversion, never the user's: fail loudly rather than misplace labels.
    if isinstance(labels, MetaTensor) and not np.allclose(np.asarray(labels.affine), ref.affine, atol=1e-3):
        raise RuntimeError(f"{reference}: inverted prediction is not in the input's space:\n{labels.affine}")
    if tuple(array.shape[1:4]) != tuple(ref.shape[:3]):
        raise RuntimeError(f"{reference}: inverted prediction has shape {array.shape[1:]}, input {ref.shape[:3]}")
    return array


class SaveSegmentationd(SaveImaged):
    """Write ``keys`` (``(1, X, Y, Z)`` labels in an input's grid) to ``output_dir`` with the input's header.

    For the bundle's inference workflow; the file is named from the item's ``case_id``. Given ``modalities``,
    it also records, as ``brats-cggm-infer`` does, the sequences the prediction used: in the header's
    ``descrip`` (see :func:`sequences_note`) and in a JSON record beside the file (see :func:`record_path`).

    A ``SaveImaged`` by type only (none of its options or writers is used): MONAI Label's ``BundleInferTask``
    drops the ``SaveImaged`` steps of a bundle's ``postprocessing`` and writes the result itself
    (``post_filter``, ``monailabel/tasks/infer/bundle.py``), so it drops this one too.

    Args:
        keys: the label maps to write (usually ``"pred"``).
        output_dir: the output folder.
        name_template: file name with ``{case_id}``.
        overwrite: replace existing files.
        reference_key: item key of the input file whose header is copied.
        case_id_key: item key of the case identifier.
        modalities: the network's modalities, in channel order; None writes no record (and a plain ``descrip``).
        missing_modality: how cases lacking files were handled (one of :data:`MISSING_MODALITY_MODES`), for
            the record.
        missing_key: item key of the indices of the modalities without a file (see :func:`inference_items`).
        inputs_key: item key of the files read.
        model: where the weights came from, for the record.
        report: also add the case report to the record and write the overlay picture ``<name>.png`` beside it, as
            ``brats-cggm-infer --report`` does (see :mod:`brats_cggm.brats.reporting`); needs ``modalities``.
        label_convention: the labels' convention, for the report.
        model_spacing: the spacing the preprocessing resamples to (its ``pixdim``), for the report's grid.
        channel_order: for 4-D input files, the channel of each modality, for the report's sequences.
        weights: the weights file, hashed once for the report's ``model_details``.
        bundle: the bundle folder, for the report's ``model_details``.
        postprocessing: the post-processing rules applied (their config entry; None when none are), for the
            report's ``model_details``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        name_template: str = "{case_id}.nii.gz",
        overwrite: bool = False,
        reference_key: str = "reference",
        case_id_key: str = "case_id",
        modalities: Sequence[str] | None = None,
        missing_modality: str = "error",
        missing_key: str = "missing",
        inputs_key: str = "inputs",
        model: str | os.PathLike | None = None,
        report: bool = False,
        label_convention: str = "brats2021",
        model_spacing: Sequence[float] | None = None,
        channel_order: Sequence[int] | None = None,
        weights: str | os.PathLike | None = None,
        bundle: str | os.PathLike | None = None,
        postprocessing: Mapping[str, Any] | None = None,
    ) -> None:
        MapTransform.__init__(self, keys)  # not SaveImaged's: its writer is never used
        if report and modalities is None:
            raise ValueError("SaveSegmentationd: report needs the modalities")
        if missing_modality not in MISSING_MODALITY_MODES:
            raise ValueError(f"missing_modality must be one of {MISSING_MODALITY_MODES}, got {missing_modality!r}")
        self.output_dir = Path(output_dir)
        self.name_template = name_template
        self.overwrite = overwrite
        self.reference_key = reference_key
        self.case_id_key = case_id_key
        self.modalities = None if modalities is None else [str(m) for m in modalities]
        self.missing_modality = missing_modality
        self.missing_key = missing_key
        self.inputs_key = inputs_key
        self.model = None if model is None else str(model)
        self.report = bool(report)
        self.label_convention = label_convention
        self.model_spacing = None if model_spacing is None else [float(s) for s in model_spacing]
        self.channel_order = None if channel_order is None else [int(c) for c in channel_order]
        self._model_details: dict[str, Any] | None = None
        self.weights = weights
        self.bundle = bundle
        self.postprocessing = None if postprocessing is None else dict(postprocessing)

    def case_report(
        self, data: Mapping[Hashable, Any], labels: np.ndarray, record: Mapping[str, Any], path: Path
    ) -> CaseReport:
        """The report of an item's segmentation (its inputs read again from disk).

        Args:
            data: the item.
            labels: its segmentation, in its input's grid.
            record: its JSON record (:meth:`record`).
            path: its segmentation file.

        Returns:
            The report (see :func:`~brats_cggm.brats.reporting.report_inputs.build_report`).
        """
        if self._model_details is None:  # the weights hashed once
            self._model_details = model_description(self.weights, self.bundle, None, self.postprocessing)
        reference = str(data[self.reference_key])
        taken = inputs_from_files(reference, record, self.modalities or [], self.channel_order, self.model_spacing)
        name = overlay_path(record_path(path)).name
        return build_report(
            labels,
            taken,
            self.label_convention,
            record["case_id"],
            name,
            record["modalities_missing"],
            self.missing_modality,
            self._model_details,
        )

    def record(self, data: Mapping[Hashable, Any], path: Path) -> dict[str, Any]:
        """The JSON record of an item's segmentation, with the keys of ``brats-cggm-infer``'s records.

        Args:
            data: the item (``case_id``, the missing indices and the inputs, as collated and decollated).
            path: its segmentation file.

        Returns:
            ``case_id``, ``segmentation`` (file name), ``modalities_used`` and ``modalities_missing`` (network
            order), ``missing_modality`` (the mode), ``inputs`` (the files read) and ``model``.
        """
        # decollation gives back an empty list as None and the indices as ints or 0-d tensors
        missing = [int(i) for i in (data.get(self.missing_key) or [])]
        inputs = data.get(self.inputs_key) or [data[self.reference_key]]
        inputs = [inputs] if isinstance(inputs, str) else inputs
        return case_record(
            data[self.case_id_key], path, self.modalities or [], missing, self.missing_modality, inputs, self.model
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            reference = str(d[self.reference_key])
            array = check_inverted(d[key], reference)[0].astype(np.uint8)
            path = output_path(self.output_dir, str(d[self.case_id_key]), self.name_template)
            if self.modalities is None:
                save_like_reference(array, reference, path, overwrite=self.overwrite)
                continue
            record = self.record(d, path)
            used, missing = record["modalities_used"], record["modalities_missing"]
            description = f"brats-cggm seq={sequences_note(used, missing, self.missing_modality)}"
            # both checked first, so that a refused case leaves neither file; the label map is written last, as
            # brats-cggm-infer writes it: its presence says the case is done
            report = self.case_report(d, array, record, path) if self.report else None
            picture = overlay_path(record_path(path)) if report is not None else None
            refuse_existing([p for p in (path, record_path(path), picture) if p is not None], self.overwrite)
            if report is not None and picture is not None:
                save_overlay(report.png, picture, self.overwrite)
                record = {**record, **report.fields}
            save_case_record(record, record_path(path), self.overwrite)
            save_like_reference(array, reference, path, overwrite=self.overwrite, description=description)
        return d


# ------------------------------------------------------------------------------------------- the cases


@dataclass
class CaseInput:
    """One case to segment.

    Attributes:
        case_id: identifier, used to name the output.
        image: the modality files (or DICOM series folders) in network order (None where missing), or the path
            of a 4-D MSD file.
        channel_order: for a 4-D file, its channel of each network modality.
        expected: for a missing modality (its network channel), the file it was looked for as, for the error.
    """

    case_id: str
    image: list[str | None] | str
    channel_order: list[int] | None = None
    expected: dict[int, str] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """The file whose header the outputs get (the first modality present)."""
        if isinstance(self.image, str):
            return self.image
        return next(p for p in self.image if p is not None)

    @property
    def missing(self) -> list[int]:
        """Network channels without a file."""
        return [] if isinstance(self.image, str) else [i for i, p in enumerate(self.image) if p is None]


class LoadedNiftiReader(NibabelReader):
    """MONAI's ``NibabelReader`` that returns images already read for their paths, instead of reading them again.

    ``brats-cggm-infer`` reads and checks every file of a case before segmenting it
    (:meth:`brats_cggm.brats.inference.segmenter.BratsSegmenter.check`); given to ``LoadImaged``, this reader hands
    those images to the preprocessing, so each file is decompressed once. A path it does not hold is read
    from disk; a folder as a DICOM series (:func:`~brats_cggm.brats.data.nifti_checks.load_nifti`).

    Args:
        images: image by path, e.g. as :func:`brats_cggm.brats.data.nifti_checks.load_checked_volume` returned it.
        kwargs: forwarded to ``NibabelReader``.
    """

    def __init__(self, images: Mapping[str, nib.Nifti1Image], **kwargs) -> None:
        super().__init__(**kwargs)
        # keyed as LoadImage passes paths on to its reader
        self.images = {str(Path(p).expanduser()): image for p, image in images.items()}

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs) -> Any:
        names = [str(Path(p).expanduser()) for p in ensure_tuple(data)]
        if not all(name in self.images or Path(name).is_dir() for name in names):
            return super().read(data, **kwargs)
        self.filenames = names
        # a folder not read before is a DICOM series: read here, as load_nifti reads it for the checks
        images = [correct_nifti_header_if_necessary(self.images.get(name) or load_nifti(name)) for name in names]
        return images if len(images) > 1 else images[0]


def _suffixes(patterns: Mapping[str, str] | str | None, modalities: Sequence[str]) -> dict[str, str]:
    if isinstance(patterns, str):
        if patterns not in PATTERN_PRESETS:
            raise ValueError(f"unknown file name patterns {patterns!r}; expected one of {sorted(PATTERN_PRESETS)}")
        patterns = PATTERN_PRESETS[patterns]
    suffixes = {m: f"_{m}" for m in modalities}
    suffixes.update({m: s for m, s in (patterns or {}).items() if m in suffixes})
    return suffixes


def series_folder_matches(name: str, modality: str, suffix: str) -> bool:
    """Whether a sub-folder of a case folder named ``name`` is the DICOM series of ``modality``.

    Args:
        name: the folder's name.
        modality: the network's name of the modality (``flair``).
        suffix: its file name suffix (``_flair``, ``-t2f``).

    Returns:
        True if ``name`` ends in ``suffix`` (as the file name would without its extension), or is, ignoring
        case, ``modality`` or ``suffix`` without its leading separator.
    """
    bare = {modality.lower(), suffix.lstrip("_-. ").lower()}
    return name.endswith(suffix) or name.lower() in bare


def _series_folders(case_dir: Path, modality: str, suffix: str) -> list[Path]:
    return sorted(
        p
        for p in case_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and series_folder_matches(p.name, modality, suffix)
    )


def _find_modality(case_dir: Path, case_id: str, suffix: str, modality: str = "") -> str | None:
    file = _find_modality_file(case_dir, case_id, suffix)
    folders = _series_folders(case_dir, modality or suffix.lstrip("_-. "), suffix)
    if file is not None and folders:
        raise InputFileError(case_dir, f"both a file ({Path(file).name}) and a folder ({folders[0].name}) for {suffix}")
    if len(folders) > 1:
        names = ", ".join(p.name + "/" for p in folders)
        raise InputFileError(case_dir, f"several DICOM series folders for {modality or suffix}: {names}")
    return str(folders[0]) if folders else file


def _find_modality_file(case_dir: Path, case_id: str, suffix: str) -> str | None:
    for ext in (".nii.gz", ".nii"):
        exact = case_dir / f"{case_id}{suffix}{ext}"
        if exact.is_file():
            return str(exact)
    # Folder and file names may differ (renamed folders): accept a single file with the suffix.
    found = sorted(p for ext in (".nii.gz", ".nii") for p in case_dir.glob(f"*{suffix}{ext}") if p.is_file())
    found = [p for p in found if not p.name.startswith(".")]
    if len(found) > 1:
        raise InputFileError(case_dir, f"several files end in {suffix}: {', '.join(p.name for p in found)}")
    return str(found[0]) if found else None


def _case_from_folder(case_dir: Path, modalities: Sequence[str], suffixes: Mapping[str, str]) -> CaseInput:
    image = [_find_modality(case_dir, case_dir.name, suffixes[m], m) for m in modalities]
    expected = {
        i: str(case_dir / f"{case_dir.name}{suffixes[m]}.nii.gz") for i, m in enumerate(modalities) if image[i] is None
    }
    return CaseInput(case_dir.name, image, expected=expected)


def _msd_order(modalities: Sequence[str], msd_channels: Sequence[str], source: str) -> list[int]:
    missing = [m for m in modalities if m not in msd_channels]
    if missing:
        raise InputFileError(source, f"4-D file has no channel for {missing} (channels: {list(msd_channels)})")
    return [list(msd_channels).index(m) for m in modalities]


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti_name(p.name) and not p.name.startswith("."))


def _has_series_folders(folder: Path, suffixes: Mapping[str, str]) -> bool:
    """Whether ``folder`` is a case folder of DICOM series: it has a sub-folder named for a modality that holds no
    folder itself (a series folder holds its slice files; a case folder named ``x_t1`` in a batch holds folders)."""
    return any(
        not any(p.is_dir() for p in sub.iterdir()) for m, s in suffixes.items() for sub in _series_folders(folder, m, s)
    )


def find_cases(
    input_path: str | os.PathLike,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    patterns: Mapping[str, str] | str | None = None,
    msd_channels: Sequence[str] = MSD_CHANNELS,
) -> tuple[list[CaseInput], list[tuple[str, str]]]:
    """Find the cases of an inference input.

    ``input_path`` may be: a 4-D MSD file; an MSD folder (with ``dataset.json``); one case folder (NIfTI
    files named ``<case><suffix>.nii.gz``, or DICOM series folders named for their modality, see
    :func:`series_folder_matches`); a folder of case folders; or a folder of 4-D files (when none of its files
    has a modality suffix). Files are not read here.

    Args:
        input_path: the input.
        modalities: network modality order.
        patterns: file name suffixes by modality (or a preset name of
            :data:`~brats_cggm.brats.data.discovery.PATTERN_PRESETS`); None for BraTS 2021 names.
        msd_channels: the modality of each channel of 4-D files.

    Returns:
        ``(cases, problems)``: the cases found, and ``(name, message)`` for entries that could not be
        made into a case (in batch mode the others still run).

    Raises:
        InputFileError: if ``input_path`` does not exist, is not NIfTI, or holds no case.
        DuplicateCaseError: if two of its cases have the same id (``x.nii`` next to ``x.nii.gz``, or two entries of
            a ``dataset.json``), naming both: the second would replace the first's output.
    """
    path = Path(input_path)
    if not path.exists():
        raise InputFileError(path, "does not exist")
    suffixes = _suffixes(patterns, modalities)
    if path.is_file():
        if not is_nifti_name(path.name):
            raise InputFileError(path, "is not a NIfTI file (expected a name ending in .nii or .nii.gz)")
        return [
            CaseInput(strip_nifti_extension(path.name), str(path), _msd_order(modalities, msd_channels, str(path)))
        ], []
    if (path / "dataset.json").is_file():
        try:
            spec = discover_msd(path, modalities, require_label=False)  # checks the ids of its dataset.json
        except (ValueError, FileNotFoundError) as exc:
            raise InputFileError(path, str(exc)) from exc
        return [CaseInput(i["case_id"], i["image"], list(spec.channel_order or [])) for i in spec.items], []
    files = _nifti_files(path)
    if files:
        if any(f.name.endswith(tuple(s + e for s in suffixes.values() for e in (".nii.gz", ".nii"))) for f in files):
            return [_case_from_folder(path, modalities, suffixes)], []
        cases = [
            CaseInput(strip_nifti_extension(f.name), str(f), _msd_order(modalities, msd_channels, str(f)))
            for f in files
        ]
        check_unique_case_ids(((c.case_id, f) for c, f in zip(cases, files)), path)
        return cases, []
    if _has_series_folders(path, suffixes):
        return [_case_from_folder(path, modalities, suffixes)], []
    cases, problems = [], []
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not _nifti_files(sub) and not _has_series_folders(sub, suffixes):
            continue
        try:
            cases.append(_case_from_folder(sub, modalities, suffixes))
        except InputFileError as exc:
            problems.append((sub.name, str(exc)))
    if not cases and not problems:
        raise InputFileError(
            path,
            "holds no NIfTI files, nor case folders with NIfTI files or DICOM series folders named for their "
            "modality (a single DICOM series is given with --flair, --t1ce, --t1 or --t2)",
        )
    # folder names are unique in one folder: checked all the same, every input through the one check
    check_unique_case_ids(((c.case_id, path / c.case_id) for c in cases), path)
    return cases, problems


def missing_file_text(modality: str, expected: str | os.PathLike | None = None) -> str:
    """One missing file, for :func:`missing_files_message`: ``"no t1ce file (expected <path>)"``."""
    return f"no {modality} file" + (f" (expected {expected})" if expected else "")


def missing_files_message(files: Sequence[str], flag: str) -> str:
    """Why cases lacking modality files are refused: the missing files and the setting that accepts them.

    Args:
        files: each missing file, as :func:`missing_file_text` says it (prefixed with its case where several
            cases are refused together).
        flag: how the user sets the mode: ``"--missing-modality"`` (``brats-cggm-infer``) or
            ``"--missing_modality"`` (the bundle).

    Returns:
        The message.
    """
    return (
        f"{'; '.join(files)}: pass {flag} drop to segment the case from the sequences it has "
        f"(or {flag} zero for the legacy zero-filled input)"
    )


def inference_items(
    items: Sequence[Mapping[str, Any]],
    missing_modality: str = "error",
    modalities: Sequence[str] = DEFAULT_MODALITIES,
) -> list[dict]:
    """Data list items for the bundle workflow: ``case_id``, ``image``, the header ``reference``, ``inputs``
    (the files read) and ``missing`` (the indices of the modalities without a file).

    Labels are dropped (inference must not load them). ``image`` lists only the files present; the
    preprocessing puts zero channels in the ``missing`` places (see
    :class:`brats_cggm.brats.inference.segmenter.InsertZeroChannelsd`).

    Args:
        items: ``DatasetSpec.items`` (see :func:`brats_cggm.brats.data.discovery.discover_dataset`); a missing
            modality is None in ``image``, the file looked for in ``expected`` (``allow_missing_modalities``).
        missing_modality: one of :data:`MISSING_MODALITY_MODES`; under ``"error"`` a case lacking a file is
            refused here, before any case is segmented.
        modalities: the modality names in channel order, for the message.

    Returns:
        New items.

    Raises:
        FileNotFoundError: under ``"error"``, naming every missing file and the ``missing_modality`` setting.
        ValueError: for an unknown ``missing_modality``.
    """
    if missing_modality not in MISSING_MODALITY_MODES:
        raise ValueError(f"missing_modality must be one of {MISSING_MODALITY_MODES}, got {missing_modality!r}")
    out, lacking = [], []
    for item in items:
        image = item["image"]
        missing = [] if isinstance(image, str) else [i for i, p in enumerate(image) if p is None]
        expected = item.get("expected") or {}
        lacking += [f"{item['case_id']}: {missing_file_text(modalities[i], expected.get(i))}" for i in missing]
        present = image if isinstance(image, str) else [p for p in image if p is not None]
        reference = present if isinstance(present, str) else present[0]
        inputs = [present] if isinstance(present, str) else list(present)
        out.append(
            {"case_id": item["case_id"], "image": present, "reference": reference, "inputs": inputs, "missing": missing}
        )
    if lacking and missing_modality == "error":
        raise FileNotFoundError(missing_files_message(lacking, "--missing_modality"))
    return out
