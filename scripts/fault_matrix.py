"""Fault matrix: every bad input through the real command lines and bundles, each with its expected outcome.

    python scripts/fault_matrix.py --out docs/reliability.md [--only PATTERN] [--jobs N] [--keep]

Each row prepares a fresh temporary folder (tiny phantom cases, a tiny bundle or training run, the damage),
runs its command(s) there as subprocesses, and records the exit code, the first error line, the files
left behind, and verdicts against what the row expects: the exit status (0 or non-zero; a death by signal
or a timeout is never as expected), a message naming the file or setting at fault, nothing lost
(pre-existing files unchanged), nothing half-written (no ``*.tmp``, no new empty file, nothing new outside
the row's outputs), no code run from a data file, and a row-specific outcome. The report is written
atomically; the exit status is 1 when any row is not as expected.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import pickle
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from brats_cggm.brats.phantoms.geometric import write_phantom_dataset
from brats_cggm.core.files import atomic_write_text
from brats_cggm.core.resources import bundle_dir

#: The checkout this script belongs to: its git state is recorded, and the report goes to its docs/.
REPO = Path(__file__).resolve().parents[1]
CONFIGS = bundle_dir("brats_cggm") / "configs"
CASE = "BraTS2021_00000"
SHAPE = (24, 24, 24)
N_CASES = 3
FEATURES = (4, 8, 16)
PATCH = (16, 16, 16)
#: Overrides of every training run (a tiny network and patch, one epoch, validation every epoch).
TINY_TRAIN = {
    "max_epochs": "1",
    "val_interval": "1",
    "patch_size": json.dumps(list(PATCH)),
    "network_def#features": json.dumps(list(FEATURES)),
    "num_samples": "1",
    "sw_batch_size": "2",
    "device": "cpu",
}
#: BraTS 2023 file name suffixes, by BraTS 2021 suffix.
NAMES_2023 = {"flair": "t2f", "t1ce": "t1c", "t1": "t1n", "t2": "t2w", "seg": "seg"}
STEP_TIMEOUT_S = 600
MARKER = "CODE_RAN"

# ------------------------------------------------------------------------------------------------ commands


@dataclass(frozen=True)
class Command:
    """A subprocess command line, and its short form for the report (paths relative to the row folder)."""

    argv: tuple[str, ...]
    display: str


def _console(name: str, module: str) -> list[str]:
    script = Path(sys.executable).parent / name
    return [str(script)] if script.is_file() else [sys.executable, "-m", module]


def infer(*args: str, display: str | None = None) -> Command:
    """``brats-cggm-infer ARGS --device cpu`` (``display``: the short form of ARGS, when not ARGS)."""
    argv = [*_console("brats-cggm-infer", "brats_cggm.cli.infer"), *args, "--device", "cpu"]
    return Command(tuple(argv), "brats-cggm-infer " + (display or " ".join(args)))


def evaluate(*args: str) -> Command:
    """``brats-cggm-evaluate ARGS``."""
    argv = [*_console("brats-cggm-evaluate", "brats_cggm.cli.evaluate"), *args]
    return Command(tuple(argv), "brats-cggm-evaluate " + " ".join(args))


def _bundle_run(config_file: str, overrides: dict[str, str]) -> list[str]:
    argv = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_file]
    argv += ["--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]
    for key, value in overrides.items():
        argv += [f"--{key}", value]
    return argv


def train(data: str = "data", out: str = "run", **overrides: str) -> Command:
    """The training bundle (``train.yaml``) with the tiny overrides, on ``data``, into ``out``."""
    shown = {"dataset_dir": data, "output_dir": out, **overrides}
    argv = _bundle_run(str(CONFIGS / "train.yaml"), {**TINY_TRAIN, **shown})
    return Command(tuple(argv), "train " + " ".join(f"--{k} {v}" for k, v in shown.items()))


def prepare(*args: str) -> Command:
    """``brats-cggm-prepare ARGS``."""
    argv = [*_console("brats-cggm-prepare", "brats_cggm.cli.prepare"), *args]
    return Command(tuple(argv), "brats-cggm-prepare " + " ".join(args))


def diagnose(*args: str) -> Command:
    """``brats-cggm-diagnose ARGS --device cpu --no-plots``."""
    argv = [*_console("brats-cggm-diagnose", "brats_cggm.cli.diagnose"), *args, "--device", "cpu", "--no-plots"]
    return Command(tuple(argv), "brats-cggm-diagnose " + " ".join(args))


def phantoms(*args: str, umask: int | None = None) -> Command:
    """``brats-cggm-phantoms ARGS`` (under ``umask`` when given)."""
    argv = [*_console("brats-cggm-phantoms", "brats_cggm.cli.phantoms"), *args]
    if umask is None:
        return Command(tuple(argv), "brats-cggm-phantoms " + " ".join(args))
    script = f"umask {umask:03o} && exec " + " ".join(argv)
    return Command(("sh", "-c", script), f"umask {umask:03o}; brats-cggm-phantoms " + " ".join(args))


def torchrun_train(nproc: int = 2, data: str = "data", out: str = "run", **overrides: str) -> Command:
    """``train.yaml`` + ``multi_gpu_train.yaml`` under ``torchrun --standalone`` with ``nproc`` CPU processes."""
    shown = {"dataset_dir": data, "output_dir": out, **overrides}
    files = repr([str(CONFIGS / "train.yaml"), str(CONFIGS / "multi_gpu_train.yaml")])
    bundle = _bundle_run(files, {**TINY_TRAIN, **shown})[1:]  # "-m monai.bundle run ..." without the interpreter
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    shown_text = " ".join(f"--{k} {v}" for k, v in shown.items())
    return Command(tuple(launcher + bundle), f"torchrun --nproc_per_node={nproc} train+multi_gpu {shown_text}")


def bundle_infer(bundle: str = "bundle", data: str = "cases", out: str = "out") -> Command:
    """``inference.yaml`` with the run config of ``bundle`` (a training ``output_dir`` look-alike)."""
    files = repr([str(CONFIGS / "inference.yaml"), f"{bundle}/configs/inference.json"])
    overrides = {"bundle_root": bundle, "dataset_dir": data, "output_dir": out, "device": "cpu"}
    argv = _bundle_run(files, overrides)
    shown = " ".join(f"--{k} {v}" for k, v in overrides.items() if k != "device")
    return Command(tuple(argv), f"bundle inference.yaml+{bundle}/configs/inference.json {shown}")


def python(code: str, display: str) -> Command:
    """``python -c CODE``."""
    return Command((sys.executable, "-c", code), display)


# ---------------------------------------------------------------------------------------------- rows


@dataclass
class StepResult:
    """What one command did."""

    display: str
    returncode: int | None  # None: timed out
    stdout: str
    stderr: str
    seconds: float
    killed: bool = False
    problems: list[str] | None = None  # from the step's own check; None: it has none
    background: bool = False


@dataclass(frozen=True)
class Step:
    """One command of a row.

    Attributes:
        command: what to run (in the row folder).
        kill_when: polled while it runs; when true, the process gets SIGKILL.
        check: problems seen right after this step (before the next one runs).
        background_until: run in the background: the next step starts once this holds (or the process has
            ended); the row waits for it after its last step. The row's verdict is that of its last step
            that is not in the background.
        act_when: ``(condition, action)``: polled while it runs; the first time the condition holds,
            ``action(process)`` (e.g. freeze one of its children).
    """

    command: Command
    kill_when: Callable[[Path], bool] | None = None
    check: Callable[[Path, StepResult], list[str]] | None = None
    background_until: Callable[[Path], bool] | None = None
    act_when: tuple[Callable[[Path], bool], Callable[[subprocess.Popen], None]] | None = None


@dataclass(frozen=True)
class Row:
    """One bad input and what must happen.

    Attributes:
        name: unique, e.g. ``infer/truncated``.
        setup: prepares the row folder (given the shared fixtures) and returns the steps to run.
        expect_ok: the last step must exit 0 (else non-zero, not by a signal).
        message: substrings that the error lines must name together (``{marker}`` is the marker file).
        one_line: a command-line error: no traceback.
        may_change: path prefixes (relative to the row folder) where pre-existing files may change.
        writes: path prefixes where new files may appear.
        marker: the row plants code that would create the file :data:`MARKER`: it must not exist.
        check: the row's own outcome check, after the last step: a list of problems.
        what: one phrase for the report.
    """

    name: str
    setup: Callable[[Path, Fixtures], list[Step]]
    expect_ok: bool
    message: tuple[str, ...] = ()
    one_line: bool = False
    may_change: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    marker: bool = False
    check: Callable[[Path, list[StepResult]], list[str]] | None = None
    what: str = ""


# ---------------------------------------------------------------------------------------------- fixtures


class Fixtures:
    """Inputs shared by rows, each built once (thread-safe) under ``root`` and copied into row folders."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.RLock()  # a fixture may build on another
        self._built: dict[str, Path | BaseException] = {}

    def _get(self, name: str, build: Callable[[Path], None]) -> Path:
        with self._lock:
            if name not in self._built:
                target = self.root / name
                try:
                    build(target)
                    self._built[name] = target
                except BaseException as exc:
                    self._built[name] = exc
            found = self._built[name]
        if isinstance(found, BaseException):
            raise RuntimeError(f"fixture {name!r} could not be built: {found}") from found
        return found

    def phantoms(self) -> Path:
        """A BraTS 2021-layout folder of :data:`N_CASES` phantom cases of :data:`SHAPE`."""
        return self._get("phantoms", lambda p: write_phantom_dataset(p, n=N_CASES, shape=SHAPE, seed=0))

    def bundle(self) -> Path:
        """A training ``output_dir`` look-alike with a random tiny network (no training needed)."""

        def build(root: Path) -> None:
            import torch

            from brats_cggm.brats.inference.segmenter import save_run_config
            from brats_cggm.brats.model import build_network

            torch.manual_seed(0)
            network = build_network("cpu", features=FEATURES)
            save_run_config(root, network, {"label_convention": "brats2021", "channel_order": None}, roi_size=PATCH)
            (root / "models").mkdir(parents=True)
            torch.save(network.state_dict(), root / "models" / "model.pt")

        return self._get("bundle", build)

    def trained_run(self) -> Path:
        """A real tiny training run of 2 epochs (``checkpoint.pt``, ``checkpoint.prev.pt``, ``model.pt``)."""

        def build(root: Path) -> None:
            data = self.phantoms()
            command = train(str(data), str(root), max_epochs="2")
            result = run_step(Step(command), self.root)
            if result.returncode != 0:
                raise RuntimeError(f"training exited {result.returncode}: {first_error_line(result) or '?'}")

        return self._get("trained_run", build)


