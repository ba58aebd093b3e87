"""MPRT at block granularity and MaxSensitivity: the maps must change when the blocks they read are
destroyed; a map that ignores the model does not."""

import numpy as np
import pytest
import torch
import torchvision

from kmx_eval.explain import build_explainer, quantus_explain_func
from kmx_eval.config import ExplainConfig
from kmx_eval.metrics import quantus as qm
from kmx_eval.metrics.quantus.sanity import block_groups, randomised_cascade, spearman_rows

SETTINGS = qm.QuantusSettings(sanity_images=3, stability_samples=2)


def _resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=3).eval()


def _data(n=4):
    x = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(0)).numpy()
    return x, np.array([0, 1, 2, 0][:n])


def _changed_layers(model, before) -> set[str]:
    """Top-level modules of a torchvision ResNet whose weights differ from ``before``."""
    return {k.split(".")[0] for k, v in model.state_dict().items()
            if v.is_floating_point() and not torch.equal(v, before[k])}


def test_the_cascade_reinitialises_blocks_top_down_and_leaves_the_original_alone():
    model = _resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = [(name, _changed_layers(randomised, before))
             for name, randomised in randomised_cascade(model, seed=0)]
    assert [s[0] for s in steps] == ["B4", "B3", "B2", "B1"]
    assert steps[0][1] == {"layer4"}
    # B1 owns the stem too; the classifier belongs to no block.
    # (a fresh BatchNorm is already at its reset values, so bn1 may look unchanged)
    assert {"conv1", "layer1", "layer2", "layer3", "layer4"} <= steps[-1][1] and "fc" not in steps[-1][1]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name, n_blocks", [("vgg16_bn", 5), ("densenet121", 4)])
def test_the_cascade_follows_the_architecture_s_blocks(name, n_blocks):
    from kmx_eval.models.architectures import ARCHITECTURES

    arch = ARCHITECTURES.get(name)
    torch.manual_seed(0)
    model = arch.build(3).eval()
    groups = block_groups(model, arch.blocks, arch.classifier)
    assert [g for g, _ in groups] == [f"B{b}" for b in range(1, n_blocks + 1)]
    assert all(modules for _, modules in groups)  # every block has weights to reset
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
        outs = [randomised(x) for _, randomised in randomised_cascade(model, seed=0)]
    assert len(outs) == n_blocks and not torch.allclose(outs[0], y)


def test_mprt_separates_a_model_dependent_map_from_one_that_ignores_the_model():
    x, y = _data()
    cam = quantus_explain_func(build_explainer("cam", ExplainConfig(), 0))
    a = cam(_resnet(), x, y)[:, 0]
    scores, reasons, extra = qm.run_quantus("MPRT", _resnet(), x, y, a, None, settings=SETTINGS, seed=0,
                                            explain_func=cam)
    assert reasons[3].startswith("outside the first 3 images") and np.isfinite(scores[:3]).all()

    def fixed(model, inputs, targets, **kw):  # a map that never looks at the parameters
        return a[: len(inputs), None]

    same, _, _ = qm.run_quantus("MPRT", _resnet(), x, y, a, None, settings=SETTINGS, seed=0, explain_func=fixed)
    assert np.allclose(same[:3], 1.0) and np.all(scores[:3] < 0.9)
    assert extra.settings["n_images"] == 3


def test_spearman_rows_and_max_sensitivity_direction():
    rng = np.random.default_rng(0)
    a = rng.random((3, 50))
    assert np.allclose(spearman_rows(a, 3 * a + 1), 1.0) and np.allclose(spearman_rows(a, -a), -1.0)
    x, y = _data(3)
    rnd = quantus_explain_func(build_explainer("random", ExplainConfig(), 0))
    cam = quantus_explain_func(build_explainer("cam", ExplainConfig(), 0))
    sens = {}
    for name, f in (("random", rnd), ("cam", cam)):
        a = f(_resnet(), x, y)[:, 0]
        sens[name], reasons, _ = qm.run_quantus("MaxSensitivity", _resnet(), x, y, a, None, settings=SETTINGS, seed=0,
                                                explain_func=f)
        assert reasons == [None] * 3
    assert np.all(sens["cam"] < sens["random"])  # a redrawn random map is maximally unstable


def test_an_anti_correlated_map_does_not_win_mprt_or_random_logit():
    """MPRT and RandomLogit read |rho| and |SSIM| (docs/METHOD.md, section 6): a map whose
    re-explanation is the original reversed is as model-independent as one that never changes, so it
    scores 1, the worst, not -1, the best under a signed reading."""
    x, y = _data()
    cam = quantus_explain_func(build_explainer("cam", ExplainConfig(), 0))
    a = cam(_resnet(), x, y)[:, 0]

    def reversed_map(model, inputs, targets, **kw):  # anti-correlated with the original, whatever the model
        return -a[: len(inputs), None]

    depends, _, _ = qm.run_quantus("MPRT", _resnet(), x, y, a, None, settings=SETTINGS, seed=0, explain_func=cam)
    anti, _, _ = qm.run_quantus("MPRT", _resnet(), x, y, a, None, settings=SETTINGS, seed=0,
                                explain_func=reversed_map)
    assert np.allclose(anti[:3], 1.0, atol=1e-3) and np.all(depends[:3] < anti[:3])
    assert qm.QUANTUS_METRICS.get("MPRT").magnitude and not qm.QUANTUS_METRICS.get("MPRT").higher_is_better
    signed, _, _ = qm.run_quantus("RandomLogit", _resnet(), x, y, a, None, settings=SETTINGS, seed=0,
                                  explain_func=reversed_map)
    assert np.all(signed[np.isfinite(signed)] >= 0)  # |SSIM|: no negative score to win with
    assert qm.QUANTUS_METRICS.get("RandomLogit").magnitude


def test_magnitude_metrics_are_lower_is_better_similarities():
    """Only a similarity with 'lower is better' may be read as a magnitude (its floor is 0)."""
    for name in qm.QUANTUS_METRICS.names():
        spec = qm.QUANTUS_METRICS.get(name)
        if spec.magnitude:
            assert not spec.higher_is_better and spec.category.value == "randomisation", name
