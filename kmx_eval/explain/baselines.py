"""Post-hoc baselines on the original CNN (docs/METHOD.md, section 3): what a user would pick instead.

The model is the CNN under explanation, of any registered architecture
(:mod:`kmx_eval.models.architectures`): CAM and Grad-CAM read its ``cam_layer`` (a ResNet's
``layer4``, a VGG's last convolution) through torchvision's feature extraction. CAM needs a
classifier that is global average pooling + one linear layer and says why it does not apply
otherwise (:meth:`Explainer.not_applicable`). Integrated Gradients and saliency come from captum;
``random`` (the pixel floor) and ``random_grid`` (the floor on the explained grid) are the controls. captum is imported when one of them runs, so loading params does not
pay for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision.models.feature_extraction import create_feature_extractor

from kmx_eval.errors import KmxError
from kmx_eval.models.architectures import Architecture, architecture_of
from kmx_eval.seeding import rng

from .attribution import cam_map
from .controls import explained_grid
from .core import Explainer, register

__all__ = ["CAMExplainer", "GradCAMExplainer", "IntegratedGradientsExplainer", "SaliencyExplainer",
           "RandomExplainer", "RandomGridExplainer", "OcclusionExplainer"]


def _tap(model: torch.nn.Module, arch: Architecture, logits: bool):
    """The model as an FX graph returning the CAM layer's output (and the logits)."""
    nodes = {arch.cam_layer: "A"}
    if logits:
        nodes[arch.classifier] = "logits"
    # Traced from the model given (shares its parameters), so a randomised copy is honoured.
    return create_feature_extractor(model, nodes)


@register
class CAMExplainer(Explainer):
    """Class activation map ``<w_c, a_ij> + b_c`` of the CNN's linear classifier on its last block.

    Complete: ``mean_ij`` of the map is the CNN's logit of class c. Applies only where the
    classifier is global average pooling + one linear layer.
    """

    name = "cam"
    explains = "cnn"

    @classmethod
    def not_applicable(cls, architecture: Architecture) -> str | None:
        reason = architecture.not_gap_linear_reason()
        return None if reason is None else f"not applicable: CAM needs GAP + one linear layer; {reason}"

    def attribute(self, model, x, target):
        arch = architecture_of(model)
        reason = self.not_applicable(arch)
        if reason is not None:
            raise KmxError(f"explainer 'cam': {reason}")
        A = _tap(model, arch, logits=False)(x)["A"]
        classifier = arch.classifier_of(model)
        return cam_map(A, classifier.weight, classifier.bias, target)


@register
class GradCAMExplainer(Explainer):
    """Grad-CAM on the CNN's CAM layer ``A``: ``ReLU(sum_k alpha_k a_k)``, ``alpha_k = mean_ij d logit_c / d a_kij``.

    The gradient is taken through the FX graph that returns both ``A`` and the logits, so any
    node (also a functional one, such as DenseNet's final ``relu``) can be the layer. Where the
    head is global average pooling then one linear layer, ``alpha_k = w_ck / (h w)``, so
    Grad-CAM ``= ReLU(CAM - b_c) / (h w)``: CAM up to a positive affine change, clipped at 0 where CAM
    falls below the bias. Where no location is clipped the two maps are affine-equivalent and the
    evaluation scores them once (``kmx_eval.metrics.evaluation``); they differ only by the clipping."""

    name = "gradcam"
    explains = "cnn"
    needs_gradient = True

    def attribute(self, model, x, target):
        out = _tap(model, architecture_of(model), logits=True)(x)
        A, logits = out["A"], out["logits"]
        chosen = logits.gather(1, target.reshape(-1, 1).to(logits.device)).sum()
        (grad,) = torch.autograd.grad(chosen, A)
        alpha = grad.mean(dim=(2, 3), keepdim=True)
        return torch.relu((alpha * A).sum(dim=1))


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
        # captum takes seconds to import: only when this explainer runs
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
        # captum takes seconds to import: only when this explainer runs
        from captum.attr import Saliency

        return Saliency(model).attribute(x, target=target, abs=True).amax(dim=1)


@register
class RandomExplainer(Explainer):
    """The pixel floor: i.i.d. uniform ``U(0, 1)`` values at every pixel, from a seeded stream.

    Independent of the model and the image; the same seed and the same sequence of calls give the
    same maps. Runs on every explained model (``explains = "any"``): the chance level of pixel-level
    maps (Integrated Gradients, saliency) on the model it explains (:mod:`.controls`). Maps on a
    feature grid are read against :class:`RandomGridExplainer` (docs/METHOD.md, section 6).
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


@register
class RandomGridExplainer(Explainer):
    """The floor on the explained grid: i.i.d. uniform ``U(0, 1)`` values per cell of the grid that
    the model's maps live on (:func:`~.controls.explained_grid`: ``F_S``'s for a k-means head, the CAM
    layer's for the CNN), upsampled bilinearly like those maps (:meth:`Explainer.explain`).

    A random map on a coarse grid is smooth, so its chance levels differ from the pixel one's
    (issue 22: digits, 2 x 2 grid, RelevanceMassAccuracy 0.366 against the 0.437 mask share); it is
    the reference of every localisation number of a map on that grid. Seeded as ``random`` (its own
    stream): the same seed and sequence of calls give the same maps.
    """

    name = "random_grid"
    explains = "any"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self._rng = rng(self.seed, "explainer", "random_grid")

    @classmethod
    def settings_from(cls, explain_cfg: Any, seed: int) -> dict[str, Any]:
        return {"seed": seed}

    def attribute(self, model, x, target):
        h, w = explained_grid(model, x)
        return torch.from_numpy(self._rng.uniform(0.0, 1.0, size=(x.shape[0], h, w)).astype(np.float32))


@register
class OcclusionExplainer(Explainer):
    """The informed reference of the faithfulness control: occlusion of the explained model's own grid
    cells (captum ``Occlusion``), ``a_ij = f(x)_c - f(x with cell ij set to the image's black)_c``.

    The cells are those of :func:`~.controls.explained_grid` (``F_S``'s grid for a k-means head,
    the CAM layer's for the CNN): windows of ``ceil(H / gh) x ceil(W / gw)`` pixels over every
    channel, stride ``floor(H / gh)`` (exactly the grid's cells when it divides the image; captum
    averages where windows overlap). The black baseline is the image's minimum over every value,
    Quantus's ``"black"``, so the map measures what the faithfulness metrics' removal does. Explains
    any model (``explains = "any"``); ``gh * gw + 1`` forward passes per image. A faithfulness metric
    enters the ranking on a dataset only where this map beats ``random`` on every model
    (:func:`kmx_eval.report.stats.faithfulness_controls`).
    """

    name = "occlusion"
    explains = "any"

    def attribute(self, model, x, target):
        # captum takes seconds to import: only when this explainer runs
        from captum.attr import Occlusion

        gh, gw = explained_grid(model, x)
        height, width = x.shape[-2:]
        window = (x.shape[1], -(-height // gh), -(-width // gw))
        strides = (x.shape[1], max(1, height // gh), max(1, width // gw))
        black = x.detach().amin(dim=(1, 2, 3), keepdim=True).expand_as(x).contiguous()
        maps = Occlusion(model).attribute(x, sliding_window_shapes=window, strides=strides, baselines=black,
                                          target=target)
        return maps.mean(dim=1)
