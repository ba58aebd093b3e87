"""The fit stage end to end on a tiny prepared dataset, backbone and embedding cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stage_loader import load_stage
import yaml
from tiny_models import comb

SIZE = 32
N_CLASSES = 3




def _prepared(path: Path) -> None:
    """3 classes (a bright quadrant each) at 32 px in the prepared format."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c"])})

    def split(n):
        images, labels = [], []
        for i in range(n):
            c = i % N_CLASSES
            arr = rng.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
            r, q = divmod(c, 2)
            arr[r * 16:(r + 1) * 16, q * 16:(q + 1) * 16] += 160
            images.append(PILImage.fromarray(arr, "RGB"))
            labels.append(c)
        return Dataset.from_dict({"image": images, "label": labels}, features=features)

    DatasetDict({"train": split(15), "test": split(9)}).save_to_disk(str(path))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """data/tiny, models/tiny/seed0 (random ResNet18) and features/tiny/seed0.npz, and params.yaml."""
    from kmx_eval.data import ImageDataset, load_prepared
    from kmx_eval.io import save_npz
    from kmx_eval.models.backbone import build_backbone, save_backbone
    from kmx_eval.models.blocks import BlockExtractor
    from kmx_eval.models.embeddings import extract_embedding_cache
    from kmx_eval.seeding import seed_everything

    root = tmp_path_factory.mktemp("fit")
    _prepared(root / "data" / "tiny")
    seed_everything(0)
    backbone = build_backbone("resnet18", N_CLASSES).eval()
    save_backbone(backbone, root / "models/tiny/seed0",
                  {"architecture": "resnet18", "n_classes": N_CLASSES, "class_names": ["a", "b", "c"],
                   "image_size": SIZE, "weights": "none", "seed": 0})
    dd = load_prepared(root / "data" / "tiny")
    cache = extract_embedding_cache(BlockExtractor(backbone), ImageDataset(dd["train"]),
                                    ImageDataset(dd["test"]), batch_size=8)
    save_npz(root / "features/tiny/seed0.npz", cache)
    params = {
        "seeds": [0],
        "datasets": {"tiny": {"source": "synthetic", "n_classes": N_CLASSES}},
        "backbone": {"architecture": "resnet18", "image_size": SIZE, "device": "cpu"},
        "combinations": ["B4", "B34"],
        "features": {"normalisation": "none", "batch_size": 4},
        "head": {"n_prototypes": 2, "n_init": 2},
        "explain": {"explainers": ["margin"],
                    "concepts": {"n_concepts": 2, "n_images": 10, "locations_per_image": 3,
                                 "batch_size": 16}},
        "evaluate": {"compare": [["B4", "B34"]]},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        yield root


def _set_params(root: Path, **sections) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in sections.items():
        if isinstance(value, dict):
            params[key].update(value)
        else:
            params[key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_fit_b4_writes_the_contracted_files(workdir):
    from kmx_eval.explain.concepts import ConceptModel
    from kmx_eval.heads import load_kmeans_head, load_linear_sem, load_probe, read_head_meta
    from kmx_eval.io import load_npz
    from kmx_eval.models.embeddings import combination_embeddings

    assert load_stage("fit")(["tiny", "B4"]) == 0
    assert [p.name for p in (workdir / "heads/tiny").iterdir()] == ["B4"]  # no temporary left
    seed_dir = workdir / "heads/tiny/B4/seed0"
    assert sorted(p.name for p in seed_dir.iterdir()) == [
        "concepts_class.json", "concepts_class.npz", "concepts_global.json", "concepts_global.npz",
        "kmeans.json", "kmeans.npz", "kmeans_kmex.json", "kmeans_kmex.npz", "linear.json", "linear.npz",
        "neighbours.npz", "probe.json", "probe.npz"]

    cache = load_npz(workdir / "features/tiny/seed0.npz")
    z_tr = combination_embeddings(cache, "train", comb("B4"), "none")
    z_te = combination_embeddings(cache, "test", comb("B4"), "none")
    head, probe = load_kmeans_head(seed_dir), load_probe(seed_dir)
    assert head.prototypes_.shape == (N_CLASSES, 2, 512)
    assert read_head_meta(seed_dir, "kmeans")["normalisation"] == "none"
    assert read_head_meta(seed_dir, "kmeans")["labels"] == "ground_truth"

    metrics = json.loads((workdir / "metrics/tiny/B4/fit.json").read_text())
    assert list(metrics) == ["seed0"]
    m = metrics["seed0"]
    assert sorted(m) == ["cnn_accuracy", "kmeans_accuracy", "kmeans_agreement", "kmeans_kmex_accuracy",
                         "kmeans_kmex_agreement", "probe_accuracy", "probe_agreement", "variance_share_B4"]
    assert m["variance_share_B4"] == pytest.approx(1.0)
    cnn_te = cache["test/logits"].argmax(1)
    assert m["cnn_accuracy"] == pytest.approx(np.mean(cnn_te == cache["test/labels"]))
    assert m["kmeans_accuracy"] == pytest.approx(head.score(z_te, cache["test/labels"]))
    assert m["probe_agreement"] == pytest.approx(np.mean(probe.predict(z_te) == cnn_te))
    # KMEx's reference head: raw pooled B4, ground truth, KMEx's 10 restarts, seeded by the training seed.
    from kmx_eval.heads.kmex import fit_kmex_reference

    kmex = load_kmeans_head(seed_dir, "kmeans_kmex")
    assert kmex.n_init == 10 and read_head_meta(seed_dir, "kmeans_kmex")["normalisation"] == "none"
    np.testing.assert_array_equal(kmex.prototypes_, fit_kmex_reference(
        z_tr, cache["train/labels"], n_prototypes=2, seed=0).prototypes_)
    assert m["kmeans_kmex_accuracy"] == pytest.approx(kmex.score(z_te, cache["test/labels"]))

    # On B4 without normalisation, the CNN's own fc is the linear head: it reproduces the logits.
    sem = load_linear_sem(seed_dir)
    np.testing.assert_allclose(sem.decision_function(z_te), cache["test/logits"], rtol=1e-4, atol=1e-4)
    nb = load_npz(seed_dir / "neighbours.npz")
    assert str(nb["linear_source"]) == "cnn"
    # A prototype that is the mean of two samples is equidistant from both: compare distances.
    d = np.sqrt(((head.prototypes_[:, :, None] - z_tr[None, None]) ** 2).sum(-1))
    chosen = np.take_along_axis(d, nb["kmeans"][..., None], -1)[..., 0]
    np.testing.assert_allclose(chosen, d.min(-1), rtol=1e-9)
    np.testing.assert_allclose(nb["kmeans_distance"], d.min(-1), rtol=1e-9)
    dl = ((sem.prototypes_[:, None] - z_tr[None]) ** 2).sum(-1)
    np.testing.assert_allclose(dl[np.arange(N_CLASSES), nb["linear"]], dl.min(-1), rtol=1e-9)

    arrays = load_npz(seed_dir / "concepts_global.npz")
    concepts = ConceptModel.from_arrays(arrays)
    assert concepts.centres_.shape == (2, 512)
    shares = arrays["prototype_concepts"]
    assert shares.shape == (N_CLASSES, 2, 2)
    filled = ~np.isnan(shares).any(-1)
    assert filled.any()
    np.testing.assert_allclose(shares[filled].sum(-1), 1.0)
    assert len(arrays["images"]) == 10 and np.all(np.diff(arrays["images"]) > 0)
    assert json.loads((seed_dir / "concepts_global.json").read_text())["n_ids"] == 2
    assert json.loads((seed_dir / "concepts_class.json").read_text())["n_ids"] == 2 * N_CLASSES


def test_fit_is_reproducible(workdir):
    from kmx_eval.io import load_npz

    fit = load_stage("fit")
    assert fit(["tiny", "B4"]) == 0
    first = {n: load_npz(workdir / f"heads/tiny/B4/seed0/{n}.npz") for n in ("kmeans", "probe", "concepts_global",
                                                                             "concepts_class")}
    assert fit(["tiny", "B4"]) == 0
    for name, arrays in first.items():
        again = load_npz(workdir / f"heads/tiny/B4/seed0/{name}.npz")
        for key, value in arrays.items():
            np.testing.assert_array_equal(again[key], value, err_msg=f"{name}.npz {key}")


def test_fit_b34_standardized_uses_probe_prototypes_and_class_concepts(workdir):
    from kmx_eval.io import load_npz

    _set_params(workdir, features={"normalisation": "standardize"}, explain={
        "explainers": ["margin"], "concepts": {"n_concepts": 2, "n_images": 12, "scope": "class",
                                              "locations_per_image": 4, "batch_size": 16}})
    assert load_stage("fit")(["tiny", "B34"]) == 0
    seed_dir = workdir / "heads/tiny/B34/seed0"
    assert not (seed_dir / "linear.npz").exists()
    assert not (seed_dir / "kmeans_kmex.npz").exists()  # KMEx's head only beside the deepest block alone
    nb = load_npz(seed_dir / "neighbours.npz")
    assert str(nb["linear_source"]) == "probe" and nb["linear"].shape == (N_CLASSES,)
    assert load_npz(seed_dir / "kmeans.npz")["prototypes"].shape == (N_CLASSES, 2, 256 + 512)
    assert not (seed_dir / "concepts_global.npz").exists()  # only the scopes listed
    arrays = load_npz(seed_dir / "concepts_class.npz")
    assert arrays["prototype_concepts"].shape == (N_CLASSES, 2, 2 * N_CLASSES)
    # Class-scoped concepts: a prototype of class c is made only of class c's concepts.
    shares = arrays["prototype_concepts"]
    for c in range(N_CLASSES):
        other = np.delete(shares[c], np.s_[2 * c:2 * c + 2], axis=-1)
        assert np.nan_to_num(other).sum() == 0


def test_fit_errors_are_one_line_and_leave_nothing(workdir, capsys):
    fit = load_stage("fit")
    assert fit(["tiny", "B234"]) == 2
    assert "combination 'B234' is not in params combinations" in capsys.readouterr().err
    assert fit(["tiny", "B34_equal"]) == 2
    err = capsys.readouterr().err.strip()
    assert "B34_equal" in err and "_channels, _balanced" in err and len(err.splitlines()) == 1
    (workdir / "features/tiny/seed0.npz").rename(workdir / "features/tiny/away.npz")
    try:
        assert fit(["tiny", "B4"]) == 2
        err = capsys.readouterr().err.strip()
        assert "seed0.npz does not exist" in err and len(err.splitlines()) == 1
        # The previous, complete heads folder is still there; no temporary is left beside it.
        assert sorted(p.name for p in (workdir / "heads/tiny").iterdir()) == ["B34", "B4"]
    finally:
        (workdir / "features/tiny/away.npz").rename(workdir / "features/tiny/seed0.npz")


def test_balanced_weighting_equalises_the_blocks_variance_shares(workdir):
    """B34 weighs B4 by its 512 channels against B3's 256; balanced gives each block the same total
    variance (up to bilinear smoothing of B4 onto B3's grid), and is its own head folder."""
    _set_params(workdir, combinations=["B4", "B34", "B34_balanced"],
                features={"normalisation": "standardize"},
                explain={"explainers": ["margin"], "concepts": {"n_concepts": 2, "n_images": 12,
                                                                "locations_per_image": 4, "batch_size": 16}})
    fit = load_stage("fit")
    assert fit(["tiny", "B34"]) == 0 and fit(["tiny", "B34_balanced"]) == 0
    plain = json.loads((workdir / "metrics/tiny/B34/fit.json").read_text())["seed0"]
    balanced = json.loads((workdir / "metrics/tiny/B34_balanced/fit.json").read_text())["seed0"]
    assert plain["variance_share_B4"] > 0.6
    assert abs(balanced["variance_share_B4"] - 0.5) < abs(plain["variance_share_B4"] - 0.5)
    assert balanced["variance_share_B3"] + balanced["variance_share_B4"] == pytest.approx(1.0)
    from kmx_eval.heads import read_head_meta
    assert read_head_meta(workdir / "heads/tiny/B34_balanced/seed0", "kmeans")["block_weighting"] == "balanced"