def copy_case(fixtures: Fixtures, ws: Path, folder: str, case: str = CASE) -> Path:
    """A writable copy of phantom case ``case`` at ``ws/folder/case``."""
    return Path(shutil.copytree(fixtures.phantoms() / case, ws / folder / case))


def copy_dataset(fixtures: Fixtures, ws: Path, folder: str = "data") -> Path:
    return Path(shutil.copytree(fixtures.phantoms(), ws / folder))


def case_file(case_dir: Path, modality: str) -> Path:
    return case_dir / f"{case_dir.name}_{modality}.nii.gz"


# ------------------------------------------------------------------------------------------------ damage


def truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def make_empty(path: Path) -> None:
    path.write_bytes(b"")


def make_text(path: Path) -> None:
    path.write_text("this is not a NIfTI image\n")


def rewrite(
    path: Path,
    data: Callable[[np.ndarray], np.ndarray] = lambda a: a,
    affine: Callable[[np.ndarray], np.ndarray] | None = None,
) -> None:
    """Save ``path`` again with transformed voxels and/or affine (sform and qform from the new affine)."""
    image = nib.load(str(path))
    array = data(np.asarray(image.dataobj))
    new_affine = image.affine if affine is None else affine(image.affine.copy())
    nib.save(nib.Nifti1Image(array, new_affine), str(path))


