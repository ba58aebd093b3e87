"""The explainer interface: registry, map contract, completeness through a real head module,
the Quantus adapter and the evaluation subset."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from kmx_eval.config import ExplainConfig
from kmx_eval.errors import ParamsError
from kmx_eval.explain import (
    EXPLAINERS,
    KINDS,
    build_explainer,
    evaluation_subset,
    explain,
    explain_subset,
    explainer_names,
    quantus_explain_func,
)
from kmx_eval.explain.attribution import class_scores, pool, upsample
from kmx_eval.explain.controls import explained_grid

N_CLASSES, SIZE = 3, 64  # as in tests/tiny_models.py

CFG = ExplainConfig(ig_steps=4, batch_size=4)
TARGETS = np.array([0, 1, 2, 1])


def _model_for(name, resnet18, kmeans_module):
    return kmeans_module if EXPLAINERS.get(name).explains == "kmeans" else resnet18


def test_registry_holds_the_methods_of_the_paper():
    assert set(EXPLAINERS.names()) >= {"margin", "margin_centred", "distance", "cam", "gradcam",
                                       "integrated_gradients", "saliency", "random", "random_grid"}
    for name in EXPLAINERS:
        cls = EXPLAINERS.get(name)
        assert cls.name == name and cls.explains in KINDS + ("any",)
    # the random controls explain every model: floors (pixel and grid) on the model they explain
    assert explainer_names(CFG.explainers, "kmeans") == ["margin", "margin_centred", "distance", "random",
                                                         "random_grid"]
    assert explainer_names(CFG.explainers, "cnn") == ["cam", "gradcam", "integrated_gradients", "random",
                                                      "random_grid"]
    with pytest.raises(ParamsError, match="explain.explainers.*did you mean 'gradcam'"):
        build_explainer("gradcm", CFG, 0)


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_map_contract_of_every_explainer(name, resnet18, kmeans_module, images):
    explainer = build_explainer(name, CFG, seed=0)
    maps = explainer.explain(_model_for(name, resnet18, kmeans_module), images, TARGETS)
    assert isinstance(maps, np.ndarray) and maps.dtype == np.float32
    assert maps.shape == (4, SIZE, SIZE)
    assert np.isfinite(maps).all()
    spread = maps.reshape(4, -1).std(axis=1)
    if name == "gradcam":
        # ReLU(sum_k alpha_k a_k) is legitimately all zero where all evidence is negative.
        assert spread.max() > 0 and maps.min() >= 0
    else:
        assert spread.min() > 0, "a constant map carries no attribution"


def test_settings_come_from_params():
    ig = build_explainer("integrated_gradients", ExplainConfig(ig_steps=7, batch_size=5), seed=3)
    assert (ig.n_steps, ig.internal_batch_size) == (7, 5)
    assert build_explainer("random", CFG, seed=11).seed == 11


def test_margin_map_is_complete_through_the_head_module(kmeans_module, images):
    """Mean of the grid map == s_target - max_{c != target} s_c of the module's own scores."""
    explainer = build_explainer("margin", CFG, seed=0)
    targets = torch.as_tensor(TARGETS)
    with torch.no_grad():
        grid = explainer.attribute(kmeans_module, images, targets)
        scores = kmeans_module(images)
        F = kmeans_module.features(images)
    assert grid.shape == F.shape[:1] + F.shape[2:]
    others = scores.clone()
    others[torch.arange(4), targets] = -torch.inf
    expected = scores[torch.arange(4), targets] - others.max(1).values
    scale = scores.abs().max()
    torch.testing.assert_close(grid.mean(dim=(1, 2)).double(), expected.double(),
                               rtol=0, atol=float(1e-5 * scale))
    # The module's scores are the attribution module's class scores on the same features.
    torch.testing.assert_close(class_scores(pool(F).double(), kmeans_module.prototypes),
                               scores.double(), rtol=1e-6, atol=float(1e-6 * scale))
    centred = build_explainer("margin_centred", CFG, seed=0).attribute(kmeans_module, images, targets)
    assert centred.mean(dim=(1, 2)).abs().max() < 1e-3 * grid.abs().max()


def test_cam_explainer_is_the_logit_map(resnet18, images):
    grid = build_explainer("cam", CFG, 0).attribute(resnet18, images, torch.as_tensor(TARGETS))
    with torch.no_grad():
        logits = resnet18(images)
    torch.testing.assert_close(grid.mean(dim=(1, 2)), logits[torch.arange(4), TARGETS], rtol=1e-5, atol=1e-5)


def test_random_explainer_is_determined_by_its_seed(resnet18, images):
    a = build_explainer("random", CFG, seed=5).explain(resnet18, images, TARGETS)
    b = build_explainer("random", CFG, seed=5).explain(resnet18, images, TARGETS)
    c = build_explainer("random", CFG, seed=6).explain(resnet18, images, TARGETS)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 0 <= a.min() and a.max() <= 1 and abs(a.mean() - 0.5) < 0.02


