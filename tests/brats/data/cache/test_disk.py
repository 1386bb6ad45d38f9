"""The disk cache of the BraTS preprocessing: round trip, invalidation, atomic entries, patch reads, cache modes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.transforms import Compose

from brats_cggm.brats.data.cache import disk as disk_cache
from brats_cggm.brats.data.cache.datasets import cached_train_transforms, training_dataset, validation_dataset
from brats_cggm.brats.data.cache.disk import (
    CACHE_FORMAT_VERSION,
    LoadCacheEntryd,
    RandCropCachedPatchd,
    cache_chains,
    fill_cache,
    pack_regions,
    preprocessing_key,
    read_entry_meta,
    unpack_regions,
    write_entry,
)
from brats_cggm.brats.data.cache.memory_check import check_memory_cache_fits, estimate_memory_cache_bytes
from brats_cggm.brats.data.discovery import discover_dataset

REPO = Path(__file__).resolve().parents[4]
CONFIGS = REPO / "bundles" / "brats_cggm" / "configs"
OPTIONS = {"label_convention": "brats2021", "channel_order": None, "pixdim": [1.0, 1.0, 1.0]}
PATCH = (16, 16, 16)


@pytest.fixture
def dataset(phantom_dataset: Path, tmp_path: Path) -> Path:
    """A writable copy of the 4 phantom cases."""
    copy = tmp_path / "data"
    shutil.copytree(phantom_dataset, copy)
    return copy


def _items(root: Path) -> list[dict]:
    return discover_dataset(root).items


def test_pack_regions_round_trip():
    regions = np.zeros((3, 2, 2, 1), dtype=np.float32)
    regions[0, 0, 0, 0] = regions[1, 0, 0, 0] = regions[1, 1, 1, 0] = regions[2, 0, 1, 0] = 1
    packed = pack_regions(regions)
    assert packed.dtype == np.uint8
    # voxel (0,0,0): tc and wt -> bits 0 and 1 = 3; (1,1,0): wt = 2; (0,1,0): et = 4
    assert packed[0, 0, 0] == 3 and packed[1, 1, 0] == 2 and packed[0, 1, 0] == 4 and packed[1, 0, 0] == 0
    np.testing.assert_array_equal(unpack_regions(packed), regions)


@pytest.mark.parametrize("kind", ["train", "val"])
def test_entries_equal_the_in_memory_preprocessing(dataset: Path, tmp_path: Path, kind: str):
    items = _items(dataset)
    entries = fill_cache(items, kind, tmp_path / "cache", PATCH, OPTIONS, progress=False)
    head, _ = cache_chains(kind, PATCH, 1, OPTIONS)
    for item, entry in zip(items, entries, strict=True):
        reference = Compose(head)(dict(item))
        cached = LoadCacheEntryd(whole=True)(entry)
        image, ref_image = cached["image"].numpy(), reference["image"].numpy()
        assert image.shape == ref_image.shape
        # float16: relative error at most 2**-11 of each value (round to nearest)
        bound = np.abs(ref_image) * 2.0**-11 + 1e-7
        assert (np.abs(image - ref_image) <= bound).all()
        meta = read_entry_meta(entry["entry"])
        assert meta["image_max_abs_error"] == pytest.approx(float(np.abs(image - ref_image).max()), abs=1e-7)
        np.testing.assert_array_equal(cached["label"].numpy(), reference["label"].numpy())
        np.testing.assert_allclose(cached["image"].affine.numpy(), reference["image"].affine.numpy())
        if kind == "train":
            for key in ("fg_indices", "bg_indices"):
                stored = np.load(Path(entry["entry"]) / f"{key}.npy")
                np.testing.assert_array_equal(stored, np.asarray(reference[key]))


def test_second_fill_reuses_and_changed_input_or_setting_rebuilds(dataset: Path, tmp_path: Path, monkeypatch):
    items = _items(dataset)
    cache = tmp_path / "cache"
    built = []
    original = disk_cache._build_entry
    monkeypatch.setattr(
        disk_cache, "_build_entry", lambda job, head=None: built.append(job[0]["case_id"]) or original(job, head)
    )
    fill_cache(items, "train", cache, PATCH, OPTIONS, progress=False)
    assert len(built) == 4
    built.clear()
    entries = fill_cache(items, "train", cache, PATCH, OPTIONS, progress=False)
    assert built == []
    # a changed input file (new content): that case alone is rebuilt, in place
    flair = Path(items[1]["image"][0])
    before = read_entry_meta(entries[1]["entry"])["inputs"]
    image = nib.load(str(flair))
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj) * 1.5, image.affine), str(flair))
    entries2 = fill_cache(items, "train", cache, PATCH, OPTIONS, progress=False)
    assert built == [items[1]["case_id"]]
    assert entries2[1]["entry"] == entries[1]["entry"]
    assert read_entry_meta(entries2[1]["entry"])["inputs"] != before
    # a changed preprocessing setting: another key, every case built there, nothing mixed with the old folder
    built.clear()
    other = fill_cache(items, "train", cache, PATCH, {**OPTIONS, "pixdim": [1.5, 1.5, 1.5]}, progress=False)
    assert len(built) == 4
    assert Path(other[0]["entry"]).parent != Path(entries[0]["entry"]).parent
    assert preprocessing_key("train", PATCH, OPTIONS) != preprocessing_key("train", (24, 24, 24), OPTIONS)
    # 1 and 1.0 mm are the same setting
    assert preprocessing_key("train", PATCH, {**OPTIONS, "pixdim": [1, 1, 1]}) == preprocessing_key(
        "train", PATCH, OPTIONS
    )


def test_entry_of_another_format_version_is_rebuilt(dataset: Path, tmp_path: Path):
    items = _items(dataset)[:1]
    (entry,) = fill_cache(items, "val", tmp_path, data_options=OPTIONS, progress=False)
    meta_path = Path(entry["entry"]) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format": CACHE_FORMAT_VERSION - 1}))
    fill_cache(items, "val", tmp_path, data_options=OPTIONS, progress=False)
    assert read_entry_meta(entry["entry"])["format"] == CACHE_FORMAT_VERSION


def test_killed_write_leaves_no_half_entry(tmp_path: Path, monkeypatch):
    entry = tmp_path / "train-key" / "case-abc"
    arrays = {"image": np.zeros((1, 2, 2, 2), np.float16), "label": np.zeros((2, 2, 2), np.uint8)}

    saved = []

    def killed_save(file, array, allow_pickle=False):
        if saved:
            raise KeyboardInterrupt  # stands for the kill, after the first array is on disk
        saved.append(file)
        np.lib.format.write_array(file, array, allow_pickle=allow_pickle)

    monkeypatch.setattr(disk_cache.np, "save", killed_save)
    with pytest.raises(KeyboardInterrupt):
        write_entry(entry, arrays, {"format": CACHE_FORMAT_VERSION})
    assert not entry.exists()
    assert list(entry.parent.iterdir()) == []


def test_temporary_folder_of_a_dead_fill_is_removed_and_never_read(dataset: Path, tmp_path: Path):
    items = _items(dataset)[:1]
    key = preprocessing_key("val", PATCH, OPTIONS)
    folder = tmp_path / f"val-{key}"
    folder.mkdir(parents=True)
    # a pid that cannot be alive (above the kernel's pid_max)
    leftover = folder / f".tmp.{2**23}.abcd.{disk_cache.entry_name(items[0])}"
    leftover.mkdir()
    (leftover / "image.npy").write_bytes(b"half")
    (entry,) = fill_cache(items, "val", tmp_path, data_options=OPTIONS, progress=False)
    assert not leftover.exists()
    assert read_entry_meta(entry["entry"]) is not None


class _SpyArray:
    """A memory-mapped array that records every index it is read with."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.reads = array, []

    @property
    def shape(self):
        return self.array.shape

    def __getitem__(self, index):
        self.reads.append(index)
        return self.array[index]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole volume was read")


