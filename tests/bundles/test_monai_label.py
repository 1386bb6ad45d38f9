"""The BraTS bundle in MONAI Label: trained and used through its REST API, as its bundle app runs bundles.

MONAI Label (``monailabel``, not a dependency of this project: CI skips this test) runs a bundle with
``BundleTrainTask`` (``monailabel/tasks/train/bundle.py``: it overrides ``bundle_root``, ``device``,
``train#trainer#max_epochs``, ``train#dataset#data``, ``validate#dataset#data`` and ``train#handlers``, its items
holding ``image`` and ``label`` only) and ``BundleInferTask`` (``monailabel/tasks/infer/bundle.py``: it sets
``bundle_root`` and ``device``, takes ``preprocessing``, ``inferer`` and ``postprocessing``, drops the
``SaveImaged`` steps, appends its ``Restored`` and writes the label map itself, naming its labels from the
metadata's output ``channel_def``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from brats_cggm.brats.data.discovery import discover_dataset
from brats_cggm.brats.inference.segmenter import InsertZeroChannelsd, SaveSegmentationd
from tests.helpers.bundle_runs import CONFIGS, TINY_FEATURES

MODEL = "brats_cggm"
#: The user's edits of their copy of the bundle (MONAI Label passes no other key): a tiny network and window,
#: and dataset_dir, where the bundle reads the label convention and channel order (phantoms of the datastore's).
TINY = {"network_def#features": list(TINY_FEATURES), "patch_size": [32, 32, 32], "sw_batch_size": 1}


def _train_keys(**overrides: object) -> dict:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser.update(overrides)
    return {key: parser.get_parsed_content(key) for key in ("output_dir", "model_path", "overwrite")}


def test_plain_run_keeps_its_output_dir_and_a_bundle_app_run_writes_the_bundle_s_model(tmp_path: Path):
    # without monailabel: the keys BundleTrainTask sets (bundle_root) and what they make of the outputs
    assert _train_keys() == {
        "output_dir": "./runs/brats_cggm",
        "model_path": "./runs/brats_cggm/models/model.pt",
        "overwrite": False,
    }
    assert _train_keys(output_dir="out") == {
        "output_dir": "out",
        "model_path": "out/models/model.pt",
        "overwrite": False,
    }
    bundle = str(tmp_path / "bundle")
    assert _train_keys(bundle_root=bundle) == {
        "output_dir": f"{bundle}/runs/brats_cggm",
        "model_path": f"{bundle}/models/model.pt",
        "overwrite": False,
    }


def test_a_bundle_folder_s_model_is_replaced_only_with_overwrite(tmp_path: Path):
    from monai.bundle import ConfigParser

    model = tmp_path / "bundle" / "models" / "model.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights")
    for overrides, refused in (({}, True), ({"overwrite": True}, False), ({"resume": True}, False)):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "train.yaml"))
        parser.update({"bundle_root": str(tmp_path / "bundle"), **overrides})
        if refused:
            with pytest.raises(RuntimeError) as refusal:  # MONAI's wrapping of the step's FileExistsError
                parser.get_parsed_content("initialize#1")
            assert "model.pt: exists; pass --overwrite true" in str(refusal.value.__cause__)
        else:
            parser.get_parsed_content("initialize#1")
    assert model.read_bytes() == b"weights"


def test_inference_steps_fit_monai_label_s_rules():
    # BundleInferTask drops the SaveImaged steps of postprocessing (post_filter=[SaveImaged]); its requests
    # carry no "missing" key of inference_items
    from monai.transforms import SaveImaged

    saver = SaveSegmentationd(keys="pred", output_dir="unused")
    assert isinstance(saver, SaveImaged)
    image = torch.ones(4, 2, 2, 2)
    d = InsertZeroChannelsd(keys="image", positions_key="missing")({"image": image, "image_path": "case.nii.gz"})
    assert torch.equal(d["image"], image)


def _bundle_copy(root: Path, dataset_dir: Path) -> Path:
    from monai.bundle import ConfigParser

    bundle = root / MODEL
    (bundle / "configs").mkdir(parents=True)
    shutil.copy(CONFIGS / "metadata.json", bundle / "configs")
    shutil.copy(CONFIGS / "logging.conf", bundle / "configs")
    # overwrite: MONAI Label retrains the bundle in place at each request, which the copy it serves allows explicitly
    train = {"num_samples": 1, "val_interval": 1, "overwrite": True}
    for name, extra in (("train.yaml", train), ("inference.yaml", {})):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / name))
        for key, value in {**TINY, "dataset_dir": str(dataset_dir), **extra}.items():
            parser[key] = value
        ConfigParser.export_config_file(parser.get(), str(bundle / "configs" / name), fmt="yaml")
    return bundle


def _datastore(root: Path, dataset_dir: Path) -> tuple[Path, list[dict]]:
    """MONAI Label's local datastore: one 4-D image per case (channels in the network's order) in the folder,
    its BraTS 2021 label map in labels/final under the same name."""
    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    items = discover_dataset(dataset_dir).items
    for item in items:
        volumes = [nib.load(p) for p in item["image"]]
        name = f"{item['case_id']}.nii.gz"
        stacked = np.stack([np.asanyarray(v.dataobj) for v in volumes], axis=-1)
        nib.save(nib.Nifti1Image(stacked, volumes[0].affine), str(studies / name))
        shutil.copy(item["label"], studies / "labels" / "final" / name)
    return studies, items


APP = '''
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask


class BratsApp(MONAILabelApp):
    """The bundle app's tasks (sample-apps/monaibundle/main.py) on one local bundle folder."""

    def __init__(self, app_dir, studies, conf):
        self.bundle = conf["bundle"]
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="brats_cggm", description="test")

    def init_infers(self):
        task = BundleInferTask(self.bundle, self.conf)
        return {"brats_cggm": task} if task.is_valid() else {}

    def init_trainers(self):
        return {"brats_cggm": BundleTrainTask(self.bundle, self.conf)}