def test_random_grid_is_uniform_per_cell_of_the_explained_grid_upsampled_bilinearly(resnet18, kmeans_module,
                                                                                     images):
    """The grid floor: one U(0, 1) draw per cell of the model's explained grid, upsampled as the
    k-means maps are; seeded; a map on the grid (pooling it back to the grid and up again changes
    nothing), unlike the pixel random map."""
    for model in (resnet18, kmeans_module):
        grid = explained_grid(model, torch.as_tensor(images))
        a = build_explainer("random_grid", CFG, seed=5).explain(model, images, TARGETS)
        np.testing.assert_array_equal(a, build_explainer("random_grid", CFG, seed=5).explain(model, images, TARGETS))
        assert not np.array_equal(a, build_explainer("random_grid", CFG, seed=6).explain(model, images, TARGETS))
        cells = np.random.default_rng([5] + [int.from_bytes(s.encode(), "little") % 2**32
                                             for s in ("explainer", "random_grid")]).uniform(0, 1, (4, *grid))
        expected = upsample(torch.as_tensor(cells.astype(np.float32)), (SIZE, SIZE)).numpy()
        np.testing.assert_allclose(a, expected, rtol=0, atol=1e-6)
        assert grid[0] < SIZE and 0 <= a.min() and a.max() <= 1
    pixel = build_explainer("random", CFG, seed=5).explain(resnet18, images, TARGETS)
    smooth = lambda m: np.abs(np.diff(m, axis=-1)).mean()  # noqa: E731
    assert smooth(a) < smooth(pixel) / 4


def test_batched_explain_equals_one_batch(resnet18, kmeans_module, images):
    for name in ("margin", "gradcam"):
        model = _model_for(name, resnet18, kmeans_module)
        explainer = build_explainer(name, CFG, 0)
        whole = explainer.explain(model, images, TARGETS)
        batched = explain(explainer, model, images, target=TARGETS, batch_size=3, progress=False)
        np.testing.assert_allclose(batched, whole, rtol=1e-4, atol=1e-5 * np.abs(whole).max())


def test_explain_subset_writes_the_maps_file_keys(resnet18, images):
    explainers = {n: build_explainer(n, CFG, 0) for n in ("cam", "saliency")}
    out = explain_subset(resnet18, explainers, images, targets=TARGETS, indices=[3, 8, 9, 20], batch_size=2,
                         progress=False)
    assert set(out) == {"indices", "targets", "predictions", "cam", "saliency"}
    np.testing.assert_array_equal(out["indices"], [3, 8, 9, 20])
    with torch.no_grad():
        np.testing.assert_array_equal(out["predictions"], resnet18(images).argmax(1).numpy())
    assert out["cam"].shape == (4, SIZE, SIZE) and out["predictions"].dtype == np.int64


@pytest.mark.parametrize("name", ["cam", "margin", "random"])
def test_quantus_explain_func_shape_and_inputs(name, resnet18, kmeans_module, images):
    model = _model_for(name, resnet18, kmeans_module)
    func = quantus_explain_func(build_explainer(name, CFG, 0))
    out = func(model=model, inputs=images.numpy(), targets=TARGETS, device="cpu")
    assert isinstance(out, np.ndarray) and out.shape == (4, 1, SIZE, SIZE) and out.dtype == np.float32
    out_t = func(model, images, torch.as_tensor(TARGETS))
    assert out_t.shape == (4, 1, SIZE, SIZE)


def test_quantus_explain_func_uses_the_model_it_is_given(resnet18, images):
    """MPRT passes a randomised copy and RandomLogit other targets: the maps must change."""
    func = quantus_explain_func(build_explainer("cam", CFG, 0))
    original = func(resnet18, images.numpy(), TARGETS)
    randomised = copy.deepcopy(resnet18)
    torch.manual_seed(123)
    randomised.fc.reset_parameters()
    assert not np.allclose(func(randomised, images.numpy(), TARGETS), original)
    np.testing.assert_array_equal(func(resnet18, images.numpy(), TARGETS), original)
    assert not np.allclose(func(resnet18, images.numpy(), (TARGETS + 1) % N_CLASSES), original)


def test_quantus_metric_runs_with_the_adapter(resnet18, images):
    """RandomLogit calls explain_func with off-targets; the adapter satisfies its interface."""
    import quantus

    metric = quantus.RandomLogit(num_classes=N_CLASSES, seed=0, disable_warnings=True,
                                 display_progressbar=False, abs=False, normalise=False)
    func = quantus_explain_func(build_explainer("cam", CFG, 0))
    a_batch = func(resnet18, images.numpy(), TARGETS)
    scores = metric(model=resnet18, x_batch=images.numpy(), y_batch=TARGETS, a_batch=a_batch,
                    explain_func=func, device="cpu")
    assert len(scores) == 4 and np.isfinite(scores).all()


def test_quantus_explain_funcs_build_the_seeds_explainer_at_the_call(resnet18, images):
    from kmx_eval.explain import quantus_explain_funcs

    funcs = quantus_explain_funcs(CFG, 3)
    assert funcs("oracle") is None and funcs("oracle_pixel") is None  # maps without an explainer
    # random is seeded: the function of seed 3 gives what the explain stage's explainer of seed 3
    # gave, and each call starts a fresh explainer (the same maps every time).
    expected = build_explainer("random", CFG, 3).explain(resnet18, images, TARGETS)[:, None]
    np.testing.assert_array_equal(funcs("random")(resnet18, images, TARGETS), expected)
    np.testing.assert_array_equal(funcs("random")(resnet18, images, TARGETS), expected)
    assert not np.array_equal(quantus_explain_funcs(CFG, 4)("random")(resnet18, images, TARGETS), expected)


def test_evaluation_subset_is_fixed_sorted_and_unique():
    a = evaluation_subset(100, 10, seed=0)
    np.testing.assert_array_equal(a, evaluation_subset(100, 10, seed=0))
    assert not np.array_equal(a, evaluation_subset(100, 10, seed=1))
    assert a.dtype == np.int64 and len(np.unique(a)) == 10 and (np.diff(a) > 0).all()
    assert a.min() >= 0 and a.max() < 100
    np.testing.assert_array_equal(evaluation_subset(7, 48, seed=0), np.arange(7))
