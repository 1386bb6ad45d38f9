"""Fixtures of the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.segmentation_folders import write_folders


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """See :func:`tests.helpers.segmentation_folders.write_folders`."""
    return write_folders(tmp_path)
