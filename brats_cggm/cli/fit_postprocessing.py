"""``brats-cggm-fit-postprocessing RUN_DIR``: choose a training run's post-processing on its validation cases.

    brats-cggm-fit-postprocessing runs/brats_cggm --dataset-dir data/brats_phantoms --metric lesionwise_dice

Segments the run's validation cases, tries the rules of :mod:`brats_cggm.brats.inference.postprocessing` at the sizes of
:data:`~brats_cggm.brats.inference.postprocessing_fit.SIZE_GRID_MM3` and keeps those that improve the metric (see
:mod:`brats_cggm.brats.inference.postprocessing_fit`); writes the thresholds into ``RUN_DIR/configs/inference.json``
(``postprocessing_rules``, applied by ``brats-cggm-infer --postprocess``) and the before/after table to
``RUN_DIR/configs/postprocessing.md``. The data set, seed and validation share are those the run recorded
(``configs/split.json``); runs of versions that did not record them need ``--dataset-dir``, ``--seed`` and
``--val-fraction``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from brats_cggm.brats.data.nifti_checks import InputFileError
from brats_cggm.brats.inference.postprocessing_fit import (
    FIT_METRICS,
    check_fit_targets,
    fit_markdown,
    fit_postprocessing,
    write_postprocessing_fit,
)
from brats_cggm.cli.common import CommandParser, print_error
from brats_cggm.core.devices import resolve_device

__all__ = ["build_parser", "main"]

PROG = "brats-cggm-fit-postprocessing"


def _fraction(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def build_parser() -> CommandParser:
    """The arguments of ``brats-cggm-fit-postprocessing``."""
    p = CommandParser(
        prog=PROG,
        description="Choose post-processing thresholds (small components, small enhancing tumour) on a training "
        "run's validation cases and write them into RUN_DIR/configs/inference.json.",
    )
    p.add_argument("run_dir", help="the training run's output_dir (configs/inference.json, models/model.pt)")
    p.add_argument("--dataset-dir", help="the data set the run trained on (default: the one it recorded)")
    p.add_argument("--seed", type=int, help="the run's seed, which chose its validation cases (default: recorded)")
    p.add_argument("--val-fraction", type=_fraction, help="the run's val_fraction (default: recorded)")
    p.add_argument(
        "--metric",
        choices=FIT_METRICS,
        default="lesionwise_dice",
        help="the metric a rule must improve: mean over ET, TC, WT of the lesion-wise Dice (unmatched lesions "
        "count 0; default) or of the global Dice",
    )
    p.add_argument("--checkpoint", help="weights instead of RUN_DIR/models/model.pt")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing postprocessing_rules entry and table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point ``brats-cggm-fit-postprocessing RUN_DIR``.

    Args:
        argv: arguments (without the program name); ``sys.argv[1:]`` when None.

    Returns:
        0 when the thresholds were written, 1 on a failure (nothing written), 2 for bad arguments.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        # before segmenting: a refused write would otherwise be found at the end
        check_fit_targets(args.run_dir, args.overwrite)
        fit = fit_postprocessing(
            args.run_dir, args.dataset_dir, args.seed, args.val_fraction, args.metric, str(device), args.checkpoint
        )
        config_path, table_path = write_postprocessing_fit(args.run_dir, fit, args.overwrite)
    except (OSError, InputFileError, ValueError) as exc:
        print_error(str(exc))
        return 1
    print(fit_markdown(fit), end="")
    print(f"written: {config_path} (postprocessing_rules), {table_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
