"""The bundle's data set folder: phantoms generated into the default one only."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import pytest

from brats_cggm.brats.phantoms.anatomical import generate_anatomical_case
from brats_cggm.brats.phantoms.dataset_dir import bundle_dataset_dir, resolve_dataset_dir


def test_bundle_dataset_dir_writes_nothing_and_names_the_missing_phantoms(tmp_path: Path) -> None:
    default = tmp_path / "phantoms"
    with pytest.raises(FileNotFoundError, match="brats-cggm-phantoms"):
        bundle_dataset_dir(default, default)
    assert list(tmp_path.iterdir()) == []
    (default / ".lock").parent.mkdir()
    (default / ".lock").touch()  # hidden files are no data set
    with pytest.raises(FileNotFoundError, match="not generated yet"):
        bundle_dataset_dir(default, default)
    resolve_dataset_dir(default, default, n=1, shape=(24, 24, 24))
    assert bundle_dataset_dir(str(default), default) == default
    # a folder the user named is returned as it is: data discovery reports what it lacks
    assert bundle_dataset_dir(tmp_path / "mine", default) == tmp_path / "mine"


def test_resolve_dataset_dir_generates_the_chosen_phantoms(tmp_path: Path) -> None:

    default = tmp_path / "phantoms"
    assert resolve_dataset_dir(default, default, n=1, seed=0, anatomy="mni152", spacing=8) == default
    assert nib.load(default / "BraTS2021_00000" / "BraTS2021_00000_flair.nii.gz").shape == (30, 30, 20)
    # a folder with cases is left alone, whatever the settings say
    assert resolve_dataset_dir(default, default, n=3, anatomy="geometric") == default
    assert len(list(default.glob("BraTS2021_*"))) == 1
    geometric = tmp_path / "geometric"
    resolve_dataset_dir(geometric, geometric, n=1, shape=(24, 24, 24))
    assert nib.load(geometric / "BraTS2021_00000" / "BraTS2021_00000_flair.nii.gz").shape == (24, 24, 24)
    # a folder the user named is never written to
    named = tmp_path / "named"
    resolve_dataset_dir(named, default, n=1, anatomy="mni152", spacing=8)
    assert not named.exists()
    with pytest.raises(ValueError, match="anatomy must be"):
        resolve_dataset_dir(default, default, anatomy="brainweb")
    # the variant reaches the generator; a bad one, or one for geometric phantoms, is refused before writing
    control = tmp_path / "control"
    resolve_dataset_dir(control, control, n=1, seed=0, anatomy="mni152", spacing=8, variant="t2-flair-mismatch")
    expected = generate_anatomical_case(0, spacing=8, variant="t2-flair-mismatch")["t2"]
    assert (nib.load(control / "BraTS2021_00000" / "BraTS2021_00000_t2.nii.gz").get_fdata() == expected).all()
    for anatomy, variant in (("mni152", "mismatch"), ("geometric", "t2-flair-mismatch")):
        with pytest.raises(ValueError, match="variant"):
            resolve_dataset_dir(tmp_path / "bad", tmp_path / "bad", n=1, anatomy=anatomy, variant=variant)
    assert not (tmp_path / "bad").exists()


def test_bundle_phantoms_anatomy_reaches_resolve_dataset_dir(tmp_path: Path) -> None:
    from monai.bundle import ConfigParser

    config = Path(__file__).resolve().parents[3] / "bundles" / "brats_cggm" / "configs" / "train.yaml"
    parser = ConfigParser()
    parser.read_config(str(config))
    assert parser["phantoms"]["anatomy"] == "geometric"  # the default stays the geometric phantoms
    parser["phantom_dir"] = str(tmp_path / "phantoms")
    parser["phantoms"] = {"n": 1, "seed": 0, "anatomy": "mni152", "spacing": 8, "variant": "t2-flair-mismatch"}
    # the initialize step generates them (parsing dataset_root writes nothing: tests/bundles/test_config_purity.py)
    step = next(i for i, s in enumerate(parser["initialize"]) if "resolve_dataset_dir" in str(s))
    parser.get_parsed_content(f"initialize#{step}")
    root = parser.get_parsed_content("dataset_root")
    t2 = nib.load(root / "BraTS2021_00000" / "BraTS2021_00000_t2.nii.gz").get_fdata()
    assert (t2 == generate_anatomical_case(0, spacing=8, variant="t2-flair-mismatch")["t2"]).all()
