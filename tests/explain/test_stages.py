"""The explain and explain_cnn stages end to end on a tiny prepared dataset, backbone and head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stage_loader import load_stage as _stage
import torch
import yaml
from tiny_models import comb

SIZE, N_CLASSES, SEED, DATASET_SEED = 64, 3, 1, 3
N_TEST, N_IMAGES = 7, 5




def _prepared(path: Path) -> None:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from PIL import Image as PILImage

    g = np.random.default_rng(0)
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c"])})

    def split(n):
        images, labels = [], []
        for i in range(n):
            c = i % N_CLASSES
            arr = g.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
            r, q = divmod(c, 2)
            arr[r * 32:(r + 1) * 32, q * 32:(q + 1) * 32] += 160
            images.append(PILImage.fromarray(arr, "RGB"))
            labels.append(c)
        return Dataset.from_dict({"image": images, "label": labels}, features=features)

    DatasetDict({"train": split(12), "test": split(N_TEST)}).save_to_disk(str(path))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """data/, models/ (random ResNet18), features/ and heads/tiny/B34/seed1 (k-means + concepts)."""
    from kmx_eval import io
    from kmx_eval.data import ImageDataset, load_batch, load_prepared
    from kmx_eval.explain.concepts import ConceptModel
    from kmx_eval.heads import KMeansHead, KMeansHeadModule, save_kmeans_head
    from kmx_eval.models.backbone import build_backbone, save_backbone
    from kmx_eval.models.blocks import BlockExtractor, BlockStats
    from kmx_eval.models.embeddings import combination_embeddings, extract_embedding_cache
    from kmx_eval.seeding import seed_everything

    root = tmp_path_factory.mktemp("explain")
    _prepared(root / "data/tiny")
    seed_everything(0)
    backbone = build_backbone("resnet18", N_CLASSES).eval()
    save_backbone(backbone, root / f"models/tiny/seed{SEED}",
                  {"architecture": "resnet18", "n_classes": N_CLASSES, "class_names": ["a", "b", "c"],
                   "image_size": SIZE, "weights": "none", "seed": SEED})
    dd = load_prepared(root / "data/tiny")
    cache = extract_embedding_cache(BlockExtractor(backbone), ImageDataset(dd["train"]),
                                    ImageDataset(dd["test"]), batch_size=8)
    io.save_npz(root / f"features/tiny/seed{SEED}.npz", cache)

    head_dir = root / f"heads/tiny/B34/seed{SEED}"
    z = combination_embeddings(cache, "train", comb("B34"), "standardize")
    head = KMeansHead(n_prototypes=2, n_init=1, random_state=0).fit(z, cache["train/labels"])
    save_kmeans_head(head, head_dir, meta={"normalisation": "standardize"})
    stats = BlockStats.from_dict(cache)
    module = KMeansHeadModule(BlockExtractor(backbone, blocks=(3, 4), logits=False), comb("B34"),
                              "standardize", stats, head.prototypes_)
    x, y, _, _ = load_batch(dd["train"], np.arange(12))
    with torch.no_grad():
        F = module.features(x)
    concepts = ConceptModel(n_concepts=2, scope="class", random_state=0, batch_size=16)
    concepts.fit_stream([(F, y)], 4, np.random.default_rng(0), progress=False)
    io.save_npz(head_dir / "concepts_class.npz", concepts.to_arrays())

    params = {
        "seeds": [SEED],
        "datasets": {"tiny": {"source": "synthetic", "n_classes": N_CLASSES, "seed": DATASET_SEED}},
        "backbone": {"architecture": "resnet18", "image_size": SIZE, "device": "cpu"},
        "combinations": ["B34"],
        "features": {"normalisation": "standardize", "batch_size": 4},
        "explain": {"n_images": N_IMAGES, "batch_size": 2, "ig_steps": 2,
                    "explainers": ["margin", "distance", "cam", "gradcam", "integrated_gradients",
                                   "random"],
                    "concepts": {"n_concepts": 2, "scope": "class"}},
        "evaluate": {"compare": []},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        yield root


def test_explain_stages_write_paired_maps(workdir):
    from kmx_eval import paths
    from kmx_eval.data import load_batch, load_prepared
    from kmx_eval.explain import evaluation_subset
    from kmx_eval.io import load_npz

    assert _stage("explain")(["tiny", "B34"]) == 0
    assert _stage("explain_cnn")(["tiny"]) == 0
    assert sorted(p.name for p in (workdir / "maps/tiny").iterdir()) == ["B34", "cnn"]
    kmeans = load_npz(paths.maps_file("tiny", "B34", SEED))
    cnn = load_npz(paths.maps_file("tiny", "cnn", SEED))

    # random runs on every model (its floor); no masks here, so no oracle
    assert set(kmeans) == {"indices", "targets", "predictions", "labels", "target", "margin", "distance",
                           "random", "concepts_class"}
    assert set(cnn) == {"indices", "targets", "predictions", "labels", "target", "cam", "gradcam",
                        "integrated_gradients", "random"}
    # The subset is drawn with the dataset's seed (3), not the training seed (1), and is shared.
    expected = evaluation_subset(N_TEST, N_IMAGES, DATASET_SEED)
    assert not np.array_equal(expected, evaluation_subset(N_TEST, N_IMAGES, SEED))
    for arrays in (kmeans, cnn):
        np.testing.assert_array_equal(arrays["indices"], expected)
        np.testing.assert_array_equal(arrays["labels"], expected % N_CLASSES)  # labels are i % 3
        # explain.target defaults to predicted: the maps explain the model's own decision
        assert str(arrays["target"]) == "predicted"
        np.testing.assert_array_equal(arrays["targets"], arrays["predictions"])
    for name in ("margin", "distance"):
        assert kmeans[name].shape == (N_IMAGES, SIZE, SIZE) and kmeans[name].dtype == np.float32
    assert kmeans["concepts_class"].dtype == np.int16
    assert kmeans["concepts_class"].shape == (N_IMAGES, SIZE, SIZE)
    # Class-scoped concepts: each image's ids belong to its target class (2 concepts per class).
    for ids, t in zip(kmeans["concepts_class"], kmeans["targets"]):
        assert set(np.unique(ids)) <= {2 * t, 2 * t + 1}
    for name in ("cam", "gradcam", "integrated_gradients", "random"):
        assert cnn[name].shape == (N_IMAGES, SIZE, SIZE) and cnn[name].dtype == np.float32

    # The CNN's predictions are its own argmax on the same images.
    from kmx_eval.models.backbone import load_backbone

    backbone, _ = load_backbone(paths.backbone_weights("tiny", SEED).parent)
    x, _, _, _ = load_batch(load_prepared(paths.prepared("tiny"))["test"], expected)
    with torch.no_grad():
        np.testing.assert_array_equal(cnn["predictions"], backbone(x).argmax(1).numpy())

    # Same params, same numbers.
    assert _stage("explain")(["tiny", "B34"]) == 0
    again = load_npz(paths.maps_file("tiny", "B34", SEED))
    for key in kmeans:
        np.testing.assert_array_equal(again[key], kmeans[key])

    # explain.target: label explains the ground-truth class instead, and says so in the file.
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["explain"]["target"] = "label"
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        assert _stage("explain_cnn")(["tiny"]) == 0
        by_label = load_npz(paths.maps_file("tiny", "cnn", SEED))
        assert str(by_label["target"]) == "label"
        np.testing.assert_array_equal(by_label["targets"], expected % N_CLASSES)
        assert not np.array_equal(by_label["targets"], by_label["predictions"])  # a random CNN errs
    finally:
        params["explain"]["target"] = "predicted"
        (workdir / "params.yaml").write_text(yaml.safe_dump(params))


def test_explain_stage_errors_are_one_line(workdir, capsys):
    assert _stage("explain")(["tiny", "B4"]) == 2
    assert "combination 'B4' is not in params combinations" in capsys.readouterr().err
