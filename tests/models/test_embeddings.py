"""The pooled-embedding cache gives z_S of every combination exactly as pool(combine(...)) does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from kmx_eval.errors import DataError
from kmx_eval.models.blocks import BlockExtractor, BlockStats, combine, pool
from kmx_eval.models.blocks import resize_to
from kmx_eval.models.embeddings import (
    combination_embeddings,
    extract_embedding_cache,
    pooling_weights,
)
from tiny_models import comb

COMBINATIONS = ["B4", "B34", "B234", "B24", "B1234", "B1", "B13"]
NORMALISATIONS = ["none", "l2", "standardize"]


@pytest.fixture(scope="module")
def setup():
    """A random ResNet18 (BatchNorm running stats perturbed, so eval mode is not the identity)."""
    from kmx_eval.models.backbone import build_backbone
    from kmx_eval.seeding import seed_everything

    seed_everything(0)
    model = build_backbone("resnet18", 3)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    model.eval()
    # 72 px: grids 18, 9, 5, 3. 5 -> 9, 5 -> 18, 3 -> 5 are not integer factors, where the mean of
    # a bilinear resize is not the plain mean (an identity that held only by symmetry would fail).
    x_train = torch.randn(10, 3, 72, 72, generator=g)
    x_test = torch.randn(6, 3, 72, 72, generator=g)
    y_train, y_test = torch.arange(10) % 3, torch.tensor([2, 0, 1, 1, 0, 2])
    return model, (x_train, y_train), (x_test, y_test)


class Items(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i]), i


@pytest.fixture(scope="module", params=["bilinear", "nearest"])
def cache(request, setup):
    model, train, test = setup
    extractor = BlockExtractor(model)
    # batch_size 4: several uneven batches, so streaming and row placement are exercised.
    out = extract_embedding_cache(extractor, Items(*train), Items(*test), batch_size=4,
                                  resize=request.param, device="cpu")
    return request.param, out


def _live(model, x):
    with torch.no_grad():
        return BlockExtractor(model).eval()(x)


@pytest.fixture(scope="module")
def live(setup):
    """Live block activations of both splits, computed once for all parametrised cases."""
    model, (x_train, _), (x_test, _) = setup
    return {"train": _live(model, x_train), "test": _live(model, x_test)}


@pytest.mark.parametrize("combination", COMBINATIONS)
@pytest.mark.parametrize("normalisation", NORMALISATIONS)
def test_cache_equals_pooled_live_combined_maps(live, cache, combination, normalisation):
    resize, arrays = cache
    stats = BlockStats.from_dict(arrays)
    for split in ("train", "test"):
        z = pool(combine(live[split], comb(combination), normalisation, stats, resize)).numpy()
        cached = combination_embeddings(arrays, split, comb(combination), normalisation)
        assert cached.dtype == np.float32 and cached.shape == z.shape
        np.testing.assert_allclose(cached, z, rtol=1e-4, atol=1e-5)


def test_b4_none_is_the_input_of_the_cnns_linear_layer(setup, cache):
    model, _, (x, _) = setup
    _, arrays = cache
    z4 = torch.from_numpy(combination_embeddings(arrays, "test", comb("B4"), "none"))
    with torch.no_grad():
        torch.testing.assert_close(model.fc(z4), model(x), rtol=1e-5, atol=1e-5)


def test_cache_holds_logits_labels_and_training_statistics(setup, live, cache):
    model, (x_train, y_train), (x_test, y_test) = setup
    _, arrays = cache
    with torch.no_grad():
        np.testing.assert_allclose(arrays["test/logits"], model(x_test).numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(arrays["train/logits"], model(x_train).numpy(), rtol=1e-5, atol=1e-5)
    assert arrays["train/labels"].dtype == np.int64
    assert arrays["train/labels"].tolist() == y_train.tolist()
    assert arrays["test/labels"].tolist() == y_test.tolist()
    # Statistics are over every location of the training split only.
    acts = live["train"]
    for b in (1, 2, 3, 4):
        a = acts[b].transpose(0, 1).reshape(acts[b].shape[1], -1).double().numpy()
        np.testing.assert_allclose(arrays[f"stats/B{b}/mean"], a.mean(1), rtol=1e-5, atol=1e-6)
        # A channel constant over the training split (dead ReLU) is only centred: sigma := 1.
        expected_std = np.where(a.std(1) < 1e-6, 1.0, a.std(1))
        np.testing.assert_allclose(arrays[f"stats/B{b}/std"], expected_std, rtol=1e-4, atol=1e-6)


def test_cache_has_every_part_and_no_spatial_map(cache):
    _, arrays = cache
    parts = {k for k in arrays if "@" in k}
    expected = {f"{split}/{norm}/B{b}@B{g}" for split in ("train", "test") for norm in ("none", "l2")
                for b in (1, 2, 3, 4) for g in (1, 2, 3, 4) if g <= b}
    assert parts == expected  # 2 splits x 2 normalisations x 10 (b, g) pairs
    channels = {1: 64, 2: 128, 3: 256, 4: 512}
    for key in parts:
        n = 10 if key.startswith("train") else 6
        assert arrays[key].shape == (n, channels[int(key.split("/B")[1][0])]), key
    assert all(a.ndim <= 2 and a.dtype in (np.float32, np.int64) for a in arrays.values())
    # B3 (5x5) on B1's grid (18x18) is not an integer factor: its part differs from the plain mean,
    # so the identity test above would catch a cache that ignored the grid.
    assert not np.allclose(arrays["test/none/B3@B1"], arrays["test/none/B3@B3"], rtol=1e-3, atol=0)
    np.testing.assert_allclose(arrays["test/none/B4@B2"], arrays["test/none/B4@B4"], rtol=1e-5, atol=1e-6)


def test_cache_follows_the_extractors_blocks_and_names_missing_ones(setup):
    model, train, test = setup
    arrays = extract_embedding_cache(BlockExtractor(model, blocks=(2, 4)), Items(*train), Items(*test),
                                     batch_size=8)
    assert sorted(k for k in arrays if k.startswith("train/none/")) == [
        "train/none/B2@B2", "train/none/B4@B2", "train/none/B4@B4"]
    assert combination_embeddings(arrays, "test", comb("B24"), "standardize").shape == (6, 640)
    assert not model.training  # extraction ran in eval mode and left the backbone's mode alone
    with pytest.raises(DataError, match=r"'test/none/B3@B3'.*needs block B3, cached blocks: B2, B4"):
        combination_embeddings(arrays, "test", comb("B34"), "none")


@pytest.mark.parametrize("resize", ["bilinear", "nearest"])
@pytest.mark.parametrize("source, grid", [((3, 3), (12, 12)), ((2, 2), (16, 16)), ((4, 4), (13, 13))])
def test_pooling_weights_give_the_mean_of_the_resized_map(resize, source, grid):
    w = pooling_weights(source, grid, resize)
    assert w.shape == source and float(w.sum()) == pytest.approx(1.0)
    a = torch.randn(4, 5, *source, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.einsum("nchw,hw->nc", a, w), pool(resize_to(a, grid, resize)))
    uniform = torch.full(source, 1.0 / (source[0] * source[1]))
    if grid[0] % source[0] == 0:
        # An integer factor covers every source cell equally (both modes): P_{b@g} = P_{b@b}.
        torch.testing.assert_close(w, uniform)
    else:
        # 4 -> 13 does not: border cells weigh differently from the centre.
        assert not torch.allclose(w, uniform, rtol=1e-3, atol=0)


@pytest.mark.parametrize("normalisation", ["none", "standardize"])
def test_balanced_cache_equals_pooled_live_balanced_maps(live, cache, normalisation):
    """The balanced weighting scales each block of F_S and of z_S alike (exact: pooling is linear)."""
    resize, arrays = cache
    stats = BlockStats.from_dict(arrays)
    z = pool(combine(live["train"], comb("B234_balanced"), normalisation, stats, resize)).numpy()
    cached = combination_embeddings(arrays, "train", comb("B234_balanced"), normalisation)
    np.testing.assert_allclose(cached, z, rtol=1e-4, atol=1e-5)
    plain = combination_embeddings(arrays, "train", comb("B234"), normalisation)
    assert not np.allclose(plain, cached)


def test_block_stats_are_read_from_the_cache_file_alone(tmp_path):
    from kmx_eval import io
    from kmx_eval.errors import KmxError
    from kmx_eval.models.embeddings import load_block_stats

    rng = np.random.default_rng(0)
    cache = {"train/labels": np.arange(4), "train/none/B4@B4": rng.random((4, 8), dtype=np.float32),
             "stats/B3/mean": rng.random(4, dtype=np.float32), "stats/B3/std": rng.random(4, dtype=np.float32),
             "stats/B4/mean": rng.random(8, dtype=np.float32), "stats/B4/std": rng.random(8, dtype=np.float32)}
    io.save_npz(tmp_path / "seed0.npz", cache)
    stats = load_block_stats(tmp_path / "seed0.npz")
    assert stats.blocks == (3, 4)
    for b in (3, 4):
        np.testing.assert_array_equal(stats.mean[b], cache[f"stats/B{b}/mean"])
        np.testing.assert_array_equal(stats.std[b], cache[f"stats/B{b}/std"])
    with pytest.raises(KmxError, match="seed1.npz does not exist; run the embed stage"):
        load_block_stats(tmp_path / "seed1.npz")
