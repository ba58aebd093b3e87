"""Blocks: the extractor taps B1..B4 in one pass, F_S's shapes, channel order, normalisations, stats."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kmx_eval.errors import DataError, ParamsError
from kmx_eval.models.blocks import (
    BlockExtractor,
    BlockStats,
    BlockStatsAccumulator,
    block_channels,
    combine,
    normalise_block,
    pool,
)
from kmx_eval.models.combination import Combination
from tiny_models import comb


@pytest.fixture
def x64():
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_extractor_returns_every_block_and_the_cnns_own_logits(tiny_resnet18, x64):
    extractor = BlockExtractor(tiny_resnet18).eval()
    with torch.no_grad():
        acts = extractor(x64)
        expected = tiny_resnet18(x64)
    assert set(acts) == {1, 2, 3, 4, "logits"}
    # ResNet18 at 64 px: strides 4, 8, 16, 32.
    assert {b: tuple(acts[b].shape) for b in (1, 2, 3, 4)} == {
        1: (3, 64, 16, 16), 2: (3, 128, 8, 8), 3: (3, 256, 4, 4), 4: (3, 512, 2, 2)}
    assert torch.equal(acts["logits"], expected)
    assert extractor.channels == {1: 64, 2: 128, 3: 256, 4: 512}
    assert not extractor.training  # takes the backbone's mode (a new Module would be training)
    # z_4 is exactly the input of the CNN's linear layer: fc(pool(A_4)) are the logits.
    torch.testing.assert_close(tiny_resnet18.fc(pool(acts[4])), expected, rtol=1e-5, atol=1e-5)


def test_extractor_shares_the_backbones_parameters(tiny_resnet18, x64):
    extractor = BlockExtractor(tiny_resnet18, blocks=(4,)).eval()
    with torch.no_grad():
        tiny_resnet18.layer4[1].conv2.weight.mul_(2.0)  # e.g. load_state_dict after building
        assert torch.equal(extractor(x64)["logits"], tiny_resnet18(x64))


def test_extractor_runs_the_network_once_and_returns_only_requested_blocks(tiny_resnet18, x64):
    calls = []
    tiny_resnet18.conv1.register_forward_hook(lambda *a: calls.append("conv1"))
    tiny_resnet18.fc.register_forward_hook(lambda *a: calls.append("fc"))
    extractor = BlockExtractor(tiny_resnet18, blocks=(2, 4)).eval()
    calls.clear()  # building traces the graph, which calls every module once per mode
    with torch.no_grad():
        acts = extractor(x64)
    assert set(acts) == {2, 4, "logits"} and calls == ["conv1", "fc"]
    # Not asserted (the machine is shared), printed for the record with -s.
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(5):
            tiny_resnet18(x64)
        t1 = time.perf_counter()
        for _ in range(5):
            extractor(x64)
        t2 = time.perf_counter()
    print(f"extractor / bare backbone forward time: {(t2 - t1) / (t1 - t0):.2f}")


def test_extractor_without_logits_stops_at_the_deepest_tapped_block(tiny_resnet18, x64):
    calls = []
    tiny_resnet18.layer3.register_forward_hook(lambda *a: calls.append("layer3"))
    extractor = BlockExtractor(tiny_resnet18, blocks=(1, 2), logits=False).eval()
    calls.clear()  # building traces the graph, which calls every module once per mode
    with torch.no_grad():
        assert set(extractor(x64)) == {1, 2}
    assert calls == []


@pytest.mark.parametrize("blocks", [(), (0,), (1, 5)])
def test_extractor_refuses_blocks_outside_1_to_4(tiny_resnet18, blocks):
    with pytest.raises(ParamsError, match=r"non-empty subset of \(1, 2, 3, 4\)"):
        BlockExtractor(tiny_resnet18, blocks=blocks)


def test_block_channels_of_resnet50():
    from kmx_eval.models.backbone import build_backbone

    assert block_channels(build_backbone("resnet50", 2)) == {1: 256, 2: 512, 3: 1024, 4: 2048}


def test_b24_has_128_plus_512_channels_on_b2s_grid_in_block_order(tiny_resnet18, x64):
    with torch.no_grad():
        acts = BlockExtractor(tiny_resnet18).eval()(x64)
    f = combine(acts, comb("B24"), "none", resize="bilinear")
    assert f.shape == (3, 128 + 512, 8, 8)
    assert torch.equal(f[:, :128], acts[2])  # the shallowest block is not resized
    expected_b4 = F.interpolate(acts[4], size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.equal(f[:, 128:], expected_b4)
    # Nearest: each B4 cell becomes a 4x4 patch of B2's grid.
    fn = combine(acts, Combination((2, 4), "channels"), resize="nearest")
    assert torch.equal(fn[:, 128:], acts[4].repeat_interleave(4, 2).repeat_interleave(4, 3))
    assert torch.equal(pool(f), f.mean((2, 3))) and pool(f).shape == (3, 640)


def test_l2_normalises_each_block_per_location_before_resizing(tiny_resnet18, x64):
    with torch.no_grad():
        acts = BlockExtractor(tiny_resnet18).eval()(x64)
    f = combine(acts, comb("B34"), "l2", resize="nearest")
    # On B3's own grid, and for B4 after nearest (which copies cells), every location is unit norm.
    for part in (f[:, :256], f[:, 256:]):
        torch.testing.assert_close(part.norm(dim=1), torch.ones(3, 4, 4))
    zero = torch.zeros(1, 5, 2, 2)
    assert torch.equal(normalise_block(zero, 4, "l2"), zero)  # no NaN on an all-zero location


def test_standardize_uses_training_statistics_per_channel():
    g = torch.Generator().manual_seed(0)
    train = {3: 2.0 + 3.0 * torch.randn(50, 4, 3, 3, generator=g)}
    train[3][:, 1] = 7.0  # a constant (dead) channel: only centred
    stats = BlockStats.from_arrays(train)
    z = combine(train, comb("B3"), "standardize", stats)
    flat = z.transpose(0, 1).reshape(4, -1).double()
    np.testing.assert_allclose(flat.mean(1).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(1, unbiased=False).numpy(), [1, 0, 1, 1], atol=1e-5)
    assert stats.std[3][1] == 1.0 and stats.mean[3][1] == pytest.approx(7.0)
    with pytest.raises(ParamsError, match="needs training-split statistics of B4"):
        combine({4: torch.ones(1, 2, 1, 1)}, comb("B4"), "standardize", stats)


def test_streaming_statistics_equal_whole_array_statistics():
    rng = np.random.default_rng(0)
    acts = {1: rng.normal(3.0, 2.0, (11, 6, 5, 5)).astype(np.float32),
            4: rng.gamma(1.0, 4.0, (11, 8, 1, 2)).astype(np.float32)}
    acc = BlockStatsAccumulator()
    for lo in range(0, 11, 4):  # uneven batches
        acc.update({b: torch.from_numpy(a[lo:lo + 4]) for b, a in acts.items()} | {"logits": None})
    streamed = acc.finalize()
    for b, a in acts.items():
        per_channel = a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1).astype(np.float64)
        np.testing.assert_allclose(streamed.mean[b], per_channel.mean(1), rtol=1e-6)
        np.testing.assert_allclose(streamed.std[b], per_channel.std(1), rtol=1e-5)
    whole = BlockStats.from_arrays(acts)
    restored = BlockStats.from_dict(whole.to_dict() | {"train/labels": np.zeros(3)})
    assert restored.blocks == (1, 4) and sorted(whole.to_dict()) == [
        "stats/B1/mean", "stats/B1/std", "stats/B4/mean", "stats/B4/std"]
    for b in (1, 4):
        np.testing.assert_array_equal(restored.mean[b], whole.mean[b])
        np.testing.assert_allclose(restored.std[b], streamed.std[b], rtol=1e-6)
    with pytest.raises(DataError):
        BlockStatsAccumulator().finalize()
    with pytest.raises(DataError, match="B2"):
        BlockStats.from_dict({"stats/B2/mean": np.zeros(2)})


def test_combine_names_a_block_the_extractor_does_not_tap(tiny_resnet18, x64):
    with torch.no_grad():
        acts = BlockExtractor(tiny_resnet18, blocks=(2, 4)).eval()(x64)
    with pytest.raises(ParamsError, match=r"B234 needs B3, which the extractor does not tap \(tapped: B2, B4\)"):
        combine(acts, comb("B234"))
    with pytest.raises(ParamsError, match="features.normalisation.*none, l2, standardize"):
        combine(acts, comb("B4"), "zscore")
    with pytest.raises(ParamsError, match="features.resize.*bilinear, nearest"):
        combine(acts, comb("B24"), resize="bicubic")


# Synthetic activations on a ResNet-like pyramid: block b has grid 2**(5-b) and C_b channels.
@settings(max_examples=40, deadline=None)
@given(
    blocks=st.sets(st.sampled_from([1, 2, 3, 4]), min_size=1),
    channels=st.lists(st.integers(1, 5), min_size=4, max_size=4),
    normalisation=st.sampled_from(["none", "l2", "standardize"]),
    resize=st.sampled_from(["bilinear", "nearest"]),
    seed=st.integers(0, 2**16),
)
def test_combine_shape_and_channel_order_for_any_subset(blocks, channels, normalisation, resize, seed):
    g = torch.Generator().manual_seed(seed)
    acts = {b: torch.randn(2, channels[b - 1], 2 ** (5 - b), 2 ** (5 - b), generator=g) for b in (1, 2, 3, 4)}
    stats = BlockStats.from_arrays(acts)
    comb = Combination(tuple(sorted(blocks)), "channels")
    f = combine(acts, comb, normalisation, stats, resize)
    s = comb.shallowest
    assert f.shape == (2, sum(channels[b - 1] for b in comb.blocks), 2 ** (5 - s), 2 ** (5 - s))
    start = 0
    for b in comb.blocks:  # each block's channels, in increasing block order
        part = normalise_block(acts[b], b, normalisation, stats)
        part = F.interpolate(part, size=f.shape[-2:], mode=resize,
                             **({"align_corners": False} if resize == "bilinear" else {}))
        torch.testing.assert_close(f[:, start:start + channels[b - 1]], part)
        start += channels[b - 1]
    assert start == f.shape[1]


def test_balanced_weighting_gives_every_block_the_same_total_variance():
    """Invariance: with standardize, block b's total variance C_b becomes 1 for every block."""
    from kmx_eval.models.blocks import block_scales
    from kmx_eval.models.combination import parse_combination

    rng = np.random.default_rng(0)
    acts = {2: torch.as_tensor(rng.normal(3, 2, (6, 8, 8, 8)), dtype=torch.float32),
            4: torch.as_tensor(rng.normal(1, 5, (6, 32, 4, 4)), dtype=torch.float32)}
    stats = BlockStats.from_arrays(acts)
    scales = block_scales((2, 4), "standardize", "balanced", stats)
    assert scales == pytest.approx({2: 8 ** -0.5, 4: 32 ** -0.5})
    assert block_scales((2, 4), "standardize", "channels", stats) == {2: 1.0, 4: 1.0}
    none = block_scales((2, 4), "none", "balanced", stats)
    for b in (2, 4):
        total = float(((acts[b] * none[b]).double().var(dim=(0, 2, 3), unbiased=False)).sum())
        assert total == pytest.approx(1.0, rel=1e-4)
    f = combine(acts, comb("B24_balanced"), "standardize", stats, "nearest")
    var = f.double().var(dim=(0, 2, 3), unbiased=False)
    assert float(var[:8].sum()) == pytest.approx(1.0, rel=1e-3)
    assert float(var[8:].sum()) == pytest.approx(1.0, rel=1e-3)  # nearest resizing keeps the variance


