"""Gradient-free explainers of the k-means head (docs/METHOD.md, section 3).

The model is a :class:`~kmx_eval.heads.module.KMeansHeadModule`: ``model.features(x)`` gives the
combined map ``F_S (N, D, H, W)`` and ``model.prototypes`` the prototypes ``(C, H_p, D)``. One
forward through the blocks gives ``F``; the decision is read off ``z = mean_ij f_ij``
(``s_c = -min_h ||z - p_ch||^2``), and the map is an exact function of ``F`` and two prototypes:
``p``, the nearest prototype of the explained class, and ``p'``, the nearest prototype of the
runner-up class (:func:`~kmx_eval.explain.attribution.select_prototypes`).
"""

from __future__ import annotations

import torch

from .attribution import distance_map, margin_centred_map, margin_map, pool, select_prototypes
from .core import Explainer, register

__all__ = ["KMeansExplainer", "MarginExplainer", "MarginCentredExplainer", "DistanceExplainer"]


class KMeansExplainer(Explainer):
    """Base of the k-means head's explainers: one forward to ``F_S``, then :meth:`grid_map`."""

    explains = "kmeans"

    def attribute(self, model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        F = model.features(x).float()
        # The choice of p and p' is made in float64, as the module scores its classes, so the map
        # explains the decision the module actually takes; the map itself is float32.
        p, p_prime = select_prototypes(pool(F).double(), model.prototypes.double(), target)
        return self.grid_map(F, p.to(F), p_prime.to(F))

    def grid_map(self, F: torch.Tensor, p: torch.Tensor, p_prime: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register
class MarginExplainer(KMeansExplainer):
    """Complete margin map ``e_ij = <f_ij, p - p'> + <z, p - p'> + ||p'||^2 - ||p||^2``.

    ``mean_ij e_ij = ||z - p'||^2 - ||z - p||^2``, the head's decision margin.
    """

    name = "margin"

    def grid_map(self, F, p, p_prime):
        return margin_map(F, p, p_prime)


@register
class MarginCentredExplainer(KMeansExplainer):
    """Centred margin map ``<f_ij - z, p - p'>`` (mean zero): evidence above the image's average."""

    name = "margin_centred"
    # margin - margin_centred = <z, p - p'> + ||p'||^2 - ||p||^2, a per-image constant (any model, any target)
    affine_equivalent_to = "margin"

    def grid_map(self, F, p, p_prime):
        return margin_centred_map(F, p, p_prime)


@register
class DistanceExplainer(KMeansExplainer):
    """Prototype activation ``-||f_ij - p||^2`` (ProtoPNet-style), p the explained class's prototype."""

    name = "distance"

    def grid_map(self, F, p, p_prime):
        return distance_map(F, p)
