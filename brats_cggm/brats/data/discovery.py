"""Datalists: find the cases of a BraTS-layout or MSD Task01 data set and check them (splitting: ``splits``).

Two layouts are read:

- ``"brats"``: one folder per case holding one NIfTI file per modality plus the segmentation, named
  ``{case}{suffix}.nii.gz`` (or ``.nii``); the suffixes default to the BraTS 2021 ones
  (``_flair``, ``_t1ce``, ``_t1``, ``_t2``, ``_seg``), :data:`BRATS2023_PATTERNS` gives BraTS 2023's.
- ``"msd"``: the Medical Segmentation Decathlon Task01_BrainTumour folder, described by its
  ``dataset.json``, with every case's modalities stacked in one 4-D file.

Case ids name a case everywhere (splits, caches, predictions), so two inputs giving the same id are refused
before any work (:func:`check_unique_case_ids`, also used by inference and evaluation). A case read from outside
the data set folder (a case folder that is a symbolic link to elsewhere, an MSD entry ``../other/...``) is read,
since data sets are legitimately assembled from links (``scripts/select_and_train.py`` does), but with one
warning per discovery naming those paths (:data:`OUTSIDE_WARNING`), so that it is never silent.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brats_cggm.brats.data.labels import check_labels, get_label_convention
from brats_cggm.brats.data.nifti_checks import AFFINE_TOLERANCE, check_same_grid, load_nifti, read_checked_header

__all__ = [
    "BRATS2021_PATTERNS",
    "BRATS2023_PATTERNS",
    "DEFAULT_MODALITIES",
    "MSD_MODALITY_NAMES",
    "OUTSIDE_WARNING",
    "PATTERN_PRESETS",
    "DatasetSpec",
    "DuplicateCaseError",
    "check_unique_case_ids",
    "detect_patterns",
    "discover_brats_folders",
    "discover_dataset",
    "discover_msd",
    "validate_dataset",
]

#: The default modality order of the network input channels.
DEFAULT_MODALITIES: tuple[str, ...] = ("flair", "t1ce", "t1", "t2")

#: BraTS 2021 file name suffixes (``BraTS2021_00000_flair.nii.gz``), by modality; ``"seg"`` is the label.
BRATS2021_PATTERNS: dict[str, str] = {"flair": "_flair", "t1ce": "_t1ce", "t1": "_t1", "t2": "_t2", "seg": "_seg"}

#: BraTS 2023 file name suffixes (``BraTS-GLI-00000-000-t2f.nii.gz``), by modality.
BRATS2023_PATTERNS: dict[str, str] = {"flair": "-t2f", "t1ce": "-t1c", "t1": "-t1n", "t2": "-t2w", "seg": "-seg"}


#: Named suffix sets, so that configuration files can say ``patterns: brats2023``.
PATTERN_PRESETS: dict[str, dict[str, str]] = {"brats2021": BRATS2021_PATTERNS, "brats2023": BRATS2023_PATTERNS}

#: Names (lower case) that an MSD ``dataset.json`` may give each modality.
MSD_MODALITY_NAMES: dict[str, tuple[str, ...]] = {
    "flair": ("flair",),
    "t1": ("t1w", "t1"),
    "t1ce": ("t1gd", "t1ce", "t1c", "t1w+c"),
    "t2": ("t2w", "t2"),
}

#: How the warning about cases read from outside the data set folder begins (one per discovery).
OUTSIDE_WARNING = "read from outside the data set folder"

logger = logging.getLogger(__name__)

_NIFTI_EXTENSIONS = (".nii.gz", ".nii")
_VALIDATE_MODES = ("none", "headers", "full")


@dataclass
class DatasetSpec:
    """A discovered data set.

    Attributes:
        items: one dict per case, sorted by ``case_id``: ``{"case_id": str, "image": ..., "label": str}``;
            ``image`` is a list of paths in modality order (``"brats"`` layout) or the path of the 4-D
            file (``"msd"`` layout); ``label`` is absent for unlabelled cases.
        layout: ``"brats"`` or ``"msd"``.
        label_convention: key of :data:`brats_cggm.brats.data.labels.LABEL_CONVENTIONS`.
        channel_order: for ``"msd"``, the indices of the 4-D file's channels in modality order (select
            them with ``image[..., channel_order]`` or after moving channels first); None otherwise.
        modalities: the modality names, in input channel order.
        root: the data set folder.
    """

    items: list[dict]
    layout: str
    label_convention: str
    channel_order: list[int] | None = None
    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    root: Path = field(default_factory=Path)


class DuplicateCaseError(ValueError):
    """Two inputs give the same case id; the message names both."""


def check_unique_case_ids(
    cases: Iterable[tuple[str, str | os.PathLike]], where: str | os.PathLike, what: str = "case id"
) -> None:
    """Refuse two inputs that give the same case id: the one place this is checked.

    A case id names the case's split entry, cache entry and output files, so a second case of the same id
    would silently replace the first one's (or be refused as the first one's output).

    Args:
        cases: ``(case_id, source)`` pairs, ``source`` the file or folder the id comes from.
        where: what the cases were read from (a folder, a ``dataset.json``), for the message.
        what: what must be unique, for the message (e.g. ``"output file"``).

    Raises:
        DuplicateCaseError: naming the id and both sources (the first clash; how many more there are).
    """
    first: dict[str, str] = {}
    clashes: list[tuple[str, str, str]] = []
    for case_id, source in cases:
        if case_id in first:
            clashes.append((case_id, first[case_id], str(source)))
        else:
            first[case_id] = str(source)
    if clashes:
        case_id, one, other = clashes[0]
        more = f" ({len(clashes) - 1} more clash(es))" if len(clashes) > 1 else ""
        raise DuplicateCaseError(
            f"{where}: duplicate {what} {case_id!r}: {one} and {other}{more}; each case needs its own id, since "
            "outputs, splits and caches are named by it"
        )


def _warn_outside(root: Path, sources: Iterable[tuple[str, str | os.PathLike]]) -> None:
    """One warning naming the cases whose files are not inside ``root`` once links and ``..`` are resolved."""
    inside = root.resolve()
    outside: dict[str, str] = {}
    for case_id, path in sources:
        resolved = Path(path).resolve()
        if case_id not in outside and not resolved.is_relative_to(inside):
            outside[case_id] = f"{path} -> {resolved}" if Path(path).absolute() != resolved else str(path)
    if outside:
        shown = "; ".join(list(outside.values())[:5]) + (f"; and {len(outside) - 5} more" if len(outside) > 5 else "")
        warnings.warn(f"{len(outside)} case(s) {OUTSIDE_WARNING} {root}: {shown}", UserWarning, stacklevel=3)


def _item_files(item: Mapping) -> list[str]:
    image = item["image"]
    files = [image] if isinstance(image, str) else [p for p in image if p is not None]
    return files + ([item["label"]] if item.get("label") else [])


def _check_dir(dataset_dir: str | os.PathLike) -> Path:
    root = Path(dataset_dir).expanduser().absolute()
    if not root.exists():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"dataset folder {root} is not a directory")
    return root


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.endswith(_NIFTI_EXTENSIONS)


def _resolve_patterns(patterns: Mapping[str, str] | str | None, modalities: Sequence[str]) -> dict[str, str]:
    if isinstance(patterns, str):
        if patterns not in PATTERN_PRESETS:
            raise ValueError(f"unknown file name patterns {patterns!r}; expected one of {sorted(PATTERN_PRESETS)}")
        patterns = PATTERN_PRESETS[patterns]
    resolved = {name: f"_{name}" for name in (*modalities, "seg")}
    resolved.update(patterns or {})
    return resolved


def _find_file(case_dir: Path, stem: str) -> Path | None:
    for ext in _NIFTI_EXTENSIONS:
        candidate = case_dir / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _case_dirs(root: Path) -> list[Path]:
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and any(map(_is_nifti, p.iterdir()))),
        key=lambda p: p.name,
    )


def detect_patterns(dataset_dir: str | os.PathLike, modalities: Sequence[str] = DEFAULT_MODALITIES) -> str:
    """Which file name preset of :data:`PATTERN_PRESETS` a BraTS-layout folder uses.

    Only file names are looked at (no file is opened).

    Args:
        dataset_dir: the data set folder (one sub-folder per case).
        modalities: the modalities that must all be found.

    Returns:
        The preset whose names give every modality file of the most case folders; ``"brats2021"`` on a
        tie, or when no preset fits any folder (discovery then names the file it expected).

    Raises:
        FileNotFoundError: if ``dataset_dir`` does not exist.
    """
    root = _check_dir(dataset_dir)
    case_dirs = _case_dirs(root)
    counts = {}
    for name, preset in PATTERN_PRESETS.items():
        suffixes = _resolve_patterns(preset, modalities)
        counts[name] = sum(
            all(_find_file(case_dir, f"{case_dir.name}{suffixes[m]}") is not None for m in modalities)
            for case_dir in case_dirs
        )
    best = max(counts.values())
    return "brats2021" if counts["brats2021"] == best else max(counts, key=counts.__getitem__)


def discover_brats_folders(
    dataset_dir: str | os.PathLike,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    patterns: Mapping[str, str] | str | None = None,
    label_convention: str = "brats2021",
    require_label: bool = True,
    allow_missing_modalities: bool = False,
) -> DatasetSpec:
    """Find the cases of a BraTS folder layout: every (non-hidden) sub-folder holding NIfTI files.

    Args:
        dataset_dir: the data set folder.
        modalities: the modalities to read, in input channel order.
        patterns: file name suffix by modality (plus ``"seg"``): case ``C``'s modality ``m`` is
            ``C/C{patterns[m]}.nii.gz`` (or ``.nii``); a name of :data:`PATTERN_PRESETS`; or None to detect
            the preset from the file names (:func:`detect_patterns`). Modalities missing from the mapping
            default to ``_{modality}``.
        label_convention: the label convention of the segmentations.
        require_label: raise if a case has no segmentation (else its item has no ``"label"``).
        allow_missing_modalities: accept a case lacking some (not all) modality files: its ``image`` holds
            None in their place and its ``"expected"`` maps each such modality's index to the file looked for
            (for inference, which can predict without them; training cannot).

    Returns:
        The data set, items sorted by case id.

    Raises:
        FileNotFoundError: if ``dataset_dir`` does not exist, or a case lacks a modality (unless allowed; all
            of them in any case) or label file.
        ValueError: if no case folder is found, or the patterns or label convention are unknown.

    Warns:
        UserWarning: once, naming the case folders (or files) that are links to outside ``dataset_dir``.
    """
    root = _check_dir(dataset_dir)
    get_label_convention(label_convention)
    detected = detect_patterns(root, modalities) if patterns is None else None
    suffixes = _resolve_patterns(detected or patterns, modalities)
    case_dirs = _case_dirs(root)
    if not case_dirs:
        raise ValueError(
            f"no cases found in {root}: expected one sub-folder per case holding NIfTI files "
            f"(e.g. {root}/BraTS2021_00000/BraTS2021_00000_flair.nii.gz)"
        )
    items = []
    for case_dir in case_dirs:
        case_id = case_dir.name
        images: list[str | None] = []
        expected: dict[int, str] = {}
        for index, modality in enumerate(modalities):
            found = _find_file(case_dir, f"{case_id}{suffixes[modality]}")
            if found is None and allow_missing_modalities:
                images.append(None)
                expected[index] = str(case_dir / f"{case_id}{suffixes[modality]}.nii.gz")
                continue
            if found is None:
                hint = (
                    f" (file names detected as {detected!r}: set patterns to one of {sorted(PATTERN_PRESETS)} or "
                    "a suffix per modality)"
                    if detected
                    else ""
                )
                raise FileNotFoundError(
                    f"case folder {case_dir} has no {modality} file: expected {case_id}{suffixes[modality]}.nii.gz"
                    f"{hint}"
                )
            images.append(str(found))
        if len(expected) == len(modalities):
            raise FileNotFoundError(f"case folder {case_dir} has no modality file at all: expected e.g. {expected[0]}")
        item: dict = {"case_id": case_id, "image": images}
        if expected:
            item["expected"] = expected
        label = _find_file(case_dir, f"{case_id}{suffixes['seg']}")
        if label is not None:
            item["label"] = str(label)
        elif require_label:
            raise FileNotFoundError(
                f"case folder {case_dir} has no segmentation: expected {case_id}{suffixes['seg']}.nii.gz"
            )
        items.append(item)
    # folder names are unique in one folder: checked all the same, so that every layout goes through one check
    check_unique_case_ids(((d.name, d) for d in case_dirs), root)
    _warn_outside(
        root, [*((d.name, d) for d in case_dirs), *((i["case_id"], f) for i in items for f in _item_files(i))]
    )
    return DatasetSpec(
        items=items,
        layout="brats",
        label_convention=label_convention,
        channel_order=None,
        modalities=tuple(modalities),
        root=root,
    )


def _msd_channel_order(modality_map: Mapping[str, str], modalities: Sequence[str], source: Path) -> list[int]:
    by_name = {str(name).strip().lower(): int(index) for index, name in modality_map.items()}
    order = []
    for modality in modalities:
        aliases = MSD_MODALITY_NAMES.get(modality.lower(), (modality.lower(),))
        matches = [by_name[a] for a in aliases if a in by_name]
        if not matches:
            raise ValueError(
                f"{source}: no channel for modality {modality!r} in 'modality' {dict(modality_map)} "
                f"(looked for {list(aliases)})"
            )
        order.append(matches[0])
    return order


def _msd_case_id(image: Path) -> str:
    case_id = image.name
    for ext in _NIFTI_EXTENSIONS:
        case_id = case_id.removesuffix(ext)
    return case_id


def _msd_test_cases(entries: object, root: Path, json_path: Path) -> list[tuple[str, str]]:
    """``(case_id, path)`` of the ``test`` list (paths, or dicts with an ``image``), for the duplicate check."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ValueError(f"{json_path}: 'test' must be a list of image paths, got {type(entries).__name__}")
    cases = []
    for entry in entries:
        image = entry.get("image") if isinstance(entry, dict) else entry
        if not isinstance(image, str):
            raise ValueError(f"{json_path}: test entry {entry!r} is neither an image path nor has an 'image'")
        path = Path(os.path.normpath(root / image))
        cases.append((_msd_case_id(path), str(path)))
    return cases