def with_value(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def put(array: np.ndarray) -> np.ndarray:
        array = array.astype(np.float32)
        array[5, 5, 5] = value
        return array

    return put


def with_nan_affine(path: Path) -> None:
    def nan(a: np.ndarray) -> np.ndarray:
        a[0, 3] = np.nan
        return a

    rewrite(path, affine=nan)


def with_singular_affine(path: Path) -> None:
    """A singular sform (first column zero), no qform: the only affine readers can use is singular."""
    image = nib.load(str(path))
    singular = image.affine.copy()
    singular[:3, 0] = 0.0
    out = nib.Nifti1Image(np.asarray(image.dataobj), None, image.header)
    out.set_qform(None, code=0)
    out.set_sform(singular, code=1)
    nib.save(out, str(path))


def shifted(a: np.ndarray) -> np.ndarray:
    a[:3, 3] += 0.5
    return a


def to_2023_names(dataset: Path) -> None:
    """Rename a BraTS 2021-layout data set to BraTS 2023 names; labels 4 (ET) become 3."""
    for case_dir in sorted(p for p in dataset.iterdir() if p.is_dir()):
        index = int(case_dir.name.rsplit("_", 1)[1])
        new_id = f"BraTS-GLI-{index:05d}-000"
        for old, new in NAMES_2023.items():
            src = case_file(case_dir, old)
            dst = case_dir / f"{new_id}-{new}.nii.gz"
            src.rename(dst)
            if old == "seg":
                rewrite(dst, lambda a: np.where(a == 4, 3, a).astype(np.uint8))
        case_dir.rename(dataset / new_id)


def relabel_4_to_3(dataset: Path) -> None:
    for seg in sorted(dataset.glob("*/*_seg.nii.gz")):
        rewrite(seg, lambda a: np.where(a == 4, 3, a).astype(np.uint8))


class _RunsCode:
    """Pickles to a call of ``exec`` that creates ``path``: loading it must never run it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').write('code from a data file ran')",)


def write_malicious_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"train": _RunsCode(marker)}, protocol=2))


def write_malicious_checkpoint(path: Path, marker: Path) -> None:
    import torch

    torch.save({"trainer": _RunsCode(marker), "network": {}}, path)


def write_torchscript_with_expression(path: Path, marker: Path, bundle: Path) -> None:
    """A TorchScript 1x1x1 convolution; its embedded ``inference.json`` has a ``$`` expression creating ``marker``."""
    import warnings

    import torch

    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config["sw_overlap"] = f"$__import__('pathlib').Path({str(marker)!r}).touch() or 0.5"
    config["patch_size"] = list(PATCH)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(torch.nn.Conv3d(4, 3, 1))
        torch.jit.save(scripted, str(path), _extra_files={"inference.json": json.dumps(config)})


# ------------------------------------------------------------------------------------------------ checks


def valid_torch_file(path: Path) -> str | None:
    """None if ``path`` is a complete torch zip archive (checked without unpickling), else the problem."""
    if not path.is_file():
        return f"{path.name} missing"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"{path.name} unreadable ({type(exc).__name__})"
    return f"{path.name} has a corrupt member {bad}" if bad else None


def expect_files(*relative: str) -> Callable[[Path, list[StepResult]], list[str]]:
    def check(ws: Path, _: list[StepResult]) -> list[str]:
        return [f"{r} was not written" for r in relative if not (ws / r).is_file()]

    return check


def expect_good_checkpoints(*relative: str) -> Callable[[Path, list[StepResult]], list[str]]:
    def check(ws: Path, _: list[StepResult]) -> list[str]:
        return [f"no good copy: {p}" for r in relative if (p := valid_torch_file(ws / r))]

    return check


def _metrics(ws: Path, run: str = "run") -> dict:
    path = ws / run / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def expect_epoch(epoch: int, run: str = "run") -> Callable[[Path, list[StepResult]], list[str]]:
    def check(ws: Path, _: list[StepResult]) -> list[str]:
        found = _metrics(ws, run).get("epoch")
        return [] if found == epoch else [f"{run}/metrics.json epoch {found}, expected {epoch}"]

    return check


def _scalar_steps(log_dir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps: list[int] = []
    for events in sorted(log_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            steps += [e.step for e in accumulator.Scalars(tag)]
    return steps


def expect_final_validation(epoch: int) -> Callable[[Path, list[StepResult]], list[str]]:
    def check(ws: Path, _: list[StepResult]) -> list[str]:
        problems = [] if (ws / "run/models/model.pt").is_file() else ["no run/models/model.pt"]
        if "val/dice/mean" not in _metrics(ws).get("validation", {}):
            problems.append("no validation metric in run/metrics.json")
        steps = _scalar_steps(ws / "run", "val/dice/mean")
        if epoch not in steps:
            problems.append(f"no validation at the last epoch {epoch} (validated at epochs {steps})")
        return problems

    return check


def expect_one_events_file(ws: Path, _: list[StepResult]) -> list[str]:
    found = sorted(p.name for p in (ws / "run").glob("events.out.tfevents.*"))
    return [] if len(found) == 1 else [f"{len(found)} TensorBoard event files in run/ (old run's left mixed in)"]


def all_of(*checks: Callable[[Path, list[StepResult]], list[str]]) -> Callable[[Path, list[StepResult]], list[str]]:
    def check(ws: Path, results: list[StepResult]) -> list[str]:
        return [p for c in checks for p in c(ws, results)]

    return check


def _checkpoint_written(ws: Path) -> bool:
    return (ws / "run" / "models" / "checkpoint.pt").is_file()


def _killed_with_good_checkpoint(ws: Path, result: StepResult) -> list[str]:
    problems = [] if result.killed else [f"training ended (exit {result.returncode}) before it could be killed"]
    if bad := valid_torch_file(ws / "run" / "models" / "checkpoint.pt"):
        problems.append(f"after SIGKILL: {bad}")
    return problems


# ---------------------------------------------------------------------------------------------- row table


def _infer_case(damage: Callable[[Path], None] | None = None) -> Callable[[Path, Fixtures], list[Step]]:
    """``brats-cggm-infer`` on one case folder, after ``damage(case_dir)``."""

    def setup(ws: Path, fx: Fixtures) -> list[Step]:
        shutil.copytree(fx.bundle(), ws / "bundle")
        case_dir = copy_case(fx, ws, "in")
        if damage is not None:
            damage(case_dir)
        return [Step(infer("--input", f"in/{CASE}", "--bundle", "bundle", "--output-dir", "out"))]

    return setup


def _on(modality: str, damage: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda case_dir: damage(case_file(case_dir, modality))


def _infer_args(*args: str, extra: Callable[[Path, Fixtures], None] | None = None, explicit: bool = False):
    """``brats-cggm-infer`` on the clean case with ``args`` (explicit modality files when ``explicit``)."""

    def setup(ws: Path, fx: Fixtures) -> list[Step]:
        shutil.copytree(fx.bundle(), ws / "bundle")
        copy_case(fx, ws, "in")
        if extra is not None:
            extra(ws, fx)
        source = ["--input", f"in/{CASE}"]
        shown = source
        if explicit:
            source = [a for m in ("flair", "t1ce", "t1", "t2") for a in (f"--{m}", f"in/{CASE}/{CASE}_{m}.nii.gz")]
            shown = [f"--flair/--t1ce/--t1/--t2 in/{CASE}/{CASE}_<modality>.nii.gz"]
        model = ["--bundle", "bundle"] if "--bundle" not in args and "--torchscript" not in args else []
        return [Step(infer(*source, *model, *args, display=" ".join([*shown, *model, *args])))]

    return setup


def _evaluate_case(
    damage: Callable[[Path], None] | None = None,
    *args: str,
    keep_prediction: bool = True,
    extra: Callable[[Path, Fixtures], None] | None = None,
):
    """``brats-cggm-evaluate pred ref ARGS``, the phantom segmentation as the prediction, after ``damage(pred)``."""

    def setup(ws: Path, fx: Fixtures) -> list[Step]:
        copy_case(fx, ws, "ref")
        (ws / "pred").mkdir()
        prediction = ws / "pred" / f"{CASE}.nii.gz"
        if keep_prediction:
            shutil.copy(case_file(ws / "ref" / CASE, "seg"), prediction)
        if damage is not None:
            damage(prediction)
        if extra is not None:
            extra(ws, fx)
        return [Step(evaluate("pred", "ref", *args))]

    return setup


def _train_on(damage: Callable[[Path], None] | None = None, **overrides: str):
    """The training bundle on a copy of the phantom set, after ``damage(data_dir)``."""

    def setup(ws: Path, fx: Fixtures) -> list[Step]:
        data = copy_dataset(fx, ws)
        if damage is not None:
            damage(data)
        return [Step(train(**overrides))]

    return setup


def _train_again(prepare: Callable[[Path], None] | None = None, **overrides: str):
    """The training bundle into a copy of a finished 2-epoch run (``run/``), after ``prepare(run)``."""

    def setup(ws: Path, fx: Fixtures) -> list[Step]:
        copy_dataset(fx, ws)
        run = Path(shutil.copytree(fx.trained_run(), ws / "run"))
        if prepare is not None:
            prepare(run)
        return [Step(train(**overrides))]

    return setup


def _stale_tmp(run: Path) -> None:
    (run / "models" / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"")


def _crafted_resume(ws: Path, fx: Fixtures) -> list[Step]:
    copy_dataset(fx, ws)
    write_malicious_checkpoint(ws / "evil_checkpoint.pt", ws / MARKER)
    return [Step(train(resume="evil_checkpoint.pt"))]


def _kill_and_resume(ws: Path, fx: Fixtures) -> list[Step]:
    copy_dataset(fx, ws)
    first = Step(train(max_epochs="6"), kill_when=_checkpoint_written, check=_killed_with_good_checkpoint)
    return [first, Step(train(max_epochs="6", resume="true"))]


def _torchscript(ws: Path, fx: Fixtures) -> list[Step]:
    copy_case(fx, ws, "in")
    write_torchscript_with_expression(ws / "model.ts", ws / MARKER, fx.bundle())
    return [Step(infer("--input", f"in/{CASE}", "--torchscript", "model.ts", "--output-dir", "out"))]


def _training_checkpoint(ws: Path, fx: Fixtures) -> list[Step]:
    copy_case(fx, ws, "in")
    shutil.copytree(fx.trained_run(), ws / "trained")
    args = ("--input", f"in/{CASE}", "--bundle", "trained", "--checkpoint", "trained/models/checkpoint.pt")
    return [Step(infer(*args, "--output-dir", "out"))]


def _bundle_infer(damage: Callable[[Path], None] | None = None):
    def setup(ws: Path, fx: Fixtures) -> list[Step]:
        shutil.copytree(fx.bundle(), ws / "bundle")
        case_dir = copy_case(fx, ws, "cases")
        if damage is not None:
            damage(case_dir)
        return [Step(bundle_infer())]

    return setup


def _mult_pickle(ws: Path, fx: Fixtures) -> list[Step]:
    write_malicious_pickle(ws / "evil.pkl", ws / MARKER)
    code = "from brats_cggm.adapters.mult import load_mult_pickle; load_mult_pickle('evil.pkl')"
    return [Step(python(code, "python -c 'load_mult_pickle(\"evil.pkl\")'"))]


def _write_sentinel(relative: str) -> Callable[[Path, Fixtures], None]:
    def write(ws: Path, _: Fixtures) -> None:
        (ws / relative).parent.mkdir(parents=True, exist_ok=True)
        (ws / relative).write_bytes(b"an earlier result: must survive\n")

    return write


# ---------------------------------------------------------------------------------------------- the disk cache

#: ``brats-cggm-prepare`` with the settings of :func:`train` (so training finds the entries it builds).
PREPARE = ("data", "--cache-dir", "cache", "--patch-size", *(str(p) for p in PATCH))
ET_BIT = 4  # the enhancing tumour's bit in a packed label (regions TC, WT, ET)


def cache_entries(ws: Path, kind: str = "*", case: str = "*") -> list[Path]:
    """The entry folders under ``ws/cache`` (temporaries and lock files left out)."""
    return sorted(p for p in (ws / "cache").glob(f"{kind}-*/{case}-*") if p.is_dir() and not p.name.startswith("."))


def _in_cache(kind: str, name: str, change: str) -> Command:
    """A step changing ``name`` of the first ``kind`` entry under ``cache/`` (``change``: Python on ``p``)."""
    code = (
        "import glob, os, numpy as np; "
        f"p = sorted(glob.glob('cache/{kind}-*/*/{name}'))[0]; {change}; print('changed', p)"
    )
    return python(code, f"damage cache/{kind}-*/<first case>/{name}")


ZERO = "np.save(p, np.zeros_like(np.load(p)))"
TRUNCATE = "os.truncate(p, os.path.getsize(p) - 7)"
DELETE = "os.remove(p)"


def expect_output(*texts: str, step: int = -1) -> Callable[[Path, list[StepResult]], list[str]]:
    """The output (stdout and stderr) of step ``step`` says each of ``texts``."""

    def check(ws: Path, results: list[StepResult]) -> list[str]:
        output = results[step].stdout + results[step].stderr
        return [f"step {step} did not say {t!r}" for t in texts if t not in output]

    return check


def expect_valid_cache(ws: Path, results: list[StepResult]) -> list[str]:
    """Every entry under ``cache/`` passes the full check (checksums included); every step exited 0."""
    from brats_cggm.brats.data.cache.integrity import entry_problem

    problems = expect_all_steps_ok(ws, results)
    entries = cache_entries(ws)
    if not entries:
        problems.append("no cache entry")
    for entry in entries:
        if cause := entry_problem(entry, force=True):
            problems.append(f"{entry.relative_to(ws)}: {cause}")
    leftovers = [p.name for p in (ws / "cache").glob("*/.tmp*")]
    return problems + ([f"temporaries left: {leftovers}"] if leftovers else [])


def expect_all_steps_ok(ws: Path, results: list[StepResult]) -> list[str]:
    return [f"{r.display}: exit {_exit_text(r.returncode)}" for r in results if r.returncode != 0 and not r.killed]


def expect_images_nonzero(ws: Path, _: list[StepResult]) -> list[str]:
    return [f"{e.relative_to(ws)}: all-zero image" for e in cache_entries(ws) if not np.load(e / "image.npy").any()]


def _uncompressed_seg(ws: Path, case: str = CASE) -> Path:
    """Make ``case``'s segmentation an uncompressed ``.nii``: a change of voxels keeps the file's size."""
    seg = case_file(ws / "data" / case, "seg")
    image = nib.load(str(seg))
    target = seg.with_name(seg.name.removesuffix(".gz"))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine, image.header), str(target))
    seg.unlink()
    return target


#: Remove the enhancing tumour (4 -> 1) in place, same size, then put the old mtime back.
_ERASE_ET = (
    "import os, sys, nibabel as nib, numpy as np; p = sys.argv[1]; st = os.stat(p); "
    "img = nib.load(p); a = np.asarray(img.dataobj).copy(); n = int((a == 4).sum()); a[a == 4] = 1; "
    "nib.save(nib.Nifti1Image(a, img.affine, img.header), p); "
    "os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns)); "
    "assert n > 0 and os.path.getsize(p) == st.st_size; "
    "print(f'{p}: {n} enhancing voxels made necrotic, same size and mtime')"
)


def _erase_et(path: str) -> Command:
    return Command((sys.executable, "-c", _ERASE_ET, path), f"rewrite {path} without label 4 (same size, old mtime)")


def expect_no_et_in_cache(ws: Path, _: list[StepResult]) -> list[str]:
    """The case's entry holds no enhancing tumour, as its (changed) segmentation; it held some before."""
    entries = cache_entries(ws, case=CASE)
    if not entries:
        return [f"no entry of {CASE}"]
    bad = [e.relative_to(ws) for e in entries if (np.load(e / "label.npy") & ET_BIT).any()]
    return [f"{e}: still holds the old enhancing tumour (stale entry used)" for e in bad]


def _stale_same_size(ws: Path, fx: Fixtures) -> list[Step]:
    copy_dataset(fx, ws)
    seg = _uncompressed_seg(ws)
    return [Step(prepare(*PREPARE)), Step(_erase_et(str(seg.relative_to(ws)))), Step(prepare(*PREPARE))]


#: ``cp -a`` of a data set whose files all carry one timestamp, onto the folder the cache was built from.
_RESTORE_ARCHIVE = (
    "import os, shutil; shutil.rmtree('data'); shutil.copytree('archive', 'data', copy_function=shutil.copy2); "
    "print('data replaced by a copy of archive/ (timestamps kept)')"
)


def _fixed_timestamps(root: Path, ns: int = 1_600_000_000 * 10**9) -> None:
    for path in root.rglob("*"):
        os.utime(path, ns=(ns, ns))


def _cp_a_archive(ws: Path, fx: Fixtures) -> list[Step]:
    copy_dataset(fx, ws)
    seg = _uncompressed_seg(ws)
    shutil.copytree(ws / "data", ws / "archive")
    arch_seg = ws / "archive" / seg.relative_to(ws / "data")
    image = nib.load(str(arch_seg))
    array = np.asarray(image.dataobj).copy()
    array[array == 4] = 1
    nib.save(nib.Nifti1Image(array, image.affine, image.header), str(arch_seg))
    _fixed_timestamps(ws / "data")
    _fixed_timestamps(ws / "archive")
    restore = Command((sys.executable, "-c", _RESTORE_ARCHIVE), "cp -a archive data (one fixed timestamp)")
    return [Step(prepare(*PREPARE)), Step(restore), Step(prepare(*PREPARE))]


def _cache_then(damage: Command, last: Command) -> Callable[[Path, Fixtures], list[Step]]:
    """Build the cache (``brats-cggm-prepare``), damage it, then run ``last`` (a training or a prepare)."""

    def setup(ws: Path, fx: Fixtures) -> list[Step]:
        copy_dataset(fx, ws)
        return [Step(prepare(*PREPARE)), Step(damage), Step(last)]

    return setup


def _damaged_cache(name: str, damage: Command, then: Command, checks: tuple, what: str) -> Row:
    """A row: build the cache, damage one entry, then ``then`` (a training or a prepare) must repair it."""
    writes = ("cache/", "run/") if then.display.startswith("train") else ("cache/",)
    setup = _cache_then(damage, then)
    return Row(f"cache/{name}", setup, True, may_change=("cache/",), writes=writes, check=all_of(*checks), what=what)


def _verify_after_damages(ws: Path, fx: Fixtures) -> list[Step]:
    copy_dataset(fx, ws)
    damages = [_in_cache("train", "image.npy", TRUNCATE), _in_cache("val", "image.npy", ZERO)]
    return [Step(prepare(*PREPARE)), *map(Step, damages), Step(prepare(*PREPARE, "--verify"))]


def _cache_lock_present(ws: Path) -> bool:
    return any((ws / "cache").glob("*/*.lock"))


def _concurrent_prepares(ws: Path, fx: Fixtures) -> list[Step]:
    copy_dataset(fx, ws)
    first = Step(prepare(*PREPARE), background_until=_cache_lock_present)
    return [first, Step(prepare(*PREPARE))]


#: Hold one entry's build lock, as a writer in another container would (its PID means nothing here).
_HOLD_ENTRY_LOCK = (
    "import glob, time; from brats_cggm.core.locks import FileLock; "
    "entry = sorted(glob.glob('cache/train-*/*-*'))[0]; lock = FileLock(entry + '.lock').acquire(); "
    "open('holding', 'w').write(entry); time.sleep(600)"
)
_LIVE_TMP_NAME = ".tmp.4194301.0a0b.{entry}"  # a PID that no process here has: "dead" by the old PID rule


def _live_writer_elsewhere(ws: Path, fx: Fixtures) -> list[Step]:
    copy_dataset(fx, ws)
    prepared = threading.Event()

    def plant(ws: Path) -> bool:
        holding = ws / "holding"
        if not holding.is_file():
            return False
        entry = Path(holding.read_text())
        tmp = ws / entry.parent / _LIVE_TMP_NAME.format(entry=entry.name)
        tmp.mkdir(exist_ok=True)
        (tmp / "image.npy").write_bytes(b"being written by a live process elsewhere")
        return True

    def survived(ws: Path, result: StepResult) -> list[str]:
        found = list((ws / "cache").glob("train-*/.tmp.4194301.*"))
        for tmp in found:  # the writer "finishes" elsewhere
            shutil.rmtree(tmp, ignore_errors=True)
        prepared.set()
        return [] if found else ["the live writer's temporary folder was removed"]

    hold = Command((sys.executable, "-c", _HOLD_ENTRY_LOCK), "hold one entry's lock (another container's writer)")
    holder = Step(hold, kill_when=lambda _: prepared.is_set(), background_until=plant)
    return [Step(prepare(*PREPARE)), holder, Step(prepare(*PREPARE), check=survived)]


#: A 200 KiB file system for the cache, in a mount namespace of its own (gone when the command ends).
_FULL_DISK = (
    "mkdir -p full && mount -t tmpfs -o size=200k tmpfs full && {prepare}; code=$?; "
    "find full -mindepth 1 | sort > full_disk_leftovers.txt; exit $code"
)


def _full_disk(ws: Path, fx: Fixtures) -> list[Step]:
    copy_dataset(fx, ws)
    command = " ".join(prepare("data", "--cache-dir", "full/cache", "--patch-size", *map(str, PATCH)).argv)
    argv = ("unshare", "-m", "sh", "-c", _FULL_DISK.format(prepare=command))
    display = "brats-cggm-prepare data --cache-dir full/cache (a 200 KiB tmpfs)"
    return [Step(Command(argv, display))]


def expect_no_partial_entry(ws: Path, _: list[StepResult]) -> list[str]:
    """On the full file system: no temporary, no lock and no entry missing its ``meta.json`` was left."""
    listing = (ws / "full_disk_leftovers.txt").read_text().split() if (ws / "full_disk_leftovers.txt").exists() else []
    left = [p for p in listing if ".tmp" in p or p.endswith(".lock")]
    entries = {p for p in listing if p.count("/") == 3}
    incomplete = [e for e in entries if f"{e}/meta.json" not in listing]
    return [f"left on the full disk: {p}" for p in left + incomplete]


# ---------------------------------------------------------------------------------------------- data sets, outputs


def msd_from_phantoms(fixtures: Fixtures, root: Path, images: dict[str, str]) -> Path:
    """An MSD Task01 folder at ``root``: each phantom case as a 4-D image (FLAIR, T1w, t1gd, T2w) with MSD labels,
    stored at ``images[case]`` (relative to ``root``, ``../`` allowed); ``dataset.json`` lists them in that order."""
    brats_to_msd = np.array([0, 2, 1, 0, 3], dtype=np.uint8)
    training = []
    for case, relative in images.items():
        case_dir = fixtures.phantoms() / case
        loaded = [nib.load(str(case_file(case_dir, m))) for m in ("flair", "t1", "t1ce", "t2")]
        image = np.stack([np.asarray(x.dataobj) for x in loaded], axis=-1)
        label = brats_to_msd[np.asarray(nib.load(str(case_file(case_dir, "seg"))).dataobj)]
        entry = {}
        for kind, array in (("image", image), ("label", label)):
            path = root / relative.replace("imagesTr", "labelsTr" if kind == "label" else "imagesTr")
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, loaded[0].affine), str(path))
            entry[kind] = "./" + relative.replace("imagesTr", "labelsTr" if kind == "label" else "imagesTr")
        training.append(entry)
    meta = {
        "name": "BRATS",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": len(training),
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


CASES = tuple(f"BraTS2021_{i:05d}" for i in range(N_CASES))


def _msd_infer(images: dict[str, str]) -> Callable[[Path, Fixtures], list[Step]]:
    def setup(ws: Path, fx: Fixtures) -> list[Step]:
        shutil.copytree(fx.bundle(), ws / "bundle")
        msd_from_phantoms(fx, ws / "msd", images)
        return [Step(infer("--input", "msd", "--bundle", "bundle", "--output-dir", "out"))]

    return setup


def _outputs(ws: Path) -> list[Path]:
    return sorted((ws / "out").glob("*.nii.gz"))


def _interrupted_infer(ws: Path, fx: Fixtures) -> list[Step]:
    shutil.copytree(fx.bundle(), ws / "bundle")
    copy_dataset(fx, ws, "in")
    args = ("--input", "in", "--bundle", "bundle", "--output-dir", "out")
    first = Step(infer(*args), kill_when=lambda ws: len(_outputs(ws)) >= 1)
    return [first, Step(infer(*args, "--skip-existing"))]


def expect_every_case_segmented(ws: Path, results: list[StepResult]) -> list[str]:
    found = {p.name.removesuffix(".nii.gz") for p in _outputs(ws)}
    problems = [f"no output for {c}" for c in CASES if c not in found]
    if not results[0].killed:
        problems.append("the first run ended before it could be interrupted")
    return problems


def _diagnose_without_best(ws: Path, fx: Fixtures) -> list[Step]:
    copy_dataset(fx, ws)
    run = Path(shutil.copytree(fx.trained_run(), ws / "run"))
    (run / "models" / "model.pt").unlink()
    return [Step(diagnose("run", "--dataset-dir", "data", "--output-dir", "diag"))]


def expect_modes(folder: int, file: int, root: str = "ph") -> Callable[[Path, list[StepResult]], list[str]]:
    def check(ws: Path, _: list[StepResult]) -> list[str]:
        problems = []
        for path in sorted((ws / root).rglob("*")):
            mode, expected = path.stat().st_mode & 0o777, folder if path.is_dir() else file
            if mode != expected:
                problems.append(f"{path.relative_to(ws)}: mode {mode:o}, expected {expected:o}")
        return problems or ([] if any((ws / root).rglob("*")) else [f"nothing written in {root}"])

    return check


def _crafted_checkpoint(ws: Path, fx: Fixtures) -> list[Step]:
    shutil.copytree(fx.bundle(), ws / "bundle")
    copy_case(fx, ws, "in")
    write_malicious_checkpoint(ws / "evil.pt", ws / MARKER)
    args = ("--input", f"in/{CASE}", "--bundle", "bundle", "--checkpoint", "evil.pt", "--output-dir", "out")
    return [Step(infer(*args))]


def _crafted_init_encoders(ws: Path, fx: Fixtures) -> list[Step]:
    copy_dataset(fx, ws)
    write_malicious_checkpoint(ws / "evil.pt", ws / MARKER)
    return [Step(train(init_encoders="evil.pt"))]


def expect_no_unsafe_advice(ws: Path, results: list[StepResult]) -> list[str]:
    """The refusal never advises loading the file with ``weights_only`` off (that would run its code)."""
    text = results[-1].stdout + results[-1].stderr
    return (
        ["the message mentions weights_only (torch's advice to load the file unsafely)"]
        if "weights_only" in text
        else []
    )


def _linked_case(ws: Path, fx: Fixtures) -> list[Step]:
    copy_dataset(fx, ws, "elsewhere")
    (ws / "data").mkdir()
    for case in CASES[:2]:
        shutil.move(ws / "elsewhere" / case, ws / "data" / case)
    os.symlink(ws / "elsewhere" / CASES[2], ws / "data" / CASES[2])
    return [Step(train(cache_dir="cache"))]


# ---------------------------------------------------------------------------------------------- runs side by side


def _failed_first_draw_retry(ws: Path, fx: Fixtures) -> list[Step]:
    data = copy_dataset(fx, ws)
    victim = case_file(data / CASE, "flair")
    shutil.copy(victim, ws / "flair.backup")
    truncate(victim)
    restore = Command(("cp", "flair.backup", str(victim.relative_to(ws))), f"cp flair.backup data/{CASE}/...")
    # cache none: the damage shows at the first draw, after the run has opened its folder
    return [Step(train(cache="none")), Step(restore), Step(train(cache="none"))]


def expect_dead_run_set_aside(ws: Path, results: list[StepResult]) -> list[str]:
    problems = [] if results[0].returncode not in (0, None) else ["the first run did not fail"]
    if len(list((ws / "run").glob("events.out.tfevents.*"))) != 1:
        problems.append("not exactly one event file in run/ (the dead run's steps mixed in)")
    if not list((ws / "run" / "aborted").glob("*/events.out.tfevents.*")):
        problems.append("the dead run's event file is not in run/aborted/")
    return problems


LOCK = "run/.run.lock"
SECOND_RUN_EPOCHS = 150


def _lock_held(ws: Path) -> bool:
    lock = ws / LOCK
    return lock.is_file() and lock.stat().st_size > 0


def _second_run_into_a_running_folder(ws: Path, fx: Fixtures) -> list[Step]:
    copy_dataset(fx, ws)
    # long enough to outlast the second command's start-up
    command = train(max_epochs=str(SECOND_RUN_EPOCHS), resume="true", cache_dir="cache")
    return [Step(command, background_until=_lock_held), Step(command)]


def expect_first_run_finished(ws: Path, results: list[StepResult]) -> list[str]:
    first = results[0]
    problems = [] if first.returncode == 0 else [f"the first run: exit {_exit_text(first.returncode)}"]
    problems += expect_epoch(SECOND_RUN_EPOCHS)(ws, results) + expect_one_events_file(ws, results)
    return problems + ([f"{LOCK} left behind"] if (ws / LOCK).exists() else [])


def _rank_pids(launcher: subprocess.Popen, rank: int) -> list[int]:
    """The PIDs of ``torchrun``'s worker ``rank`` (read from each process's environment)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = environ.read_bytes().split(b"\0")
            status = (environ.parent / "status").read_text()
        except OSError:
            continue
        ppid = int(re.search(r"^PPid:\s*(\d+)", status, re.M).group(1))
        if f"RANK={rank}".encode() in variables and _descends(ppid, launcher.pid):
            found.append(int(environ.parent.name))  # the worker and its DataLoader workers
    return found


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        pid = int(re.search(r"^PPid:\s*(\d+)", status, re.M).group(1))
    return False


def _freeze_rank_1(launcher: subprocess.Popen) -> None:
    for pid in _rank_pids(launcher, 1):
        os.kill(pid, signal.SIGSTOP)


def _frozen_rank(ws: Path, fx: Fixtures) -> list[Step]:
    copy_dataset(fx, ws)
    command = torchrun_train(max_epochs="50", distributed_timeout="30", cache_dir="cache", val_fraction="0.4")
    return [Step(command, act_when=(_checkpoint_written, _freeze_rank_1))]


def expect_quick_failure(limit_s: float) -> Callable[[Path, list[StepResult]], list[str]]:
    def check(ws: Path, results: list[StepResult]) -> list[str]:
        seconds = results[-1].seconds
        return [] if seconds < limit_s else [f"took {seconds:.0f} s (limit {limit_s:.0f} s)"]

    return check


OUT = f"out/{CASE}.nii.gz"
T1, T1CE, T2 = (f"{CASE}_{m}.nii.gz" for m in ("t1", "t1ce", "t2"))
PRED = f"pred/{CASE}.nii.gz"
EVAL_RESULTS = ("pred/evaluation.csv", "pred/evaluation_summary.json", "pred/evaluation.md")
TRAIN_DEBRIS = ("run/",)  # a failed training run may leave its (empty) log folder


def _infer_bad(name: str, modality: str, damage: Callable[[Path], None], what: str) -> Row:
    message = (f"{CASE}_{modality}.nii.gz",)
    return Row(f"infer/{name}", _infer_case(_on(modality, damage)), False, message, one_line=True, what=what)


def _evaluate_bad(name: str, damage: Callable[[Path], None], what: str) -> Row:
    return Row(f"evaluate/{name}", _evaluate_case(damage), False, (PRED,), True, writes=EVAL_RESULTS, what=what)


def _all_modalities(damage: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(case_dir: Path) -> None:
        for modality in ("flair", "t1ce", "t1", "t2"):
            damage(case_file(case_dir, modality))

    return apply


ROWS: tuple[Row, ...] = (
    # ----------------------------------------------------------------------------- brats-cggm-infer
    Row("infer/clean", _infer_case(), True, writes=("out/",), check=expect_files(OUT), what="control: a good case"),
    _infer_bad("truncated", "t1", truncate, "truncated .nii.gz"),
    _infer_bad("zero-byte", "t1", make_empty, "zero-byte file"),
    _infer_bad("not-nifti", "t2", make_text, "text file named .nii.gz"),
    _infer_bad("2d", "t2", lambda p: rewrite(p, lambda a: a[:, :, 0]), "2-D volume"),
    _infer_bad("5d", "t2", lambda p: rewrite(p, lambda a: np.stack([a, a], -1)[..., None, :]), "5-D volume"),
    _infer_bad("nan", "t2", lambda p: rewrite(p, with_value(np.nan)), "a NaN voxel"),
    _infer_bad("inf", "t2", lambda p: rewrite(p, with_value(np.inf)), "an Inf voxel"),
    _infer_bad("all-zero", "t1", lambda p: rewrite(p, np.zeros_like), "an all-zero modality"),
    _infer_bad("shape", "t1ce", lambda p: rewrite(p, lambda a: a[:-1]), "one modality 1 voxel shorter"),
    _infer_bad("affine", "t1ce", lambda p: rewrite(p, affine=shifted), "one modality moved by 0.5 mm"),
    _infer_bad("nan-affine", "t1ce", with_nan_affine, "NaN in one modality's affine"),
    Row(
        "infer/singular-affine",
        _infer_case(_all_modalities(with_singular_affine)),
        False,
        (f"{CASE}_",),
        one_line=True,
        what="singular affine (every modality)",
    ),
    Row(
        "infer/missing-modality",
        _infer_case(lambda c: case_file(c, "t1").unlink()),
        False,
        (CASE, "t1"),
        one_line=True,
        what="no t1 file",
    ),
    Row(
        "infer/existing-output",
        _infer_args("--output-dir", "out", extra=_write_sentinel(OUT)),
        False,
        (OUT.split("/")[1], "--overwrite"),
        one_line=True,
        what="output exists, no --overwrite",
    ),
    Row(
        "infer/output-is-file",
        _infer_args("--output-dir", "blocked_out", extra=_write_sentinel("blocked_out")),
        False,
        ("blocked_out",),
        one_line=True,
        what="unwritable output (the path is a file)",
    ),
    Row(
        "infer/case-id-dotdot",
        _infer_args("--case-id", "../x", "--output-dir", "out", explicit=True),
        False,
        ("--case-id",),
        one_line=True,
        what="--case-id ../x",
    ),
    Row(
        "infer/case-id-hidden",
        _infer_args("--case-id", ".hidden", "--output-dir", "out", explicit=True),
        False,
        ("--case-id",),
        one_line=True,
        what="--case-id .hidden",
    ),
    Row(
        "infer/overlap",
        _infer_args("--overlap", "1.5", "--output-dir", "out"),
        False,
        ("--overlap",),
        one_line=True,
        what="--overlap 1.5",
    ),
    Row(
        "infer/corrupt-checkpoint",
        _infer_args(
            "--bundle",
            "bundle",
            "--checkpoint",
            "bad.pt",
            "--output-dir",
            "out",
            extra=lambda ws, _: (ws / "bad.pt").write_bytes(b"PK\x03\x04 garbage, not a checkpoint"),
        ),
        False,
        ("bad.pt",),
        one_line=True,
        what="corrupt --checkpoint",
    ),
    Row(
        "infer/training-checkpoint",
        _training_checkpoint,
        True,
        writes=("out/",),
        check=expect_files(OUT),
        what="a training checkpoint.pt as --checkpoint",
    ),
    Row(
        "infer/torchscript-expression",
        _torchscript,
        True,
        writes=("out/",),
        marker=True,
        what="TorchScript whose embedded config has a `$` expression",
    ),
    # ----------------------------------------------------------------------------- brats-cggm-evaluate
    Row(
        "evaluate/clean",
        _evaluate_case(),
        True,
        writes=EVAL_RESULTS,
        check=expect_files(*EVAL_RESULTS),
        what="control: the reference as prediction",
    ),
    _evaluate_bad("truncated", truncate, "truncated prediction"),
    _evaluate_bad("zero-byte", make_empty, "zero-byte prediction"),
    _evaluate_bad("not-nifti", make_text, "text file named .nii.gz"),
    _evaluate_bad("2d", lambda p: rewrite(p, lambda a: a[:, :, 0]), "2-D prediction"),
    _evaluate_bad("5d", lambda p: rewrite(p, lambda a: np.stack([a, a], -1)[..., None, :]), "5-D prediction"),
    _evaluate_bad("nan", lambda p: rewrite(p, with_value(np.nan)), "a NaN voxel"),
    _evaluate_bad("inf", lambda p: rewrite(p, with_value(np.inf)), "an Inf voxel"),
    Row(
        "evaluate/all-zero",
        _evaluate_case(lambda p: rewrite(p, np.zeros_like)),
        True,
        writes=EVAL_RESULTS,
        what="all-zero prediction (valid: no tumour)",
    ),
    _evaluate_bad("shape", lambda p: rewrite(p, lambda a: a[:-1]), "prediction 1 voxel shorter"),
    _evaluate_bad("affine", lambda p: rewrite(p, affine=shifted), "prediction moved by 0.5 mm"),
    _evaluate_bad("nan-affine", with_nan_affine, "NaN in the prediction's affine"),
    Row(
        "evaluate/singular-affine",
        _evaluate_case(
            with_singular_affine, extra=lambda ws, _: with_singular_affine(case_file(ws / "ref" / CASE, "seg"))
        ),
        False,
        (".nii.gz: ",),
        True,
        writes=EVAL_RESULTS,
        what="singular affine (prediction and reference)",
    ),
    Row(
        "evaluate/missing-prediction",
        _evaluate_case(keep_prediction=False),
        False,
        (CASE,),
        True,
        writes=EVAL_RESULTS,
        what="no prediction for the case",
    ),
    Row(
        "evaluate/existing-output",
        _evaluate_case(extra=_write_sentinel("pred/evaluation.csv")),
        False,
        ("evaluation.csv", "--overwrite"),
        True,
        what="results exist, no --overwrite",
    ),
    Row(
        "evaluate/output-is-file",
        _evaluate_case(None, "--output-dir", "blocked_out", extra=_write_sentinel("blocked_out")),
        False,
        ("blocked_out",),
        True,
        what="unwritable --output-dir (the path is a file)",
    ),
    # ----------------------------------------------------------------------------- training bundle
    Row(
        "train/label-5",
        _train_on(lambda d: rewrite(case_file(d / CASE, "seg"), lambda a: np.where(a == 1, 5, a).astype(np.uint8))),
        False,
        (f"{CASE}_seg.nii.gz",),
        writes=TRAIN_DEBRIS,
        what="a segmentation with label 5",
    ),
    Row(
        "train/2023-labels",
        _train_on(relabel_4_to_3),
        False,
        ("_seg.nii.gz", "brats2023"),
        writes=TRAIN_DEBRIS,
        what="2021 file names, 2023 labels (1/2/3)",
    ),
    Row(
        "train/nan-voxel",
        _train_on(lambda d: rewrite(case_file(d / CASE, "flair"), with_value(np.nan))),
        False,
        (f"{CASE}_flair.nii.gz",),
        writes=TRAIN_DEBRIS,
        what="a NaN voxel in a training image",
    ),
    Row(
        "train/truncated",
        _train_on(lambda d: truncate(case_file(d / CASE, "t1"))),
        False,
        (f"{CASE}_t1.nii.gz",),
        writes=TRAIN_DEBRIS,
        what="a truncated modality file",
    ),
    Row(
        "train/epochs-3-val-2",
        _train_on(max_epochs="3", val_interval="2"),
        True,
        writes=("run/",),
        check=expect_final_validation(3),
        what="--max_epochs 3 --val_interval 2",
    ),
    Row(
        "train/existing-run",
        _train_again(),
        False,
        ("--resume",),
        what="into an existing output_dir without --resume",
    ),
    Row(
        "train/existing-run-overwrite",
        _train_again(overwrite="true"),
        True,
        may_change=("run/",),
        writes=("run/",),
        check=all_of(expect_epoch(1), expect_one_events_file),
        what="into an existing output_dir with --overwrite true",
    ),
    Row(
        "train/resume-corrupt-checkpoint",
        _train_again(lambda run: truncate(run / "models" / "checkpoint.pt"), resume="true", max_epochs="2"),
        True,
        may_change=("run/",),
        writes=("run/",),
        # one epoch after the fallback: its save must not rotate the damaged file over the good one
        check=all_of(
            expect_epoch(2), expect_good_checkpoints("run/models/checkpoint.pt", "run/models/checkpoint.prev.pt")
        ),
        what="--resume true after checkpoint.pt was truncated",
    ),
    Row(
        "train/stale-tmp",
        _train_again(_stale_tmp, resume="true", max_epochs="3"),
        True,
        may_change=("run/",),
        writes=("run/",),
        check=expect_epoch(3),
        what="a stale 0-byte models/.checkpoint.pt.*.tmp",
    ),
    Row(
        "train/crafted-resume",
        _crafted_resume,
        False,
        ("evil_checkpoint.pt",),
        writes=TRAIN_DEBRIS,
        marker=True,
        check=expect_no_unsafe_advice,
        what="--resume FILE holding a pickle that runs code",
    ),
    Row(
        "train/brats2023-patterns",
        _train_on(to_2023_names, patterns="brats2023"),
        True,
        writes=("run/",),
        check=expect_files("run/models/model.pt"),
        what="BraTS 2023 names, --patterns brats2023",
    ),
    Row(
        "train/brats2023-auto",
        _train_on(to_2023_names),
        True,
        writes=("run/",),
        check=expect_files("run/models/model.pt"),
        what="BraTS 2023 names, default patterns (auto-detect)",
    ),
    Row(
        "train/kill-and-resume",
        _kill_and_resume,
        True,
        may_change=("run/",),
        writes=("run/",),
        check=all_of(expect_epoch(6), expect_good_checkpoints("run/models/checkpoint.pt")),
        what="SIGKILL after the first checkpoint, then --resume true",
    ),
    # ----------------------------------------------------------------------------- data sets and outputs
    Row(
        "infer/msd-duplicate-ids",
        _msd_infer({CASES[0]: "imagesTr/a/BRATS_001.nii.gz", CASES[1]: "imagesTr/b/BRATS_001.nii.gz"}),
        False,
        ("imagesTr/a/BRATS_001.nii.gz", "imagesTr/b/BRATS_001.nii.gz", "duplicate case id"),
        one_line=True,
        what="an MSD dataset.json with two cases named BRATS_001 (in imagesTr/a and imagesTr/b)",
    ),
    Row(
        "infer/msd-outside-entry",
        _msd_infer({CASES[0]: "imagesTr/BRATS_001.nii.gz", CASES[1]: "../outside/imagesTr/BRATS_002.nii.gz"}),
        True,
        ("outside the data set folder", "outside/imagesTr/BRATS_002.nii.gz"),
        writes=("out/",),
        check=expect_files("out/BRATS_001.nii.gz", "out/BRATS_002.nii.gz"),
        what="an MSD entry ../outside/...: read, with a warning naming it",
    ),
    Row(
        "train/linked-case",
        _linked_case,
        True,
        writes=("run/", "cache/"),
        check=all_of(
            expect_output("read from outside the data set folder", f"{CASES[2]}"), expect_files("run/models/model.pt")
        ),
        what="a case folder symlinked from outside the data set: trained, with a warning naming it",
    ),
    Row(
        "infer/interrupted-skip-existing",
        _interrupted_infer,
        True,
        writes=("out/",),
        check=all_of(expect_output("skipped (outputs exist)"), expect_every_case_segmented),
        what="brats-cggm-infer killed after its first case, rerun with --skip-existing",
    ),
    Row(
        "infer/skip-existing-and-overwrite",
        _infer_args("--skip-existing", "--overwrite", "--output-dir", "out"),
        False,
        ("--skip-existing", "--overwrite"),
        one_line=True,
        what="--skip-existing with --overwrite",
    ),
    Row(
        "infer/crafted-checkpoint",
        _crafted_checkpoint,
        False,
        ("evil.pt", "refused"),
        one_line=True,
        marker=True,
        check=expect_no_unsafe_advice,
        what="--checkpoint holding a pickle that runs code",
    ),
    Row(
        "train/crafted-init-encoders",
        _crafted_init_encoders,
        False,
        ("evil.pt", "refused"),
        writes=TRAIN_DEBRIS,
        marker=True,
        check=expect_no_unsafe_advice,
        what="--init_encoders holding a pickle that runs code",
    ),
    Row(
        "diagnose/no-best-weights",
        _diagnose_without_best,
        False,
        ("run/models/model.pt", "--weights last"),
        one_line=True,
        what="--weights best (the default) on a run without models/model.pt",
    ),
    Row(
        "phantoms/umask",
        lambda ws, fx: [Step(phantoms("ph", "--n", "1", "--shape", "24", "24", "24", umask=0o027))],
        True,
        writes=("ph/",),
        check=expect_modes(0o750, 0o640),
        what="phantoms written under umask 027: folders 750, files 640",
    ),
    # ----------------------------------------------------------------------------- runs side by side
    Row(
        "train/failed-first-draw-retry",
        _failed_first_draw_retry,
        True,
        may_change=("data/",),
        writes=("run/",),
        check=all_of(expect_dead_run_set_aside, expect_files("run/models/model.pt")),
        what="a run that failed at its first draw (truncated input), retried by the identical command once fixed",
    ),
    Row(
        "train/second-run-same-folder",
        _second_run_into_a_running_folder,
        False,
        ("run", "in use by pid"),
        writes=("run/", "cache/"),
        check=expect_first_run_finished,
        what="the same command (--resume true) started while the first run still trains in run/",
    ),
    Row(
        "distributed/frozen-rank",
        _frozen_rank,
        False,
        ("rank 1",),
        writes=("run/", "cache/"),
        check=expect_quick_failure(300),
        what="2 ranks under torchrun, rank 1 frozen (SIGSTOP) after the first checkpoint; distributed_timeout 30 s",
    ),
    # ----------------------------------------------------------------------------- the disk cache
    Row(
        "cache/stale-same-size-mtime",
        _stale_same_size,
        True,
        may_change=("data/",),
        writes=("cache/",),
        check=all_of(expect_all_steps_ok, expect_output("changed; rebuilding"), expect_no_et_in_cache),
        what="a segmentation rewritten at the same size, its mtime restored",
    ),
    Row(
        "cache/cp-a-fixed-timestamp",
        _cp_a_archive,
        True,
        may_change=("data/",),
        writes=("cache/", "data/"),
        check=all_of(expect_all_steps_ok, expect_output("changed; rebuilding"), expect_no_et_in_cache),
        what="the data set replaced by cp -a of an archive with one timestamp (one case differs)",
    ),
    _damaged_cache(
        "zeroed-image",
        _in_cache("train", "image.npy", ZERO),
        train(cache_dir="cache"),
        (expect_output("image.npy checksum mismatch; rebuilding"), expect_images_nonzero),
        "an entry's image.npy overwritten with zeros (same shape), then training",
    ),
    _damaged_cache(
        "truncated-image",
        _in_cache("train", "image.npy", TRUNCATE),
        train(cache_dir="cache"),
        (expect_output("(truncated or overwritten); rebuilding"), expect_valid_cache),
        "a truncated image.npy, then training",
    ),
    _damaged_cache(
        "missing-label",
        _in_cache("train", "label.npy", DELETE),
        prepare(*PREPARE),
        (expect_output("label.npy missing; rebuilding"), expect_valid_cache),
        "a training entry without label.npy, then brats-cggm-prepare",
    ),
    _damaged_cache(
        "missing-fg-indices",
        _in_cache("train", "fg_indices.npy", DELETE),
        train(cache_dir="cache"),
        (expect_output("fg_indices.npy missing; rebuilding"), expect_valid_cache),
        "a training entry without fg_indices.npy, then training",
    ),
    _damaged_cache(
        "truncated-fg-indices",
        _in_cache("train", "fg_indices.npy", TRUNCATE),
        train(cache_dir="cache"),
        (expect_output("fg_indices.npy", "; rebuilding"), expect_valid_cache),
        "a truncated fg_indices.npy, then training",
    ),
    _damaged_cache(
        "val-without-label",
        _in_cache("val", "label.npy", DELETE),
        train(cache_dir="cache"),
        (expect_output("label.npy missing; rebuilding"), expect_valid_cache),
        "a validation entry without its label, then training",
    ),
    Row(
        "cache/prepare-verify",
        _verify_after_damages,
        True,
        may_change=("cache/",),
        writes=("cache/",),
        check=all_of(expect_output("checksum mismatch", "(truncated or overwritten)", "1 rebuilt"), expect_valid_cache),
        what="brats-cggm-prepare --verify after a truncated and a zeroed entry",
    ),
    Row(
        "cache/concurrent-prepares",
        _concurrent_prepares,
        True,
        writes=("cache/",),
        check=expect_valid_cache,
        what="two brats-cggm-prepare filling one empty cache at once",
    ),
    Row(
        "cache/live-writer-elsewhere",
        _live_writer_elsewhere,
        True,
        writes=("cache/", "holding"),
        check=expect_valid_cache,
        what="a writer in another PID namespace holds an entry (its temporary folder's PID is dead here)",
    ),
    Row(
        "cache/full-disk",
        _full_disk,
        False,
        ("no space left on device in full/cache", "MB per case"),
        one_line=True,
        writes=("full", "full_disk_leftovers.txt"),
        check=expect_no_partial_entry,
        what="the cache's file system is full (a 200 KiB tmpfs)",
    ),
    # ----------------------------------------------------------------------------- inference bundle, adapters
    Row(
        "bundle-infer/clean",
        _bundle_infer(),
        True,
        writes=("out/",),
        check=expect_files(OUT),
        what="control: inference.yaml on a good case",
    ),
    Row(
        "bundle-infer/nan",
        _bundle_infer(_on("t2", lambda p: rewrite(p, with_value(np.nan)))),
        False,
        (T2,),
        what="inference.yaml on a case with a NaN voxel",
    ),
    Row(
        "adapter/mult-pickle",
        _mult_pickle,
        False,
        ("evil.pkl",),
        marker=True,
        what="MulT pickle whose __reduce__ runs code",
    ),
)

# ---------------------------------------------------------------------------------------------- running


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONWARNINGS"] = env.get("PYTHONWARNINGS", "ignore::DeprecationWarning")
    return env


class _Running:
    """A step's process, its captured output and the state of its poll conditions."""

    def __init__(self, step: Step, cwd: Path) -> None:
        self.step, self.cwd = step, cwd
        self.logs = Path(tempfile.mkdtemp(prefix=".step.", dir=cwd.parent))
        self.out, self.err = (self.logs / "out").open("w+b"), (self.logs / "err").open("w+b")
        self.start = time.monotonic()
        self.killed = self.timed_out = self.acted = False
        self.process = subprocess.Popen(step.command.argv, cwd=cwd, stdout=self.out, stderr=self.err, env=_env())

    def poll(self, timeout: float) -> bool:
        """Check the conditions once; True while the process runs."""
        if self.process.poll() is not None:
            return False
        if time.monotonic() - self.start > timeout:
            self.process.kill()
            self.timed_out = True
        elif self.step.kill_when is not None and self.step.kill_when(self.cwd):
            os.kill(self.process.pid, signal.SIGKILL)
            self.killed = True
        elif self.step.act_when is not None and not self.acted and self.step.act_when[0](self.cwd):
            self.step.act_when[1](self.process)
            self.acted = True
        if self.killed or self.timed_out:
            self.process.wait()
            return False
        return True

    def finish(self, timeout: float, background: bool = False) -> StepResult:
        """Wait for the end (or the timeout), then the result; output files removed."""
        while self.poll(timeout):
            time.sleep(0.02)
        _kill_descendants(self.process.pid)
        self.out.seek(0)
        self.err.seek(0)
        stdout, stderr = self.out.read().decode(errors="replace"), self.err.read().decode(errors="replace")
        self.out.close()
        self.err.close()
        shutil.rmtree(self.logs, ignore_errors=True)
        code = None if self.timed_out else self.process.returncode
        elapsed = time.monotonic() - self.start
        result = StepResult(
            self.step.command.display, code, stdout, stderr, elapsed, self.killed, background=background
        )
        if self.step.check is not None:
            result.problems = self.step.check(self.cwd, result)
        return result


def _kill_descendants(pid: int) -> None:
    """SIGKILL what a step left running (a frozen or orphaned worker), found through ``/proc``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    pending, found = [pid], []
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    for child in found:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_step(step: Step, cwd: Path, timeout: float = STEP_TIMEOUT_S) -> StepResult:
    """Run one step in ``cwd`` (output captured in files beside it), killing it when its condition holds."""
    return _Running(step, cwd).finish(timeout)


def run_steps(steps: Sequence[Step], cwd: Path, timeout: float = STEP_TIMEOUT_S) -> list[StepResult]:
    """Run a row's steps in order; a background step goes on beside the next ones, and is waited for last."""
    results: list[StepResult | None] = []
    background: list[tuple[int, _Running]] = []
    for step in steps:
        if step.background_until is None:
            results.append(run_step(step, cwd, timeout))
            continue
        running = _Running(step, cwd)
        while running.poll(timeout) and not step.background_until(cwd):
            time.sleep(0.02)
        background.append((len(results), running))
        results.append(None)
    for index, running in background:
        results[index] = running.finish(timeout, background=True)
    return [r for r in results if r is not None]


# torchrun prefixes each line of a worker's output with "[rankN]:"
_ERROR_LINE = re.compile(
    r"^(?:\[rank\d+\]:\s*)?(?:(?:[\w.-]+: )?(?:error|warning): |Fatal Python error"
    r"|(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception)\b(?::|$))"
)


def decisive(results: Sequence[StepResult]) -> StepResult:
    """The step a row is judged by: its last one not run in the background."""
    return [r for r in results if not r.background][-1]


def error_lines(result: StepResult) -> list[str]:
    """Lines that report a problem: ``error: ...``/``warning: ...`` (our CLIs, argparse), a traceback's exceptions."""
    lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines()]
    return [line for line in lines if _ERROR_LINE.search(line)]


