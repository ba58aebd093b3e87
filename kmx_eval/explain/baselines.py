"""Post-hoc baselines on the original CNN (docs/METHOD.md, section 3): what a user would pick instead.

The model is the torchvision ResNet under explanation (``layer4`` is block B4, ``fc`` its linear
head, which sees ``mean_ij a_ij``). Gradient methods come from captum; ``random`` is the control.
captum is imported when a gradient explainer runs, so loading params does not pay for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kmx_eval.errors import KmxError
from kmx_eval.seeding import rng

from .attribution import cam_map
from .core import Explainer, register

__all__ = ["CAMExplainer", "GradCAMExplainer", "IntegratedGradientsExplainer", "SaliencyExplainer",
           "RandomExplainer"]


def _check_resnet(model: torch.nn.Module, name: str) -> None:
    if not (hasattr(model, "layer4") and isinstance(getattr(model, "fc", None), torch.nn.Linear)):
        raise KmxError(
            f"explainer {name!r} explains the original CNN and needs a torchvision ResNet with "
            f"'layer4' and a linear 'fc'; got a {type(model).__name__}"
        )


@register
class CAMExplainer(Explainer):
    """Class activation map ``<w_c, a_ij> + b_c`` of the CNN's fc on block B4.

    Complete: ``mean_ij`` of the map is the CNN's logit of class c.
    """

    name = "cam"
    explains = "cnn"

    def attribute(self, model, x, target):
        from torchvision.models.feature_extraction import create_feature_extractor

        _check_resnet(model, self.name)
        # Traced from the model given (shares its parameters), so a randomised copy is honoured.
        A4 = create_feature_extractor(model, {"layer4": "A4"})(x)["A4"]
        return cam_map(A4, model.fc.weight, model.fc.bias, target)


@register
class GradCAMExplainer(Explainer):
    """Grad-CAM on block B4: ``ReLU(sum_k alpha_k a_k)``, ``alpha_k = mean_ij d logit_c / d a_kij``.

    On a ResNet whose head is global average pooling then ``fc``, ``alpha_k = w_ck / (h w)``, so
    Grad-CAM ``= ReLU(CAM - b_c) / (h w)``: CAM up to a positive affine change, clipped at 0 where CAM
    falls below the bias. Where no location is clipped the two maps are affine-equivalent and the
    evaluation scores them once (``kmx_eval.metrics.evaluation``); they differ only by the clipping."""

    name = "gradcam"
    explains = "cnn"
    needs_gradient = True

    def attribute(self, model, x, target):
        from captum.attr import LayerGradCam

        _check_resnet(model, self.name)
        maps = LayerGradCam(model, model.layer4).attribute(x, target=target, relu_attributions=True)
        return maps[:, 0]


@register
class IntegratedGradientsExplainer(Explainer):
    """Integrated Gradients, summed over colour channels.

    ``IG_k(x) = (x_k - x'_k) * int_0^1 d logit_c(x' + a (x - x')) / d x_k da`` with the zero baseline
    ``x' = 0`` in normalised space (the dataset's mean colour), approximated with ``n_steps``
    Gauss-Legendre points; ``internal_batch_size`` bounds how many interpolated images are in
    memory at once.
    """

    name = "integrated_gradients"
    explains = "cnn"
    needs_gradient = True

    def __init__(self, n_steps: int = 16, internal_batch_size: int | None = 32):
        if n_steps < 2:
            raise ValueError(f"integrated_gradients: n_steps must be at least 2, got {n_steps}")
        self.n_steps = int(n_steps)
        self.internal_batch_size = internal_batch_size

    @classmethod
    def settings_from(cls, explain_cfg: Any, seed: int) -> dict[str, Any]:
        return {"n_steps": explain_cfg.ig_steps, "internal_batch_size": explain_cfg.batch_size}

    def attribute(self, model, x, target):
        from captum.attr import IntegratedGradients

        # internal_batch_size counts interpolated images; keep at least one whole step per chunk.
        internal = None if self.internal_batch_size is None else max(int(self.internal_batch_size), x.shape[0])
        maps = IntegratedGradients(model).attribute(
            x, baselines=torch.zeros_like(x), target=target, n_steps=self.n_steps,
            internal_batch_size=internal,
        )
        return maps.sum(dim=1)


@register
class SaliencyExplainer(Explainer):
    """Saliency: ``max_k |d logit_c / d x_k|`` over colour channels."""

    name = "saliency"
    explains = "cnn"
    needs_gradient = True

    def attribute(self, model, x, target):
        from captum.attr import Saliency

        return Saliency(model).attribute(x, target=target, abs=True).amax(dim=1)


@register
class RandomExplainer(Explainer):
    """The control: i.i.d. uniform ``U(0, 1)`` values at every pixel, from a seeded stream.

    Independent of the model and the image; the same seed and the same sequence of calls give the
    same maps. Runs on every explained model (``explains = "any"``): the chance level of each
    number on the model it explains (:mod:`.controls`).
    """

    name = "random"
    explains = "any"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self._rng = rng(self.seed, "explainer", "random")

    @classmethod
    def settings_from(cls, explain_cfg: Any, seed: int) -> dict[str, Any]:
        return {"seed": seed}

    def attribute(self, model, x, target):
        n, _, h, w = x.shape
        return torch.from_numpy(self._rng.uniform(0.0, 1.0, size=(n, h, w)).astype(np.float32))