def discover_msd(
    dataset_dir: str | os.PathLike, modalities: Sequence[str] = DEFAULT_MODALITIES, require_label: bool = True
) -> DatasetSpec:
    """Find the cases of an MSD Task01_BrainTumour folder from its ``dataset.json``.

    Args:
        dataset_dir: the folder holding ``dataset.json``, ``imagesTr`` and ``labelsTr``.
        modalities: the modalities to read, in input channel order.
        require_label: raise if a training entry has no label (else its item has no ``"label"``).

    Returns:
        The data set (label convention ``"msd"``), with ``channel_order`` mapping the modalities to the
        4-D files' channels.

    Raises:
        FileNotFoundError: if the folder, ``dataset.json`` or a file it lists does not exist.
        ValueError: if ``dataset.json`` is malformed, lists no cases or lacks a modality.
        DuplicateCaseError: if two entries of its ``training`` and ``test`` lists give the same case id (the file
            name without ``.nii.gz``), naming both.

    Warns:
        UserWarning: once, naming the entries that lie outside the folder (``../other/...``, links).
    """
    root = _check_dir(dataset_dir)
    json_path = root / "dataset.json"
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path} not found: an MSD data set folder needs its dataset.json")
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{json_path}: cannot read JSON: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("modality"), dict):
        raise ValueError(f"{json_path}: expected a 'modality' mapping such as {{'0': 'FLAIR', '1': 'T1w', ...}}")
    entries = meta.get("training")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"no cases found in {root}: {json_path} has no 'training' entries")
    channel_order = _msd_channel_order(meta["modality"], modalities, json_path)

    items = []
    for entry in entries:
        if not isinstance(entry, dict) or "image" not in entry:
            raise ValueError(f"{json_path}: training entry {entry!r} has no 'image'")
        image = Path(os.path.normpath(root / entry["image"]))
        if not image.is_file():
            raise FileNotFoundError(f"{image} (listed in {json_path}) does not exist")
        item: dict = {"case_id": _msd_case_id(image), "image": str(image)}
        if entry.get("label"):
            label = Path(os.path.normpath(root / entry["label"]))
            if not label.is_file():
                raise FileNotFoundError(f"{label} (listed in {json_path}) does not exist")
            item["label"] = str(label)
        elif require_label:
            raise ValueError(f"{json_path}: training entry for {image} has no 'label'")
        items.append(item)
    # the test cases are not read here, but share the id space: their predictions are named by it too
    test_cases = _msd_test_cases(meta.get("test"), root, json_path)
    check_unique_case_ids([*((i["case_id"], i["image"]) for i in items), *test_cases], json_path)
    _warn_outside(root, [(i["case_id"], f) for i in items for f in _item_files(i)])
    items.sort(key=lambda item: item["case_id"])
    return DatasetSpec(
        items=items,
        layout="msd",
        label_convention="msd",
        channel_order=channel_order,
        modalities=tuple(modalities),
        root=root,
    )