def first_error_line(result: StepResult, prefer: str = "") -> str:
    """The first error line (the first naming ``prefer`` when one does); else the last line of stderr."""
    lines = error_lines(result)
    if prefer:
        lines = [line for line in lines if prefer in line] or lines
    if lines:
        return lines[0]
    tail = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return tail[-1] if tail and result.returncode else ""


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """``relative path -> (size, sha256)`` of every file under ``root``."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[path.relative_to(root).as_posix()] = (path.stat().st_size, digest)
    return found


@dataclass
class Verdict:
    """The judged outcome of one row. ``None`` in a check column: not relevant to the row."""

    exit_ok: bool
    message_ok: bool | None
    nothing_lost: bool
    nothing_half_written: bool
    no_code_ran: bool | None
    outcome_ok: bool | None
    problems: list[str]

    @property
    def as_expected(self) -> bool:
        checks = (self.exit_ok, self.message_ok, self.nothing_lost, self.nothing_half_written)
        return all(c is not False for c in (*checks, self.no_code_ran, self.outcome_ok))


def _under(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == p.rstrip("/") or path.startswith(p if p.endswith("/") else p + "/") for p in prefixes)


def judge(
    row: Row,
    ws: Path,
    before: dict[str, tuple[int, str]],
    after: dict[str, tuple[int, str]],
    results: list[StepResult],
) -> Verdict:
    """Compare what happened with what ``row`` expects."""
    problems: list[str] = []
    last = decisive(results)
    code = last.returncode
    if row.expect_ok:
        exit_ok = code == 0
    else:
        exit_ok = code is not None and code > 0
    if not exit_ok:
        problems.append(f"exit {_exit_text(code)}, expected {'0' if row.expect_ok else 'non-zero'}")

    message_ok = None
    if row.message:
        text = "\n".join(error_lines(last))
        missing = [m for m in row.message if m not in text]
        message_ok = not missing
        if missing:
            problems.append(f"the error does not name {', '.join(repr(m) for m in missing)}")
        if row.one_line and "Traceback (most recent call last)" in last.stderr:
            message_ok = False
            problems.append("a traceback, not a one-line error")

    changed = [p for p in before if p in after and after[p] != before[p] and not _under(p, row.may_change)]
    removed = [p for p in before if p not in after and not _under(p, row.may_change)]
    nothing_lost = not changed and not removed
    if not nothing_lost:
        problems.append(
            "pre-existing files " + ", ".join([*(f"changed: {p}" for p in changed), *(f"gone: {p}" for p in removed)])
        )

    new = [p for p in after if p not in before and p != MARKER]
    tmp = [p for p in after if any(part.endswith(".tmp") for part in p.split("/"))]
    empty = [p for p in after if after[p][0] == 0 and before.get(p) != after[p] and p != MARKER]
    stray = [p for p in new if not _under(p, row.writes)]
    half = sorted(set(tmp + empty + stray))
    if half:
        problems.append(
            "half-written or stray: " + ", ".join(half[:6]) + (f" (+{len(half) - 6})" if len(half) > 6 else "")
        )

    no_code_ran = None
    if row.marker:
        no_code_ran = not (ws / MARKER).exists()
        if not no_code_ran:
            problems.append(f"code from a data file ran ({MARKER} was created)")

    outcome_problems = [p for r in results for p in r.problems or []]
    outcome_ok = None
    if row.check is not None or any(r.problems is not None for r in results):
        if row.check is not None:
            outcome_problems += row.check(ws, results)
        outcome_ok = not outcome_problems
    problems += outcome_problems
    return Verdict(exit_ok, message_ok, nothing_lost, not half, no_code_ran, outcome_ok, problems)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "timeout"
    if code < 0:
        try:
            return f"{signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return str(code)


@dataclass
class RowResult:
    """A row's run: its steps, the file changes, the verdict (or the setup error)."""

    row: Row
    results: list[StepResult]
    new: list[str]
    changed: list[str]
    removed: list[str]
    verdict: Verdict
    seconds: float
    folder: Path


