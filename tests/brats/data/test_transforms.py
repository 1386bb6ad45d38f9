import nibabel as nib
import numpy as np
import pytest
import torch

from brats_cggm.brats.data.nifti_checks import InputFileError
from brats_cggm.brats.data.transforms import (
    CropCentreIndicesd,
    LoadCheckedImaged,
    inference_transforms,
    train_transforms,
)


def _case() -> dict[str, torch.Tensor]:
    image = torch.zeros(4, 20, 20, 20)
    image[:, 2:18, 2:18, 2:18] = 1.0  # the head
    label = torch.zeros(3, 20, 20, 20)
    label[1, 8:12, 8:12, 8:12] = 1.0  # whole tumour: 64 voxels
    return {"image": image, "label": label}


def test_crop_centre_indices_are_tumour_and_head_background():
    out = CropCentreIndicesd()(_case())
    flat_label = out["label"][1].flatten()
    flat_head = out["image"][0].flatten()
    assert len(out["fg_indices"]) == 64 and bool((flat_label[out["fg_indices"]] == 1).all())
    assert len(out["bg_indices"]) == 16**3 - 64
    assert bool((flat_label[out["bg_indices"]] == 0).all()) and bool((flat_head[out["bg_indices"]] > 0).all())


def test_crop_centre_indices_are_thinned_evenly():
    out = CropCentreIndicesd(max_indices=100)(_case())
    assert len(out["fg_indices"]) == 64  # fewer than the limit: all kept
    bg = out["bg_indices"]
    assert len(bg) == 100 and bool((bg[1:] > bg[:-1]).all())
    full = CropCentreIndicesd()(_case())["bg_indices"]
    assert bg[0] == full[0] and bg[-1] == full[-1]


def test_train_patches_drop_the_indices(phantom_dataset):
    from brats_cggm.brats.data.discovery import discover_dataset

    item = discover_dataset(phantom_dataset, ["flair", "t1ce", "t1", "t2"]).items[0]
    patches = train_transforms(patch_size=(16, 16, 16), num_samples=3, pos=1.0, neg=0.0)(item)
    assert len(patches) == 3
    for patch in patches:
        assert "fg_indices" not in patch and "bg_indices" not in patch
        assert patch["image"].shape == (4, 16, 16, 16)
        assert patch["label"][1].sum() > 0  # pos=1, neg=0: every patch centred on tumour


def test_random_patches_leave_the_cache_intact(phantom_dataset):
    """The bundle caches without ``copy_cache``: drawing patches must never write into a cached volume."""
    from monai.data import CacheDataset

    from brats_cggm.brats.data.discovery import discover_dataset

    items = discover_dataset(phantom_dataset, ["flair", "t1ce", "t1", "t2"]).items[:2]
    dataset = CacheDataset(
        items, train_transforms(patch_size=(16, 16, 16), num_samples=2), copy_cache=False, progress=False
    )
    before = [{k: v.clone() for k, v in entry.items() if k in ("image", "label")} for entry in dataset._cache]
    for _ in range(3):
        for i in range(len(dataset)):
            dataset[i]
    for entry, saved in zip(dataset._cache, before):
        torch.testing.assert_close(entry["image"].as_tensor(), saved["image"].as_tensor())
        torch.testing.assert_close(entry["label"].as_tensor(), saved["label"].as_tensor())


def _save(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return str(path)


def test_checked_loading_names_the_file_and_stops_after_a_failure(tmp_path):
    rng = np.random.default_rng(0)
    good = [_save(tmp_path / f"m{i}.nii.gz", rng.uniform(1, 2, (8, 8, 8)).astype(np.float32)) for i in range(2)]
    label = _save(tmp_path / "seg.nii.gz", np.zeros((8, 8, 8), np.uint8))
    loader = LoadCheckedImaged(keys=["image", "label"], label_convention="brats2021")
    out = loader({"image": good, "label": label})
    assert out["image"].shape == (2, 8, 8, 8) and out["label"].shape == (1, 8, 8, 8)

    four_d = _save(tmp_path / "four_d.nii.gz", rng.uniform(1, 2, (8, 8, 8, 2)).astype(np.float32))
    with pytest.raises(InputFileError, match=r"four_d\.nii\.gz: has shape \(8, 8, 8, 2\): 4-D"):
        LoadCheckedImaged(keys="image")({"image": [good[0], four_d]})
    # MSD 4-D file: the channels used are checked, named by index
    stack = rng.uniform(1, 2, (8, 8, 8, 3)).astype(np.float32)
    stack[..., 2] = 0
    msd = _save(tmp_path / "msd.nii.gz", stack)
    LoadCheckedImaged(keys="image", channel_order=[1, 0])({"image": msd})
    with pytest.raises(InputFileError, match=r"msd\.nii\.gz: channel 2 is empty"):
        LoadCheckedImaged(keys="image", channel_order=[2, 0])({"image": msd})

    # after a failure, the same loader reads nothing more
    loader = LoadCheckedImaged(keys="image")
    with pytest.raises(InputFileError):
        loader({"image": [good[0], four_d]})
    with pytest.raises(RuntimeError, match="an earlier case failed"):
        loader({"image": good})


def test_inference_chain_keeps_file_names_beside_the_image_and_inverts(phantom_dataset):
    # MONAI Label adds image_path (a str) to each request; MONAI's Spacingd took it for a meta dictionary
    from monai.transforms import Invertd

    from brats_cggm.brats.data.discovery import discover_dataset

    item = discover_dataset(phantom_dataset).items[0]
    chain = inference_transforms(pixdim=(2.0, 2.0, 2.0))
    d = chain({"image": item["image"], "image_path": item["image"][0]})
    assert d["image_path"] == item["image"][0]
    assert d["image"].shape[0] == 4 and max(d["image"].shape[1:]) <= 16  # 32³ at 1 mm resampled to 2 mm
    d["pred"] = d["image"][:1].clone()
    restored = Invertd(keys="pred", transform=chain, orig_keys="image", nearest_interp=False)(d)
    assert tuple(restored["pred"].shape[1:]) == nib.load(item["image"][0]).shape