def test_combination_names_carry_the_weighting_only_when_spelled():
    from kmx_eval.models.combination import parse_combination

    assert parse_combination("B234", weighting="channels").name == "B234"
    assert parse_combination("B234", weighting="balanced").weighting == "balanced"
    c = parse_combination("B234_balanced", weighting="channels")  # the suffix wins over the setting
    assert (c.name, c.weighting, c.blocks) == ("B234_balanced", "balanced", (2, 3, 4))
    assert c == parse_combination("B234", weighting="balanced")
    for bad, text in (("B234_equal", "_channels, _balanced"), ("B0", "'0' is not a block digit")):
        with pytest.raises(ParamsError, match=text):
            parse_combination(bad, weighting="channels")
    with pytest.raises(ParamsError, match="features.block_weighting"):
        parse_combination("B4", weighting="equal")


def test_a_name_is_refused_where_a_combination_is_taken():
    # A name parsed here would silently take the default weighting, whatever features.block_weighting
    # says: the functions that use a combination take the typed object Params.combination builds.
    from kmx_eval.models.embeddings import combination_embeddings

    with pytest.raises(TypeError, match="Params.combination"):
        combine({4: torch.ones(1, 2, 1, 1)}, "B4")
    with pytest.raises(TypeError, match="parse_combination"):
        combination_embeddings({}, "train", "B4_balanced")