def run_row(row: Row, fixtures: Fixtures, tmp_root: Path) -> RowResult:
    """Set ``row`` up in a fresh folder under ``tmp_root``, run its steps, judge."""
    start = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix=row.name.replace("/", "_") + ".", dir=tmp_root))
    ws = folder / "ws"
    ws.mkdir()
    try:
        steps = row.setup(ws, fixtures)
    except Exception as exc:
        verdict = Verdict(False, None, True, True, None, None, [f"setup failed: {type(exc).__name__}: {exc}"])
        return RowResult(row, [], [], [], [], verdict, time.monotonic() - start, folder)
    before = snapshot(ws)
    results = run_steps(steps, ws)
    after = snapshot(ws)
    verdict = judge(row, ws, before, after, results)
    new = sorted(p for p in after if p not in before)
    changed = sorted(p for p in before if p in after and after[p] != before[p])
    removed = sorted(p for p in before if p not in after)
    return RowResult(row, results, new, changed, removed, verdict, time.monotonic() - start, folder)


# ---------------------------------------------------------------------------------------------- report


def _cell(text: str, limit: int = 150) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|") or "—"


def _mark(value: bool | None) -> str:
    return "—" if value is None else ("✔" if value else "✘")


def _files_left(result: RowResult) -> str:
    def listing(paths: list[str], limit: int = 3) -> str:
        shown = ", ".join(paths[:limit])
        return shown + (f" +{len(paths) - limit}" if len(paths) > limit else "")

    parts = []
    if result.new:
        parts.append(f"new {len(result.new)}: {listing(result.new)}")
    if result.changed:
        parts.append(f"changed: {listing(result.changed)}")
    if result.removed:
        parts.append(f"removed: {listing(result.removed)}")
    return "; ".join(parts) or "nothing new"