'''


def _client(app_dir: Path, studies: Path, bundle: Path, monkeypatch: pytest.MonkeyPatch):
    """MONAI Label's REST app on ``app_dir`` (as its own endpoint tests make it, tests/unit/endpoints/context.py)."""
    from fastapi.testclient import TestClient
    from monailabel.config import settings

    settings.MONAI_LABEL_APP_DIR = str(app_dir)
    settings.MONAI_LABEL_STUDIES = str(studies)
    settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD = False
    settings.MONAI_LABEL_APP_CONF = {"bundle": str(bundle), "auto_update_scoring": "false", "skip_scoring": "true"}
    settings.MONAI_LABEL_SESSION_PATH = str(app_dir / "sessions")
    for key, value in settings.model_dump().items():
        monkeypatch.setenv(key, json.dumps(value) if isinstance(value, (list, dict)) else str(value))
    (app_dir / "logs").mkdir(parents=True, exist_ok=True)
    (app_dir / "logs" / "app.log").touch()
    from monailabel.app import app
    from monailabel.interfaces.utils.app import clear_cache

    clear_cache()
    return TestClient(app)


def test_monai_label_trains_on_items_without_case_id_and_segments_with_brats_labels(
    phantom_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip(
        "monailabel", reason="MONAI Label is not installed (pip install monailabel; CI does not install it)"
    )
    from monai.bundle import ConfigWorkflow

    monkeypatch.chdir(tmp_path)  # nothing may land in the server's working folder
    bundle = _bundle_copy(tmp_path, phantom_dataset)
    studies, items = _datastore(tmp_path, phantom_dataset)
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "main.py").write_text(APP)

    # one epoch through POST /train (in this process): 3 training and 1 validation case, image and label alone
    client = _client(app_dir, studies, bundle, monkeypatch)
    request = {"model": MODEL, "max_epochs": 1, "val_split": 0.25, "multi_gpu": False, "device": "cpu"}
    response = client.post("/train/?run_sync=True", json=request)
    assert response.status_code == 200, response.text
    assert (bundle / "models" / "model.pt").is_file()  # where BundleInferTask loads it
    run = bundle / "runs" / MODEL
    assert (run / "metrics.json").is_file() and (run / "models" / "checkpoint.pt").is_file()
    assert not (tmp_path / "runs").exists()
    recorded = json.loads((run / "configs" / "split.json").read_text())
    names = sorted(f"{item['case_id']}.nii.gz" for item in items)
    assert sorted(recorded["training"] + recorded["validation"]) == names
    # a second request retrains the bundle in place (no refusal of the previous run)
    response = client.post("/train/?run_sync=True", json=request)
    assert response.status_code == 200, response.text

    # the server started again, now that the bundle has weights: its inference task is valid
    client = _client(app_dir, studies, bundle, monkeypatch)
    info = client.get("/info/").json()
    labels = {"necrotic tumour core": 1, "peritumoural edema": 2, "enhancing tumour": 4}
    assert info["models"][MODEL]["labels"] == labels
    case = items[0]["case_id"]
    response = client.post(f"/infer/{MODEL}?image={case}&output=image", data={"params": json.dumps({"device": "cpu"})})
    assert response.status_code == 200, response.text
    written = tmp_path / "label.nii.gz"
    written.write_bytes(response.content)
    label = nib.load(str(written))
    assert not (bundle / "predictions").exists()  # SaveSegmentationd dropped with MONAI Label's SaveImaged filter

    # the same case through the bundle's own inference workflow: the same BraTS labels in the same grid
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.yaml"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(bundle),
        output_dir=str(tmp_path / "plain"),
        device="cpu",
        dataset_data=f"$inference_items([i for i in @datalist.items if i['case_id'] == '{case}'])",
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    reference = nib.load(str(tmp_path / "plain" / f"{case}.nii.gz"))
    assert label.shape == reference.shape
    np.testing.assert_allclose(label.affine, reference.affine, atol=1e-4)
    values = np.asarray(label.dataobj)
    assert set(np.unique(values).tolist()) <= {0, *labels.values()}
    assert values.any()
    np.testing.assert_array_equal(values, np.asarray(reference.dataobj))
