"""MPRT at block granularity and MaxSensitivity: the maps must change when the blocks they read are
destroyed; a map that ignores the model does not."""

import numpy as np
import torch
import torchvision

from kmx_eval.explain import build_explainer, quantus_explain_func
from kmx_eval.config import ExplainConfig
from kmx_eval.metrics import quantus as qm
from kmx_eval.metrics.quantus.sanity import block_modules, randomised_cascade, spearman_rows

SETTINGS = qm.QuantusSettings(sanity_images=3, stability_samples=2)


def _resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=3).eval()


def _data(n=4):
    x = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(0)).numpy()
    return x, np.array([0, 1, 2, 0][:n])


def test_the_cascade_reinitialises_blocks_top_down_and_leaves_the_original_alone():
    model = _resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = []
    for name, randomised in randomised_cascade(model, seed=0):
        changed = {b for b, m in block_modules(randomised).items()
                   if not all(torch.equal(p, before[f"{b}.{k}"]) for k, p in m.state_dict().items())}
        steps.append((name, changed))
    assert [s[0] for s in steps] == ["layer4", "layer3", "layer2", "layer1"]
    assert steps[0][1] == {"layer4"} and steps[-1][1] == {"layer1", "layer2", "layer3", "layer4"}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_mprt_separates_a_model_dependent_map_from_one_that_ignores_the_model():
    x, y = _data()
    cam = quantus_explain_func(build_explainer("cam", ExplainConfig(), 0))
    a = cam(_resnet(), x, y)[:, 0]
    scores, reasons, extra = qm.run_quantus("MPRT", _resnet(), x, y, a, None, SETTINGS, seed=0, explain_func=cam)
    assert reasons[3].startswith("outside the first 3 images") and np.isfinite(scores[:3]).all()

    def fixed(model, inputs, targets, **kw):  # a map that never looks at the parameters
        return a[: len(inputs), None]

    same, _, _ = qm.run_quantus("MPRT", _resnet(), x, y, a, None, SETTINGS, seed=0, explain_func=fixed)
    assert np.allclose(same[:3], 1.0) and np.all(scores[:3] < 0.9)
    assert extra["settings"]["n_images"] == 3


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
        sens[name], reasons, _ = qm.run_quantus("MaxSensitivity", _resnet(), x, y, a, None, SETTINGS, seed=0,
                                                explain_func=f)
        assert reasons == [None] * 3
    assert np.all(sens["cam"] < sens["random"])  # a redrawn random map is maximally unstable