def _step_exit(result: StepResult) -> str:
    return (
        _exit_text(result.returncode) + (" (killed)" if result.killed else "") + (" (bg)" if result.background else "")
    )


def _short(text: str, ws: Path) -> str:
    return text.replace(str(ws.resolve()) + "/", "").replace(str(ws) + "/", "").replace(str(REPO) + "/", "")


def render(results: list[RowResult], meta: dict[str, str]) -> str:
    """The Markdown report."""
    good = sum(r.verdict.as_expected for r in results)
    lines = [
        "# Reliability: the fault matrix",
        "",
        "Every bad input and fault we know of, run through the real command lines (`brats-cggm-infer`, "
        "`brats-cggm-evaluate`, `brats-cggm-prepare`, `brats-cggm-diagnose`, `brats-cggm-phantoms`), the bundles "
        "(`python -m monai.bundle run` with `train.yaml` or `inference.yaml`, under `torchrun` for the multi-process "
        "rows) and the MulT pickle loader, each in a fresh temporary folder on tiny phantom data, with the outcome "
        "each row must have. Steps marked `&` run in the background beside the next ones (two processes at once). "
        "Generated by",
        "",
        "    python scripts/fault_matrix.py --out docs/reliability.md",
        "",
        f"on {meta['date']}, commit `{meta['commit']}`, {meta['machine']}.{meta['filter']}",
        "",
        f"Setup: phantom cases of {SHAPE[0]}^3 voxels (`write_phantom_dataset`, {N_CASES} cases), a network with "
        f"features {list(FEATURES)}, patch {list(PATCH)}, `OMP_NUM_THREADS=1`; `train` stands for "
        "`python -m monai.bundle run --config_file bundles/brats_cggm/configs/train.yaml` with "
        + " ".join(f"`--{k} {v}`" for k, v in TINY_TRAIN.items())
        + ". `bundle` is a training output folder with a random tiny network, `trained` (and the `run` that the "
        "resume rows start from) a real 2-epoch run. Paths are relative to the row's folder.",
        "",
        "Columns: **exit** the exit status (expected in brackets: 0, or non-zero; a death by signal or a timeout "
        "never counts as a clean non-zero exit), **first error line** the first line reporting an error; "
        "**msg** the error names the file or setting at fault (and is one line, no traceback, for the command "
        "lines); **lost** nothing lost: files that existed before are unchanged; **half** nothing half-written: "
        "no `*.tmp`, no new empty file, nothing new outside the row's outputs (a failing case writes nothing); "
        "**code** no code ran from a data file; **outcome** the row's own check (named under the table when it "
        "fails). ✔ as expected, ✘ not, — not relevant to the row.",
        "",
        "| # | row | what | command | exit (exp.) | first error line | files left | msg | lost | half | code | outcome "
        "| as expected |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results, start=1):
        v = r.verdict
        ws = r.folder / "ws"
        codes = " → ".join(_step_exit(s) for s in r.results) or "—"
        expected = "0" if r.row.expect_ok else "≠0"
        first = (
            _short(first_error_line(decisive(r.results), r.row.message[0] if r.row.message else ""), ws)
            if r.results
            else ""
        )
        if not r.results:
            first = v.problems[0]
        command = " ; ".join(_short(s.display, ws) + (" &" if s.background else "") for s in r.results) or "—"
        lines.append(
            f"| {i} | `{r.row.name}` | {_cell(r.row.what, 80)} | `{_cell(command, 200)}` | {codes} ({expected}) | "
            f"{_cell(first)} | {_cell(_files_left(r), 120)} | {_mark(v.message_ok)} | {_mark(v.nothing_lost)} | "
            f"{_mark(v.nothing_half_written)} | {_mark(v.no_code_ran)} | {_mark(v.outcome_ok)} | "
            f"{'✔' if v.as_expected else '✘ **no**'} |"
        )
    failing = [r for r in results if not r.verdict.as_expected]
    if failing:
        lines += ["", "## Rows not as expected", ""]
        for r in failing:
            ws = r.folder / "ws"
            lines.append(f"- `{r.row.name}`: " + "; ".join(_short(p, ws) for p in r.verdict.problems))
    lines += ["", f"{len(results)} rows, {good} as expected.", ""]
    return "\n".join(lines)


def _meta(only: str | None) -> dict[str, str]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " + uncommitted changes"
    import torch

    machine = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return {
        "date": now,
        "commit": commit,
        "machine": machine,
        "filter": f" Only the rows matching `{only}`." if only else "",
    }


def select(rows: Sequence[Row], only: str | None) -> list[Row]:
    """The rows whose name matches the regular expression ``only`` (all when None)."""
    return [r for r in rows if only is None or re.search(only, r.name)]


def run_matrix(
    rows: Sequence[Row], tmp_root: Path, jobs: int = 1, progress: Callable[[RowResult], None] | None = None
) -> list[RowResult]:
    """Run ``rows`` (``jobs`` at a time) with fixtures under ``tmp_root``; results in row order."""
    fixtures = Fixtures(tmp_root / "fixtures")
    fixtures.root.mkdir(parents=True, exist_ok=True)

    def one(row: Row) -> RowResult:
        result = run_row(row, fixtures, tmp_root)
        if progress is not None:
            progress(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, rows))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the matrix and write the report.

    Returns:
        0 when every row is as expected, 1 otherwise, 2 for bad arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "reliability.md", help="the Markdown report")
    parser.add_argument("--only", help="run only the rows whose name matches this regular expression")
    parser.add_argument("--jobs", type=int, default=1, help="rows run at the same time (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders (printed) for debugging")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args(argv)
    rows = select(ROWS, args.only)
    if args.list:
        for row in rows:
            print(f"{row.name:36s} {'exit 0' if row.expect_ok else 'fails '}  {row.what}")
        return 0
    if not rows:
        parser.error(f"--only {args.only!r} matches no row (see --list)")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    tmp_root = Path(tempfile.mkdtemp(prefix="fault_matrix."))
    lock = threading.Lock()
    done = [0]

    def progress(result: RowResult) -> None:
        with lock:
            done[0] += 1
            status = "ok " if result.verdict.as_expected else "NOT"
            detail = "" if result.verdict.as_expected else ": " + "; ".join(result.verdict.problems)[:200]
            print(f"[{done[0]}/{len(rows)}] {status} {result.row.name} ({result.seconds:.0f} s){detail}", flush=True)

    try:
        results = run_matrix(rows, tmp_root, args.jobs, progress)
        atomic_write_text(args.out, render(results, _meta(args.only)))
    finally:
        if args.keep:
            print(f"temporary folders kept in {tmp_root}")
        else:
            shutil.rmtree(tmp_root, ignore_errors=True)
    good = sum(r.verdict.as_expected for r in results)
    print(f"{len(results)} rows, {good} as expected -> {args.out}")
    return 0 if good == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