def _validate_case_headers(item: dict, spec: DatasetSpec) -> None:
    images = [item["image"]] if isinstance(item["image"], str) else [p for p in item["image"] if p is not None]
    files = images + ([item["label"]] if "label" in item else [])
    needed = max(spec.channel_order or [0]) + 1
    headers = []
    for path in files:
        ndim = 4 if spec.layout == "msd" and path in images else 3
        headers.append((path, read_checked_header(path, ndim=ndim, min_channels=needed)))
    # Spatial axes only: an MSD image has a fourth (channel) axis that its label lacks.
    check_same_grid(headers, tolerance=AFFINE_TOLERANCE)


def validate_dataset(spec: DatasetSpec, validate: str = "headers") -> None:
    """Check a discovered data set.

    Args:
        spec: the data set.
        validate: ``"none"``; ``"headers"``: read NIfTI headers only (cheap) and check, with
            :mod:`brats_cggm.brats.data.nifti_checks`, every file's dimensionality and affine (finite, invertible)
            and that every file of a case has the same spatial shape and affine (within 1e-3); ``"full"``:
            also load every label and check its values against the label convention. (Training checks the
            voxels and labels anyway, once, as it loads them: see
            :class:`brats_cggm.brats.data.transforms.LoadCheckedImaged`.)

    Raises:
        ValueError: naming the files at fault (an ``InputFileError`` for a bad file), or if ``validate`` is
            unknown.
    """
    if validate not in _VALIDATE_MODES:
        raise ValueError(f"validate must be one of {_VALIDATE_MODES}, got {validate!r}")
    if validate == "none":
        return
    for item in spec.items:
        _validate_case_headers(item, spec)
        if validate == "full" and "label" in item:
            labels = np.asanyarray(load_nifti(item["label"]).dataobj)
            check_labels(labels, spec.label_convention, item["label"])


