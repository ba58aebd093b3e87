"""KMeansHeadModule: the k-means head as an nn.Module from images to class scores."""

import numpy as np
import pytest
import torch
import torchvision

from kmx_eval.heads import KMeansHead, KMeansHeadModule, prototype_scores
from kmx_eval.models.blocks import BlockExtractor, BlockStats, combine, pool
from tiny_models import comb


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    backbone = torchvision.models.resnet18(weights=None, num_classes=3)
    # A few training-mode passes give BatchNorm non-trivial running statistics, as after training.
    backbone.train()
    with torch.no_grad():
        for _ in range(2):
            backbone(torch.randn(8, 3, 64, 64))
    backbone.eval()
    extractor = BlockExtractor(backbone).eval()
    x_train = torch.randn(12, 3, 64, 64)
    x_test = torch.randn(6, 3, 64, 64)
    y_train = np.arange(12) % 3
    with torch.no_grad():
        acts = extractor(x_train)
    stats = BlockStats.from_arrays(acts)
    return extractor, stats, x_train, y_train, x_test, acts


@pytest.mark.parametrize("combination, normalisation", [("B4", "none"), ("B34", "l2"),
                                                        ("B234", "standardize")])
def test_module_and_estimator_agree(setup, combination, normalisation):
    extractor, stats, x_train, y_train, x_test, acts = setup
    with torch.no_grad():
        z_train = pool(combine(acts, comb(combination), normalisation, stats)).numpy()
        z_test = pool(combine(extractor(x_test), comb(combination), normalisation, stats)).numpy()
    head = KMeansHead(n_prototypes=2, random_state=0).fit(z_train, y_train)
    module = KMeansHeadModule.from_head(head, extractor, comb(combination), normalisation, stats)
    with torch.no_grad():
        scores = module(x_test)
    assert scores.shape == (6, 3) and scores.dtype == torch.float32
    np.testing.assert_array_equal(scores.argmax(1).numpy(), head.predict(z_test))
    expected = head.class_scores(z_test)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # On the training images the module reproduces the head's training predictions.
    with torch.no_grad():
        np.testing.assert_array_equal(module(x_train).argmax(1).numpy(), head.predict(z_train))
    # The same scores through the other entry points.
    with torch.no_grad():
        f = module.features(x_test)
        assert f.shape[1] == z_test.shape[1]
        torch.testing.assert_close(module.scores_from_features(f), scores)
        torch.testing.assert_close(module.scores_from_embeddings(torch.from_numpy(z_test)), scores,
                                   rtol=1e-5, atol=1e-4)


def test_module_stays_in_eval_mode_and_is_differentiable(setup):
    extractor, stats, x_train, y_train, x_test, acts = setup
    with torch.no_grad():
        z = pool(combine(acts, comb("B34"), "standardize", stats)).numpy()
    head = KMeansHead(n_prototypes=2, random_state=0).fit(z, y_train)
    module = KMeansHeadModule.from_head(head, extractor, comb("B34"), "standardize", stats)
    bn = extractor.backbone.bn1
    before = bn.running_mean.clone()
    module.train()  # what captum/Quantus may call
    assert not module.training and not any(m.training for m in module.modules())
    x = x_test.clone().requires_grad_(True)
    out = module(x)
    torch.testing.assert_close(bn.running_mean, before)  # BatchNorm statistics untouched
    out[:, 1].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert "prototypes" in module.state_dict()
    assert module.prototypes.dtype == torch.float64 and module.n_classes == 3


def test_prototype_scores_matches_explicit_distances():
    torch.manual_seed(1)
    z, p = torch.randn(7, 5, dtype=torch.float64), torch.randn(3, 4, 5, dtype=torch.float64)
    expected = -((z[:, None, None] - p[None]) ** 2).sum(-1).amin(-1)
    torch.testing.assert_close(prototype_scores(z, p), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"shape \(N, 5\)"):
        prototype_scores(torch.zeros(2, 4), p)


def test_bad_arguments_are_named(setup):
    extractor, stats = setup[:2]
    with pytest.raises(ValueError, match="normalisation must be one of"):
        KMeansHeadModule(extractor, comb("B4"), "zscore", None, np.zeros((2, 1, 512)))
    with pytest.raises(ValueError, match="prototypes must have shape"):
        KMeansHeadModule(extractor, comb("B4"), "none", None, np.zeros((2, 512)))


@pytest.mark.parametrize("combination", ["B4", "B34", "B234", "B1234", "B24", "B234_balanced"])
@pytest.mark.parametrize("normalisation", ["none", "l2", "standardize"])
@pytest.mark.parametrize("resize", ["bilinear", "nearest"])
def test_forward_from_pooling_weights_equals_pooling_the_combined_map(setup, combination,
                                                                      normalisation, resize):
    # forward never builds F_S: each block is pooled on its own grid with the weights of its
    # resize. It must give pool(combine(...)) and the same scores, up to float rounding.
    extractor, stats, x_train, y_train, x_test, acts = setup
    with torch.no_grad():
        z_train = pool(combine(acts, comb(combination), normalisation, stats, resize)).numpy()
    head = KMeansHead(n_prototypes=2, random_state=0).fit(z_train, y_train)
    module = KMeansHeadModule.from_head(head, extractor, comb(combination), normalisation, stats, resize)
    with torch.no_grad():
        z_fast = module.embeddings(x_test)
        z_map = pool(module.features(x_test))
        torch.testing.assert_close(z_fast, z_map, rtol=1e-5, atol=1e-5)
        slow = module.scores_from_features(module.features(x_test))
        fast = module(x_test)
    scale = float(slow.abs().max())
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_array_equal(fast.argmax(1).numpy(), slow.argmax(1).numpy())


def test_forward_gradient_equals_the_combined_map_gradient(setup):
    extractor, stats, x_train, y_train, x_test, acts = setup
    with torch.no_grad():
        z = pool(combine(acts, comb("B234"), "standardize", stats)).numpy()
    head = KMeansHeadModule.from_head(KMeansHead(n_prototypes=2, random_state=0).fit(z, y_train),
                                      extractor, comb("B234"), "standardize", stats)
    grads = []
    for scores in (lambda x: head(x), lambda x: head.scores_from_features(head.features(x))):
        x = x_test.clone().requires_grad_(True)
        scores(x)[:, 0].sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-4 * float(grads[1].abs().max()))


def test_module_from_backbone_taps_only_the_combinations_blocks(setup):
    extractor, stats, x_train, y_train, x_test, acts = setup
    with torch.no_grad():
        z = pool(combine(acts, comb("B34"), "standardize", stats)).numpy()
    head = KMeansHead(n_prototypes=2, random_state=0).fit(z, y_train)
    module = KMeansHeadModule.from_backbone(head, extractor.backbone, comb("B34"), "standardize", stats)
    assert module.extractor.blocks == (3, 4) and not module.extractor.returns_logits
    reference = KMeansHeadModule.from_head(head, extractor, comb("B34"), "standardize", stats)
    with torch.no_grad():
        torch.testing.assert_close(module(x_test), reference(x_test), rtol=0, atol=0)