def test_crops_read_only_the_patch(dataset: Path, tmp_path: Path):
    (entry,) = fill_cache(_items(dataset)[:1], "train", tmp_path, PATCH, OPTIONS, progress=False)
    loaded = LoadCacheEntryd()(entry)
    assert isinstance(loaded["image"], np.memmap) and isinstance(loaded["label"], np.memmap)
    image, label = _SpyArray(loaded["image"]), _SpyArray(loaded["label"])
    crop = RandCropCachedPatchd(PATCH, pos=2.0, neg=1.0, num_samples=3)
    crop.set_random_state(0)
    patches = crop({**loaded, "image": image, "label": label})
    assert len(patches) == 3 and len(image.reads) == 3 and len(label.reads) == 3
    for patch, read in zip(patches, image.reads):
        assert patch["image"].shape == (4, *PATCH) and patch["label"].shape == (3, *PATCH)
        assert read[0] == slice(None)
        assert [s.stop - s.start for s in read[1:]] == list(PATCH)
        np.testing.assert_array_equal(patch["image"].numpy(), loaded["image"][read].astype(np.float32))


def test_crop_centres_follow_pos_neg(dataset: Path, tmp_path: Path):
    (entry,) = fill_cache(_items(dataset)[:1], "train", tmp_path, PATCH, OPTIONS, progress=False)
    loaded = LoadCacheEntryd()(entry)
    crop = RandCropCachedPatchd(PATCH, pos=1.0, neg=0.0, num_samples=20)
    crop.set_random_state(1)
    # every patch centred on tumour holds tumour
    assert all(p["label"][1].sum() > 0 for p in crop(loaded))