def discover_dataset(
    dataset_dir: str | os.PathLike,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    layout: str = "auto",
    label_convention: str | None = None,
    patterns: Mapping[str, str] | str | None = None,
    validate: str = "headers",
    require_label: bool = True,
    allow_missing_modalities: bool = False,
) -> DatasetSpec:
    """Find, and check, the cases of a data set.

    Args:
        dataset_dir: the data set folder.
        modalities: the modalities to read, in input channel order.
        layout: ``"brats"``, ``"msd"``, or ``"auto"`` (``"msd"`` if ``dataset.json`` exists, else ``"brats"``).
        label_convention: the label convention; None picks ``"msd"`` for the MSD layout, ``"brats2023"``
            with the BraTS 2023 patterns (given or detected), else ``"brats2021"``.
        patterns: file name suffixes for the BraTS layout, see :func:`discover_brats_folders`; None detects
            BraTS 2021 or 2023 names from the files (:func:`detect_patterns`).
        validate: ``"none"``, ``"headers"`` or ``"full"``, see :func:`validate_dataset`.
        require_label: raise if a case has no label.
        allow_missing_modalities: for the BraTS layout, accept cases lacking some modality files (see
            :func:`discover_brats_folders`); an MSD file holds every channel.

    Returns:
        The data set, items sorted by case id.

    Raises:
        FileNotFoundError: if the folder or a case's file does not exist.
        ValueError: if no case is found, a setting is unknown, or validation fails (naming the files).
    """
    if validate not in _VALIDATE_MODES:
        raise ValueError(f"validate must be one of {_VALIDATE_MODES}, got {validate!r}")
    if layout not in ("auto", "brats", "msd"):
        raise ValueError(f"layout must be 'auto', 'brats' or 'msd', got {layout!r}")
    root = _check_dir(dataset_dir)
    if layout == "auto":
        layout = "msd" if (root / "dataset.json").is_file() else "brats"
    if layout == "msd":
        spec = discover_msd(root, modalities=modalities, require_label=require_label)
        if label_convention is not None:
            spec.label_convention = get_label_convention(label_convention).name
    else:
        if label_convention is None:
            named = detect_patterns(root, modalities) if patterns is None else patterns
            is_2023 = named == "brats2023" or named == BRATS2023_PATTERNS
            label_convention = "brats2023" if is_2023 else "brats2021"
        spec = discover_brats_folders(
            root,
            modalities=modalities,
            patterns=patterns,
            label_convention=label_convention,
            require_label=require_label,
            allow_missing_modalities=allow_missing_modalities,
        )
    validate_dataset(spec, validate)
    return spec
