"""``brats-cggm-qc FOLDER``: (re)build the QC page of a folder of segmentations written with ``--report``.

    brats-cggm-qc predictions/ --overwrite

Reads every case report ``<case>.json`` of the folder and writes ``FOLDER/index.html``: one self-contained page
(see :mod:`brats_cggm.brats.reporting.qc_page`) with a sortable table of the cases, flagged ones first, thumbnails
of their overlays and links to each overlay and label map. JSON files that are not reports are skipped
(a ``warning:`` line each, listed on the page too); a file that cannot be read or parsed is an ``error:`` line
and makes the exit status 1, the page being written all the same.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from brats_cggm.brats.reporting.qc_page import QC_PAGE_NAME, collect_qc_rows, render_qc_page, save_qc_page
from brats_cggm.cli.common import CommandParser, print_error, print_warning
from brats_cggm.core.files import refuse_existing

__all__ = ["build_parser", "main"]

PROG = "brats-cggm-qc"


def build_parser() -> CommandParser:
    """The arguments of ``brats-cggm-qc``."""
    p = CommandParser(
        prog=PROG,
        description="Write FOLDER/index.html, the QC page of the case reports that brats-cggm-infer --report "
        "wrote in FOLDER: a self-contained, sortable table with overlay thumbnails.",
    )
    p.add_argument("folder", help="the output folder of brats-cggm-infer --report (<case>.json, <case>.png)")
    p.add_argument("--overwrite", action="store_true", help=f"replace an existing {QC_PAGE_NAME}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point ``brats-cggm-qc FOLDER``.

    Args:
        argv: arguments (without the program name); ``sys.argv[1:]`` when None.

    Returns:
        0 when the page was written from readable files, 1 when it could not be written or a JSON file was
        unreadable, 2 for bad arguments.
    """
    args = build_parser().parse_args(argv)
    page = Path(args.folder) / QC_PAGE_NAME
    try:
        refuse_existing([page], args.overwrite)  # before reading any report
        rows = collect_qc_rows(args.folder)
        path = save_qc_page(render_qc_page(rows), page, args.overwrite)
    except OSError as exc:
        print_error(str(exc))
        return 1
    for name, reason in rows.skipped:
        print_warning(f"{rows.folder / name}: skipped: {reason}")
    for name, error in rows.unreadable:
        print_error(f"{rows.folder / name}: unreadable: {error}")
    flagged = sum(1 for row in rows.rows if row.flags)
    print(f"written: {path} ({len(rows.rows)} case(s), {flagged} flagged, {len(rows.skipped)} skipped)")
    return 1 if rows.unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
