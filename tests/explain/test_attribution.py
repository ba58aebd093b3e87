"""Completeness identities and construction checks of the attribution maps (docs/METHOD.md, section 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from kmx_eval.explain.attribution import (
    cam_map,
    class_scores,
    distance_map,
    margin,
    margin_centred_map,
    margin_map,
    pool,
    prototype_distances,
    select_prototypes,
    upsample,
)


def _random_case(n, d, h, w, c, hp, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    F = torch.randn(n, d, h, w, generator=g, dtype=dtype)
    prototypes = torch.randn(c, hp, d, generator=g, dtype=dtype)
    return F, prototypes


def test_margin_map_mean_is_the_margin_float32():
    F, prototypes = _random_case(3, 16, 5, 7, 4, 3, seed=0, dtype=torch.float32)
    target = torch.tensor([0, 2, 3])
    z = pool(F)
    p, pp = select_prototypes(z, prototypes, target)
    e = margin_map(F, p, pp)
    assert e.shape == (3, 5, 7)
    torch.testing.assert_close(e.mean(dim=(1, 2)), margin(z, p, pp), rtol=1e-5, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), d=st.integers(1, 12), h=st.integers(1, 6), w=st.integers(1, 6),
       c=st.integers(2, 5), hp=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_completeness_over_random_shapes(n, d, h, w, c, hp, seed):
    F, prototypes = _random_case(n, d, h, w, c, hp, seed)
    target = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))
    z = pool(F)
    p, pp = select_prototypes(z, prototypes, target)
    m = margin(z, p, pp)
    e = margin_map(F, p, pp)
    centred = margin_centred_map(F, p, pp)
    # e is complete: its mean is the margin ||z - p'||^2 - ||z - p||^2 ...
    torch.testing.assert_close(e.mean(dim=(1, 2)), m, rtol=1e-10, atol=1e-10)
    # ... and the centred map is e without its constant part: mean zero, e = centred + m.
    torch.testing.assert_close(centred.mean(dim=(1, 2)), torch.zeros(n, dtype=F.dtype), atol=1e-10, rtol=0)
    torch.testing.assert_close(e, centred + m[:, None, None], rtol=1e-10, atol=1e-10)
    # The decomposition ||z - p||^2 = mean_ij <f_ij - p, z - p> behind it.
    lhs = ((z - p) ** 2).sum(1)
    rhs = torch.einsum("ndhw,nd->nhw", F - p[:, :, None, None], z - p).mean(dim=(1, 2))
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


def test_margin_equals_score_difference_to_the_runner_up():
    F, prototypes = _random_case(5, 8, 3, 3, 4, 2, seed=3)
    target = torch.tensor([0, 1, 2, 3, 0])
    z = pool(F)
    scores = class_scores(z, prototypes)
    p, pp = select_prototypes(z, prototypes, target)
    others = scores.clone()
    others[torch.arange(5), target] = -torch.inf
    expected = scores[torch.arange(5), target] - others.max(1).values
    torch.testing.assert_close(margin(z, p, pp), expected)
    # Positive exactly when the target is the head's decision.
    assert torch.equal(margin(z, p, pp) > 0, scores.argmax(1) == target)


def test_select_prototypes_matches_brute_force():
    F, prototypes = _random_case(6, 5, 2, 2, 3, 4, seed=7)
    z = pool(F)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    p, pp = select_prototypes(z, prototypes, target)
    for i in range(6):
        d = {(c, h): float(((z[i] - prototypes[c, h]) ** 2).sum()) for c in range(3) for h in range(4)}
        t = int(target[i])
        best_h = min(range(4), key=lambda h: d[(t, h)])
        runner = min((c for c in range(3) if c != t), key=lambda c: min(d[(c, h)] for h in range(4)))
        runner_h = min(range(4), key=lambda h: d[(runner, h)])
        torch.testing.assert_close(p[i], prototypes[t, best_h])
        torch.testing.assert_close(pp[i], prototypes[runner, runner_h])
    torch.testing.assert_close(prototype_distances(z, prototypes),
                               ((z[:, None, None] - prototypes[None]) ** 2).sum(-1))


def test_select_prototypes_rejects_bad_input():
    F, prototypes = _random_case(2, 4, 2, 2, 1, 2, seed=0)
    with pytest.raises(ValueError, match="runner-up"):
        select_prototypes(pool(F), prototypes, [0, 0])
    F, prototypes = _random_case(2, 4, 2, 2, 3, 2, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        select_prototypes(pool(F), prototypes, [0, 3])


def test_margin_map_puts_positive_evidence_on_the_object():
    """Half the locations equal p (the object), half equal p' (background for the runner-up)."""
    d, h, w = 6, 4, 4
    g = torch.Generator().manual_seed(0)
    p, pp = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    obj = torch.zeros(h, w, dtype=torch.bool)
    obj[:, :2] = True
    F = torch.where(obj[None, None], p[None, :, None, None], pp[None, :, None, None])
    e = margin_map(F, p, pp)[0]
    c = margin_centred_map(F, p, pp)[0]
    # z = (p + p')/2, so m = 0: e = +||p - p'||^2 / 2 on the object and -||p - p'||^2 / 2 elsewhere.
    gap = float(((p - pp) ** 2).sum())
    torch.testing.assert_close(e[obj], torch.full((8,), gap / 2, dtype=torch.float64))
    torch.testing.assert_close(e[~obj], torch.full((8,), -gap / 2, dtype=torch.float64))
    assert (c[obj] > 0).all() and (c[~obj] < 0).all()
    dist = distance_map(F, p)[0]
    assert torch.allclose(dist[obj], torch.zeros(8, dtype=torch.float64))
    torch.testing.assert_close(dist[~obj], torch.full((8,), -gap, dtype=torch.float64))


def test_distance_map_is_minus_squared_distance():
    F, prototypes = _random_case(2, 3, 2, 3, 2, 1, seed=5)
    p = prototypes[0, 0]
    out = distance_map(F, p)
    for i, j in [(0, 0), (1, 2)]:
        torch.testing.assert_close(out[1, i, j], -((F[1, :, i, j] - p) ** 2).sum())
    assert (out <= 0).all()


def test_cam_mean_is_the_logit_of_a_real_resnet(resnet18):
    from torchvision.models.feature_extraction import create_feature_extractor

    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = create_feature_extractor(resnet18, {"layer4": "A4", "fc": "logits"})(x)
    assert out["A4"].shape[-2:] == (2, 2)
    for target in range(3):
        cam = cam_map(out["A4"], resnet18.fc.weight, resnet18.fc.bias, [target] * 3)
        torch.testing.assert_close(cam.mean(dim=(1, 2)), out["logits"][:, target], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cam.mean(dim=(1, 2)), resnet18(x)[:, target], rtol=1e-5, atol=1e-5)


def test_upsample_to_input_size():
    maps = torch.arange(4.0).reshape(1, 2, 2)
    up = upsample(maps, 8)
    assert up.shape == (1, 8, 8)
    # Bilinear, align_corners=False: each cell's corner pixels keep the cell's value.
    assert float(up[0, 0, 0]) == 0.0 and float(up[0, -1, -1]) == 3.0
    ids = upsample(torch.tensor([[[0, 5], [7, 2]]]).double(), (4, 6), mode="nearest")
    assert set(np.unique(ids.numpy()).tolist()) == {0.0, 2.0, 5.0, 7.0}
    assert upsample(maps, (2, 2)) is maps
