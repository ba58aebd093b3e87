"""CAM and Grad-CAM read the layer the architecture's description names, for every architecture."""

from __future__ import annotations

import pytest
import torch

from kmx_eval.errors import KmxError
from kmx_eval.explain import EXPLAINERS, build_explainer
from kmx_eval.models.architectures import ARCHITECTURES
from kmx_eval.seeding import seed_everything

N_CLASSES = 3

CFG = type("Cfg", (), {"ig_steps": 4, "batch_size": 4})()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _model(name):
    seed_everything(0)
    return ARCHITECTURES.get(name).build(N_CLASSES).eval()


def test_gradcam_equals_captums_layer_gradcam_on_a_resnet(resnet18, images):
    from captum.attr import LayerGradCam

    target = torch.tensor([0, 1, 2, 1])
    ours = build_explainer("gradcam", CFG, 0).attribute(resnet18, images.requires_grad_(False), target)
    theirs = LayerGradCam(resnet18, resnet18.layer4).attribute(images, target=target,
                                                               relu_attributions=True)[:, 0]
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["densenet121", "efficientnet_b0"])
def test_cam_is_complete_on_gap_linear_architectures(name, x):
    """mean_ij CAM = the logit, on the last block the description names (a functional node for DenseNet)."""
    model = _model(name)
    target = torch.tensor([2, 0])
    with torch.no_grad():
        cam = build_explainer("cam", CFG, 0).attribute(model, x, target)
        logits = model(x)
    assert cam.shape[-2:] == ARCHITECTURES.get(name).shapes(64)[4][1:]
    torch.testing.assert_close(cam.mean(dim=(1, 2)), logits[torch.arange(2), target], rtol=1e-4, atol=1e-4)


def test_cam_says_why_it_does_not_apply_to_vgg(x):
    arch = ARCHITECTURES.get("vgg16_bn")
    reason = EXPLAINERS.get("cam").not_applicable(arch)
    assert reason.startswith("not applicable: CAM needs GAP + one linear layer")
    assert "three linear layers" in reason
    assert EXPLAINERS.get("gradcam").not_applicable(arch) is None
    with pytest.raises(KmxError, match="not applicable"):
        build_explainer("cam", CFG, 0).explain(_model("vgg16_bn"), x, [0, 1])


def test_applicable_explainers_keep_params_order_and_say_why_not():
    from kmx_eval.explain import applicable_explainers

    names = ["random", "cam", "integrated_gradients", "gradcam"]
    assert applicable_explainers(names, ARCHITECTURES.get("resnet18")) == (names, {})
    applicable, reasons = applicable_explainers(names, ARCHITECTURES.get("vgg16_bn"))
    assert applicable == ["random", "integrated_gradients", "gradcam"]
    assert list(reasons) == ["cam"] and reasons["cam"].startswith("not applicable: CAM needs GAP")


@pytest.mark.parametrize("name, grid", [("vgg16_bn", 4), ("densenet121", 2)])
def test_gradcam_reads_the_described_layer(name, grid, x):
    """Grad-CAM's grid is the CAM layer's (VGG: the last convolution at stride 16, before the last
    pool; DenseNet: the functional ReLU after norm5), its maps are non-negative and upsampled."""
    model = _model(name)
    target = torch.tensor([0, 1])
    explainer = build_explainer("gradcam", CFG, 0)
    with torch.enable_grad():
        grid_maps = explainer.attribute(model, x.clone().requires_grad_(True), target)
    assert tuple(grid_maps.shape) == (2, grid, grid)
    assert (grid_maps >= 0).all()
    maps = explainer.explain(model, x, target)
    assert maps.shape == (2, 64, 64)
