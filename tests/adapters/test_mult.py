"""Data files are data: a MulT pickle naming other globals and a ``.npy`` of objects are refused unread."""

from __future__ import annotations

import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigWorkflow

from brats_cggm.adapters.errors import AdapterDataError
from brats_cggm.adapters.iemocap import load_iemocap
from brats_cggm.adapters.mosi import load_mosi
from brats_cggm.adapters.mult import load_mult_pickle

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "multimodal_cggm" / "configs"


class _CreatesFile:
    """Unpickling this calls ``open(path, "w")``: what an unrestricted ``pickle.load`` would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def _read(path: Path) -> dict:
    with path.open("rb") as f:
        return pickle.load(f)


def _write(data: dict, path: Path, protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    with path.open("wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


def _malicious_copy(mosi_pickle: Path, tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "marker"
    data = _read(mosi_pickle)
    data["train"]["id"] = _CreatesFile(marker)
    return _write(data, tmp_path / "mosi_data.pkl"), marker


class _Python2Pickler(pickle._Pickler):
    """Writes byte and text strings as Python 2 ``str`` opcodes (``BINSTRING``), as Python 2 did."""

    def _save_python2_string(self, obj: bytes | str) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch = {**pickle._Pickler.dispatch, bytes: _save_python2_string, str: _save_python2_string}


def _python2_pickle(data: dict, path: Path) -> Path:
    with path.open("wb") as f:
        _Python2Pickler(f, protocol=2).dump(data)
    # numpy 1 (and so every Python 2 file) names its reconstruction functions under numpy.core
    path.write_bytes(path.read_bytes().replace(b"numpy._core.", b"numpy.core."))
    return path


def test_pickle_naming_another_global_is_refused_without_running_it(mosi_pickle, tmp_path):
    bad, marker = _malicious_copy(mosi_pickle, tmp_path)
    with pytest.raises(AdapterDataError, match=r"mosi_data\.pkl: refusing to load the global _?io\.open"):
        load_mosi(bad)
    assert not marker.exists()


def test_the_bundle_refuses_the_pickle_with_the_file_named(mosi_pickle, tmp_path):
    bad, marker = _malicious_copy(mosi_pickle, tmp_path)
    workflow = ConfigWorkflow(
        config_file=[str(BUNDLE / "train.yaml"), str(REPO / "configs" / "tasks" / "mosi.yaml")],
        workflow_type="train",
        dataset_dir=str(bad),
        output_dir=str(tmp_path / "out"),
        device="cpu",
    )
    with pytest.raises(RuntimeError) as excinfo:
        workflow.parser.get_parsed_content("data")
    messages, error = [], excinfo.value
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    # Python 3.12 pickles io.open as _io.open
    assert any(re.search(rf"{re.escape(str(bad))}: refusing to load the global _?io\.open", m) for m in messages), (
        messages
    )
    assert not marker.exists()


def test_not_a_pickle_is_a_named_data_error(tmp_path):
    bad = tmp_path / "mosi_data.pkl"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(AdapterDataError, match=r"mosi_data\.pkl: not a readable MulT pickle"):
        load_mult_pickle(bad)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_real_format_pickles_load_at_every_protocol(mosi_pickle, iemocap_pickle, tmp_path, protocol):
    expected = load_mult_pickle(mosi_pickle)
    mosi = load_mult_pickle(_write(_read(mosi_pickle), tmp_path / f"mosi{protocol}.pkl", protocol))
    for split, arrays in expected.items():
        for key, array in arrays.items():
            np.testing.assert_array_equal(mosi[split][key], array)
    iemocap = load_iemocap(_write(_read(iemocap_pickle), tmp_path / f"iemocap{protocol}.pkl", protocol))
    assert [iemocap.train[i]["label"].item() for i in range(5)] == [0, 1, 2, 3, 0]


def test_python2_pickle_with_numpy_core_names_loads_through_latin1(mosi_pickle, tmp_path):
    data = _read(mosi_pickle)
    data["train"]["scale"] = np.float32(2.5)  # a numpy scalar: multiarray.scalar
    data["train"]["names"] = np.array(["a", 1], dtype=object)
    path = _python2_pickle(data, tmp_path / "mosi_py2.pkl")
    assert b"cnumpy.core.multiarray\n_reconstruct" in path.read_bytes()
    with pytest.raises(UnicodeDecodeError):  # the array bytes are Python 2 str: only latin1 decodes them
        pickle.loads(path.read_bytes())
    expected, loaded = load_mult_pickle(mosi_pickle), load_mult_pickle(path)
    for split, arrays in expected.items():
        for key, array in arrays.items():
            np.testing.assert_array_equal(loaded[split][key], array)


def test_npy_of_objects_is_refused_with_the_file_named(iemocap_mmin, tmp_path):
    import shutil

    root = shutil.copytree(iemocap_mmin, tmp_path / "features")
    names = root / "target" / "1" / "val_int2name.npy"
    np.save(names, np.array([_CreatesFile(tmp_path / "marker")], dtype=object), allow_pickle=True)
    with pytest.raises(AdapterDataError, match=r"val_int2name\.npy: not a readable array"):
        load_iemocap(root)
    assert not (tmp_path / "marker").exists()
