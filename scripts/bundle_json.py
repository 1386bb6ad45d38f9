"""Regenerate (or check) the JSON configs of the BraTS bundle from its YAML configs, their one source.

MONAI's ``monai.bundle.load(name, bundle_dir=..., workflow_type="inference")`` reads ``configs/inference.json``
(and a ``train`` workflow ``configs/train.json``); the bundle's configs are written in YAML, with comments.
Each ``bundles/brats_cggm/configs/<name>.yaml`` is therefore mirrored by a committed ``<name>.json`` with the same
content, which this script writes; ``tests/bundles/test_bundle_json.py`` fails when one is out of step.
Edit the YAML, then run::

    python scripts/bundle_json.py          # rewrite the JSON mirrors
    python scripts/bundle_json.py --check  # exit 1 naming the mirrors that differ (what the test checks)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

__all__ = ["BUNDLE_CONFIGS", "render", "stale_mirrors", "write_mirrors"]

#: The folder whose YAML configs are mirrored (the multimodal bundle's configs need a task overlay, so
#: MONAI's loader cannot build its network from one file: it has no mirrors).
BUNDLE_CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "brats_cggm" / "configs"


def render(yaml_path: Path) -> str:
    """The JSON text mirroring a YAML config: the same content, indented by 4, with a final newline.

    Args:
        yaml_path: the YAML config.

    Returns:
        The JSON text.
    """
    return json.dumps(yaml.safe_load(yaml_path.read_text()), indent=4, ensure_ascii=False) + "\n"


def _pairs(configs: Path) -> list[tuple[Path, Path]]:
    return [(y, y.with_suffix(".json")) for y in sorted(configs.glob("*.yaml"))]


def stale_mirrors(configs: Path = BUNDLE_CONFIGS) -> list[Path]:
    """The JSON mirrors that are missing or differ from their YAML config.

    Args:
        configs: the configs folder.

    Returns:
        The JSON paths to regenerate (empty when every mirror is in step).
    """
    return [j for y, j in _pairs(configs) if not j.is_file() or j.read_text() != render(y)]


def write_mirrors(configs: Path = BUNDLE_CONFIGS) -> list[Path]:
    """Write every stale JSON mirror.

    Args:
        configs: the configs folder.

    Returns:
        The JSON paths written.
    """
    stale = stale_mirrors(configs)
    for json_path in stale:
        json_path.write_text(render(json_path.with_suffix(".yaml")))
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report the stale mirrors (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_mirrors()
        for path in stale:
            print(f"{path}: out of step with {path.with_suffix('.yaml').name}; run python scripts/bundle_json.py")
        return 1 if stale else 0
    for path in write_mirrors():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
