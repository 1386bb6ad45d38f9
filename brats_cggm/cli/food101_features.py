"""``brats-cggm-food101-features``: precompute Food-101 text/image features with frozen local models.

    brats-cggm-food101-features /data/food101 --output-dir /data/food101_features \\
        --text-model models/bert-base-uncased --image-model models/vit-base-patch16-224

Writes ``text_features.h5`` and/or ``image_features.h5`` into ``--output-dir``, one dataset per sample id
(:func:`brats_cggm.adapters.food101.extract_food101_features`); train on them with the task overlay's
``text_features`` / ``image_features`` keys (``configs/tasks/food101.yaml``). Needs the ``adapters`` extra.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from brats_cggm.adapters.food101.features import POOLINGS
from brats_cggm.cli.common import CommandParser, positive_int, print_error

__all__ = ["build_parser", "main"]

PROG = "brats-cggm-food101-features"


def build_parser() -> CommandParser:
    """The arguments of ``brats-cggm-food101-features``."""
    parser = CommandParser(prog=PROG, description="Precompute Food-101 text/image features with frozen local models.")
    parser.add_argument("dataset_dir", help="the Food-101 folder ({train,dev,test}.json or texts/*_titles.csv)")
    parser.add_argument("--output-dir", required=True, help="folder for text_features.h5 / image_features.h5 (created)")
    parser.add_argument("--text-model", help="local folder of a transformers text model and its tokenizer")
    parser.add_argument("--image-model", help="local folder of a transformers image model and its image processor")
    parser.add_argument("--layout", default="auto", choices=("auto", "json", "csv"))
    parser.add_argument("--text-pooling", default="sequence", choices=POOLINGS, help="default: sequence")
    parser.add_argument("--image-pooling", default="cls", choices=POOLINGS, help="default: cls")
    parser.add_argument("--max-text-length", type=positive_int, default=64, help="tokens per text (default 64)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="samples per forward pass (default 32)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"), help="stored precision")
    parser.add_argument("--on-bad-image", default="skip", choices=("skip", "error"), help="an unreadable image")
    parser.add_argument("--overwrite", action="store_true", help="replace existing feature files")
    return parser


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and check the arguments.

    Raises:
        SystemExit: bad arguments, or neither model given (status 2, with the usage message).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.text_model is None and args.image_model is None:
        parser.error("give --text-model and/or --image-model (local model folders)")
    return args


def extract(args: argparse.Namespace) -> dict[str, Path]:
    """Run the frozen models over every sample and write the feature files."""
    from brats_cggm.adapters.food101.features import extract_food101_features
    from brats_cggm.core.devices import resolve_device

    return extract_food101_features(
        args.dataset_dir,
        args.output_dir,
        text_model=args.text_model,
        image_model=args.image_model,
        layout=args.layout,
        text_pooling=args.text_pooling,
        image_pooling=args.image_pooling,
        max_text_length=args.max_text_length,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
        dtype=args.dtype,
        on_bad_image=args.on_bad_image,
        overwrite=args.overwrite,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point ``brats-cggm-food101-features``.

    Args:
        argv: arguments (without the program name); ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 1 on an error (unreadable data, an existing file without ``--overwrite``, a missing
        model or extra), 2 for bad arguments.
    """
    try:
        args = parse_arguments(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        written = extract(args)
    except (OSError, ValueError, ImportError) as exc:
        print_error(str(exc), PROG)
        return 1
    for modality, path in written.items():
        print(f"{modality}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
