"""The hf source through a local save_to_disk copy (the same code path as the hub), and offline."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from kmx_eval.errors import DataError, UnavailableError

SIZE = 32


def _saved(path, n_per_class=4, labels="classlabel", with_test=False, bad_row=None):
    """A small hub-like dataset (columns img/fine/seg/extra) saved with save_to_disk."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
    from datasets import Image as ImageFeature

    names = ["ant", "bee", "cow"]

    def split(n, offset):
        imgs, labs, segs = [], [], []
        for i in range(n * len(names)):
            c = i % len(names)
            arr = np.zeros((12, 10, 3), dtype=np.uint8)
            arr[..., c] = 200 + offset
            imgs.append(Image.fromarray(arr))
            seg = np.zeros((12, 10), dtype=np.uint8)
            seg[:6] = 1
            segs.append(Image.fromarray(seg))
            labs.append(c if labels == "classlabel" else names[c])
        label_feature = ClassLabel(names=names) if labels == "classlabel" else Value("string")
        feats = Features({"img": ImageFeature(), "fine": label_feature, "seg": ImageFeature(),
                          "extra": Value("int64")})
        if bad_row is not None:  # stored bytes that no decoder reads, as in a damaged download
            imgs[bad_row] = {"bytes": b"not an image", "path": None}
        return Dataset.from_dict({"img": imgs, "fine": labs, "seg": segs, "extra": list(range(len(labs)))},
                                 features=feats)

    dd = DatasetDict({"train": split(n_per_class, 0), **({"test": split(2, 20)} if with_test else {})})
    dd.save_to_disk(str(path))
    return path


def _cfg(path, **kw):
    from kmx_eval.data import SOURCES

    spec = {"source": "hf", "name": str(path), "load_from_disk": True,
            "columns": {"image": "img", "label": "fine", "mask": "seg"}, **kw}
    return SOURCES.get("hf").Config.model_validate(spec)


def _build(cfg):
    from kmx_eval.data import prepare_dataset

    return prepare_dataset(cfg, SIZE, name="birds")


def test_local_copy_is_split_stratified_with_masks(tmp_path):
    from kmx_eval.data import class_names, decode_column, has_masks

    dd = _build(_cfg(_saved(tmp_path / "saved"), test_fraction=0.25, seed=1))
    assert class_names(dd) == ["ant", "bee", "cow"] and has_masks(dd)
    assert np.bincount(dd["test"]["label"]).tolist() == [1, 1, 1]
    assert np.bincount(dd["train"]["label"]).tolist() == [3, 3, 3]
    assert set(dd["train"].column_names) == {"image", "label", "mask"}
    images = decode_column(dd["train"])
    labels = np.asarray(dd["train"]["label"])
    assert images.shape == (9, SIZE, SIZE, 3)
    # The class's colour channel is the bright one: labels travelled with their images.
    assert (images.mean(axis=(1, 2)).argmax(axis=1) == labels).all()
    masks = decode_column(dd["train"], "mask")
    assert (masks[:, : SIZE // 2] == 255).all() and (masks[:, SIZE // 2:] == 0).all()


def test_named_test_split_and_string_labels(tmp_path):
    dd = _build(_cfg(_saved(tmp_path / "saved", labels="string", with_test=True), split_test="test",
                     columns={"image": "img", "label": "fine"}))
    assert [len(dd["train"]), len(dd["test"])] == [12, 6]
    assert dd["train"].features["label"].names == ["ant", "bee", "cow"]
    assert "mask" not in dd["train"].column_names


def test_missing_column_and_split_are_named(tmp_path):
    saved = _saved(tmp_path / "saved")
    with pytest.raises(DataError, match="column 'picture' is not in split 'train'"):
        _build(_cfg(saved, columns={"image": "picture", "label": "fine"}))
    with pytest.raises(DataError, match="no split 'valid'"):
        _build(_cfg(saved, split_test="valid"))
    with pytest.raises(DataError, match="does not exist"):
        _build(_cfg(tmp_path / "nowhere"))


def test_corrupt_sample_is_named_by_split_and_row(tmp_path):
    with pytest.raises(DataError, match="split 'train' row 4 .*not a readable image"):
        _build(_cfg(_saved(tmp_path / "saved", bad_row=4)))


def test_single_class_is_an_error_naming_the_dataset(tmp_path):
    from datasets import Dataset

    ds = Dataset.from_dict({"img": [Image.new("RGB", (8, 8))] * 4, "fine": [0] * 4})
    ds.save_to_disk(str(tmp_path / "one"))
    with pytest.raises(DataError, match="datasets.birds: .*has 1 class"):
        _build(_cfg(tmp_path / "one", columns={"image": "img", "label": "fine"}))


def test_offline_hub_name_fails_fast_with_one_sentence(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    # conftest sets HF_DATASETS_OFFLINE=1 before datasets is imported; pin it here too so the
    # test cannot wait for the network if the environment said otherwise.
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    from kmx_eval.data import SOURCES

    cfg = SOURCES.get("hf").Config(source="hf", name="kmx-test/not-cached-anywhere")
    start = time.monotonic()
    with pytest.raises(UnavailableError) as err:
        _build(cfg)
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "\n" not in message and message.count(". ") == 0
    assert "'kmx-test/not-cached-anywhere' could not be reached" in message
    assert "network" in message and "load_from_disk" in message


def test_trust_remote_code_warns(tmp_path):
    with pytest.warns(UserWarning, match="trust_remote_code"):
        _build(_cfg(_saved(tmp_path / "saved"), trust_remote_code=True))


def test_saved_folder_without_load_from_disk_says_so(tmp_path):
    with pytest.raises(DataError, match="set load_from_disk: true"):
        _build(_cfg(_saved(tmp_path / "saved"), load_from_disk=False))
