"""Both bundles' files as the MONAI Model Zoo's checks read them, offline (docs/bundles.md, Model Zoo checks).

``metadata.json`` against the schema stored beside it (the zoo's ``verify_bundle.py`` runs MONAI's
``verify_metadata`` with the schema copied to ``eval/schema.json``), the JSON files as the zoo's
``pretty-format-json --no-sort-keys --indent=4`` hook writes them, and the files the zoo expects in a bundle.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLES = [REPO / "bundles" / "brats_cggm", REPO / "bundles" / "multimodal_cggm"]
IDS = [b.name for b in BUNDLES]


def _json_files(bundle: Path) -> list[Path]:
    return sorted(p for p in bundle.rglob("*.json") if "models" not in p.relative_to(bundle).parts)


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_metadata_is_valid_against_the_stored_schema(bundle: Path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((bundle / "configs" / "schema" / "metadata_schema.json").read_text())
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    jsonschema.validate(instance=metadata, schema=schema)
    assert metadata["version"] in metadata["changelog"]


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_the_stored_schema_refuses_what_the_zoo_refuses(bundle: Path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((bundle / "configs" / "schema" / "metadata_schema.json").read_text())
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    for broken in (
        {**metadata, "eval_metrics": {"mean_dice": "reported per run"}},
        {key: value for key, value in metadata.items() if key != "network_data_format"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(instance=broken, schema=schema)


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_json_files_are_as_pretty_format_json_writes_them(bundle: Path):
    files = _json_files(bundle)
    assert any(p.name == "metadata.json" for p in files)
    for path in files:
        text = path.read_text()
        # pre-commit-hooks' pretty-format-json with --no-sort-keys --indent=4 (ensure_ascii is its default)
        assert json.dumps(json.loads(text), indent=4, ensure_ascii=True) + "\n" == text, path


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_bundle_holds_the_files_the_zoo_expects(bundle: Path):
    assert (bundle / "LICENSE").is_file()
    assert (bundle / "docs" / "data_license.txt").is_file()
    readme = (bundle / "docs" / "README.md").read_text()
    for section in ("System configuration", "Limitations", "License"):
        assert re.search(rf"^## {section}", readme, re.MULTILINE), section
    # bundle-relative commands: the bundle is used on its own (unzipped), not from this repository
    assert "--config_file bundles/" not in readme and "'bundles/" not in readme


def test_brats_metadata_matches_the_network():
    metadata = json.loads((BUNDLES[0] / "configs" / "metadata.json").read_text())
    inputs, outputs = metadata["network_data_format"]["inputs"], metadata["network_data_format"]["outputs"]
    assert all(isinstance(v, (int, float)) for v in metadata["eval_metrics"].values())
    assert all(k.startswith("phantom_") for k in metadata["eval_metrics"])
    assert outputs["pred"]["value_range"] == [0, 1]
    assert inputs["image"]["spatial_shape"] == outputs["pred"]["spatial_shape"] == ["32*n"] * 3