def test_cached_chain_matches_random_tail_of_train_transforms():
    chain = cached_train_transforms(PATCH, num_samples=2, **OPTIONS)
    _, tail = cache_chains("train", PATCH, 2, OPTIONS)
    names = [type(t).__name__ for t in chain.transforms]
    assert names[:2] == ["LoadCacheEntryd", "RandCropCachedPatchd"]
    expected = [type(t).__name__ for t in tail if type(t).__name__ not in ("RandCropByPosNegLabeld", "DeleteItemsd")]
    assert names[2:] == expected and "RandFlipd" in names
    crop = chain.transforms[1]
    assert crop.num_samples == 2 and crop.pos_ratio == pytest.approx(2 / 3) and crop.spatial_size == list(PATCH)


def test_training_dataset_disk_memory_none_agree_on_shapes(dataset: Path, tmp_path: Path):
    items = _items(dataset)[:2]
    for mode in ("disk", "memory", "none"):
        ds = training_dataset(items, mode, PATCH, 2, OPTIONS, cache_dir=tmp_path)
        samples = ds[0]
        assert len(samples) == 2
        assert samples[0]["image"].shape == (4, *PATCH) and samples[0]["label"].shape == (3, *PATCH)
        assert samples[0]["image"].dtype == torch.float32
        val = validation_dataset(items, mode, OPTIONS, cache_dir=tmp_path)[0]
        assert val["image"].shape[0] == 4 and val["label"].shape[0] == 3
    with pytest.raises(ValueError, match="cache: 'ram'"):
        training_dataset(items, "ram")


def test_memory_check_estimates_from_headers_and_names_the_setting(dataset: Path):
    items = _items(dataset)
    # phantoms: 32³ voxels at 1 mm, 4 image + 3 region channels of float32
    per_case = 32**3 * 7 * 4
    assert estimate_memory_cache_bytes(items) == 4 * per_case
    assert estimate_memory_cache_bytes(items, pixdim=(2.0, 2.0, 2.0)) == 4 * per_case // 8
    assert estimate_memory_cache_bytes(items, cache_rate=0.5) == 2 * per_case
    assert check_memory_cache_fits(items, available=4 * per_case, ranks_per_machine=1) == 4 * per_case
    with pytest.raises(MemoryError, match=r"set cache: disk .* or lower cache_rate"):
        check_memory_cache_fits(items, available=4 * per_case, ranks_per_machine=2)


def test_memory_mode_refused_before_loading(dataset: Path, monkeypatch):
    from brats_cggm.brats.data.cache import memory_check

    monkeypatch.setattr(memory_check, "available_memory_bytes", lambda: 1000)
    monkeypatch.setattr(
        "brats_cggm.brats.data.cache.datasets.CacheDataset", lambda *a, **k: pytest.fail("loading started")
    )
    with pytest.raises(MemoryError, match="cache: memory"):
        training_dataset(_items(dataset), "memory", PATCH, 1, OPTIONS)


TINY = {
    "val_interval": 1,
    "patch_size": list(PATCH),
    "network_def#features": [4, 8, 16],
    "num_samples": 1,
    "sw_batch_size": 8,
    "sw_overlap": 0.0,
    "device": "cpu",
    "train#dataset#data": "$@split[0][:2]",
}


@pytest.mark.parametrize(
    ("mode", "device_augmentation"), [("disk", False), ("disk", True), ("memory", False), ("none", False)]
)
def test_bundle_trains_one_epoch_with_each_cache_mode(
    mode: str, device_augmentation: bool, phantom_dataset: Path, tmp_path: Path
):
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.yaml"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        dataset_dir=str(phantom_dataset),
        output_dir=str(tmp_path / "out"),
        max_epochs=1,
        cache=mode,
        cache_dir=str(tmp_path / "cache"),
        device_augmentation=device_augmentation,
        **TINY,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics
    built = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").glob("*-*")) if mode == "disk" else []
    assert built == (["train", "val"] if mode == "disk" else [])
    if mode != "disk":
        assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_ranks_build_one_shard_each_and_all_get_every_entry(phantom_dataset: Path, tmp_path: Path):
    import subprocess
    import sys

    worker = REPO / "tests" / "helpers" / "ddp_cache_worker.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--local-addr=127.0.0.1"]
    command += ["--nproc_per_node=2", str(worker), str(phantom_dataset), str(tmp_path / "cache"), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    ids = [item["case_id"] for item in _items(phantom_dataset)]
    # items[rank::2]: disjoint shards covering every case; nothing built twice, nothing rebuilt later
    assert ranks[0]["first"] == ids[0::2] and ranks[1]["first"] == ids[1::2]
    assert ranks[0]["second"] == ranks[1]["second"] == []
    assert ranks[0]["entries"] == ranks[1]["entries"] and len(ranks[0]["entries"]) == 4
    assert all(read_entry_meta(e) is not None for e in ranks[0]["entries"])


@pytest.mark.slow
def test_full_preset_trains_128_patches_on_cpu_through_the_bundle(tmp_path: Path, record_property):
    """The ``full`` network at 128³, batch 1, two iterations on disk-cached cases smaller than the patch
    (padded), in a fresh process whose peak memory is reported (``-rA`` shows it)."""
    from brats_cggm.benchmarking.memory import run_worker
    from brats_cggm.brats.data.cache.memory_check import available_memory_bytes
    from brats_cggm.brats.phantoms.geometric import write_phantom_dataset

    # measured peak: 14.3 GB (docs/performance.md, Scale)
    if available_memory_bytes() < 16e9:
        pytest.skip(f"the full preset at 128³ needs ~14.3 GB; {available_memory_bytes() / 1e9:.1f} GB available")
    write_phantom_dataset(tmp_path / "data", n=2, shape=(96, 96, 96), seed=0)
    payload = {
        "bundle_config": str(CONFIGS / "train.yaml"),
        "dataset_dir": str(tmp_path / "data"),
        "n_cases": 2,
        "cache": "disk",
        "cache_dir": str(tmp_path / "cache"),
        "output_dir": str(tmp_path / "out"),
        "overrides": {"network_preset": "full", "patch_size": [128, 128, 128], "batch_size": 1, "num_samples": 1},
    }
    result = run_worker("scale_epoch", payload)
    record_property("full_preset_128_peak_rss_gb", result["peak_rss_bytes"] / 1e9)
    print(f"full preset, 128³, batch 1: peak RSS {result['peak_rss_bytes'] / 1e9:.2f} GB, {result['epoch_s']:.1f} s")
    assert result["iterations"] == 2


def test_worker_processes_build_the_same_entries(dataset: Path, tmp_path: Path):
    items = _items(dataset)[:2]
    one = fill_cache(items, "val", tmp_path / "one", data_options=OPTIONS, progress=False)
    two = fill_cache(items, "val", tmp_path / "two", data_options=OPTIONS, num_workers=2, progress=False)
    for a, b in zip(one, two, strict=True):
        for name in ("image.npy", "label.npy"):
            np.testing.assert_array_equal(np.load(Path(a["entry"]) / name), np.load(Path(b["entry"]) / name))


def test_device_augmentation_flips_image_and_label_alike_and_jitters_by_hand():
    from brats_cggm.brats.data.cache.device_augmentation import augment_batch

    image = torch.arange(2 * 1 * 2 * 2 * 2, dtype=torch.float32).reshape(2, 1, 2, 2, 2)
    label = (image > 7).float().repeat(1, 3, 1, 1, 1)
    # flip_prob 1: every axis flipped; scale and shift 0: intensities unchanged
    flipped, flipped_label = augment_batch(image, label, flip_prob=1.0, scale=0.0, shift=0.0)
    torch.testing.assert_close(flipped, image.flip([2, 3, 4]))
    torch.testing.assert_close(flipped_label, label.flip([2, 3, 4]))
    torch.manual_seed(0)
    jittered, same_label = augment_batch(image, label, flip_prob=0.0, scale=0.1, shift=0.1)
    torch.testing.assert_close(same_label, label)
    for i in range(2):
        # x * a + b per sample, with a in [0.9, 1.1] and b in [-0.1, 0.1]: fit a, b from two voxels
        x, y = image[i].flatten(), jittered[i].flatten()
        a = (y[5] - y[1]) / (x[5] - x[1])
        b = y[1] - a * x[1]
        assert 0.9 <= a <= 1.1 and -0.1 <= b <= 0.1
        torch.testing.assert_close(y, x * a + b)


def test_device_augmentation_leaves_the_loader_at_the_crop(dataset: Path, tmp_path: Path):
    chain = cached_train_transforms(PATCH, 1, device_augmentation=True, **OPTIONS)
    assert [type(t).__name__ for t in chain.transforms] == ["LoadCacheEntryd", "RandCropCachedPatchd"]
    for mode in ("memory", "none"):
        ds = training_dataset(_items(dataset)[:1], mode, PATCH, 1, OPTIONS, device_augmentation=True)
        names = [type(t).__name__ for t in ds.transform.transforms]
        assert "RandFlipd" not in names and names[-2:] == ["RandCropByPosNegLabeld", "DeleteItemsd"]


def test_default_cache_dir_is_a_user_cache(monkeypatch, tmp_path: Path):
    from brats_cggm.brats.data.cache.disk import default_cache_dir

    monkeypatch.setenv("BRATS_CGGM_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("BRATS_CGGM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "brats_cggm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "brats_cggm"


def test_entries_of_a_read_only_data_set(dataset: Path, tmp_path: Path):
    """The data set folder is only read: the cache goes elsewhere (a read-only data folder works)."""
    for path in sorted(dataset.rglob("*"), reverse=True):
        path.chmod(0o555 if path.is_dir() else 0o444)
    dataset.chmod(0o555)
    try:
        entries = fill_cache(_items(dataset)[:1], "val", tmp_path / "cache", data_options=OPTIONS, progress=False)
        assert read_entry_meta(entries[0]["entry"]) is not None
    finally:
        for path in [dataset, *dataset.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_items_without_case_id_are_named_by_their_files_and_still_checked(dataset: Path, tmp_path: Path):
    # MONAI Label's BundleTrainTask passes items of image and label alone (monailabel/tasks/train/bundle.py,
    # _fetch_datalist): the entries must still collate (no None) and keep their integrity checks.
    from monai.data import DataLoader

    items = [{"image": item["image"], "label": item["label"]} for item in _items(dataset)[:2]]
    cache = tmp_path / "cache"
    entries = fill_cache(items, "val", cache, data_options=OPTIONS, progress=False)
    names = [Path(item["image"][0]).name for item in items]
    assert [entry["case_id"] for entry in entries] == names
    assert [read_entry_meta(entry["entry"])["case_id"] for entry in entries] == names
    assert [Path(entry["entry"]).name.rsplit("-", 1)[0] for entry in entries] == names
    loader = DataLoader(validation_dataset(items, "disk", OPTIONS, cache_dir=cache), batch_size=1)
    assert [batch["case_id"] for batch in loader] == [[name] for name in names]
    # the same items name the same entries at the next run; a changed input rebuilds its entry alone
    report = disk_cache.FillReport()
    assert fill_cache(items, "val", cache, data_options=OPTIONS, progress=False, report=report) == entries
    assert report.valid == 2 and not report.built and not report.rebuilt
    flair = Path(items[1]["image"][0])
    image = nib.load(str(flair))
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj) * 1.5, image.affine), str(flair))
    report = disk_cache.FillReport()
    fill_cache(items, "val", cache, data_options=OPTIONS, progress=False, report=report)
    assert report.valid == 1 and [case for case, _ in report.rebuilt] == [names[1]]
    assert "changed" in report.rebuilt[0][1]
    # a damaged entry is refused by name when opened, as for items with a case_id
    np.save(Path(entries[0]["entry"]) / "image.npy", np.zeros((1, 1, 1, 1), dtype=np.float16))
    with pytest.raises(disk_cache.CacheEntryError, match=names[0]):
        LoadCacheEntryd(whole=True)(entries[0])
    with pytest.raises(ValueError, match="neither case_id nor image"):
        disk_cache.entry_name({"label": None})
