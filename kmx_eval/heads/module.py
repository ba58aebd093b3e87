"""The k-means head as a ``torch.nn.Module``: images -> class scores, callable by Quantus and captum.

The module chains the backbone's blocks, the block combination and the prototypes:

.. math::  x \\mapsto F_S(x) \\mapsto z_S(x) = \\operatorname{mean}_{ij} F_S(x)[:, i, j]
           \\mapsto s_c(x) = -\\min_h \\lVert z_S(x) - p_{ch} \\rVert^2 ,

so any perturbation or gradient method can treat the k-means head like any other model
(docs/METHOD.md, section 2). It gives the same scores as :class:`~kmx_eval.heads.KMeansHead` on the
same embeddings.

The class scores only need the pooled ``z_S``, not the map ``F_S``: ``resize`` is linear with
weights summing to one, so (docs/METHOD.md, section 1)

.. math::  z_S = \operatorname{concat}_{b \in S} \sum_{kl} w^{(b \to s)}_{kl}\, \mathrm{norm}_b(A_b)[:, k, l]

with the fixed pooling weights ``w`` of :func:`kmx_eval.models.embeddings.pooling_weights` (the
mean of the resized unit images; the plain mean when ``b = s``), and ``standardize`` is affine
per channel, so it is applied to the pooled part: ``(P_b - mu_b) / sigma_b``. :meth:`forward`
(what Quantus calls for every perturbed image) uses this and never builds the upsampled
``F_S`` (B3 and B4 resized to B2's grid and 896 channels concatenated, for B234);
:meth:`features` still builds ``F_S`` for the explainers. Both give the same ``z_S`` up to float
rounding (tested); the embedding cache is computed with the same weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kmx_eval.models.blocks import (BlockExtractor, NORMALISATIONS, RESIZES, block_scales, combine,
                                    normalise_block, pool)
from kmx_eval.models.combination import Combination, as_combination
from kmx_eval.models.embeddings import pooling_weights

__all__ = ["KMeansHeadModule", "prototype_scores"]


def prototype_scores(z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Class scores ``s_c(z) = -min_h ||z - p_ch||^2`` of embeddings ``z`` (N, D).

    ``prototypes`` has shape (C, H, D). The squared distances use the expanded form
    ``||z||^2 - 2 <z, p> + ||p||^2`` in float64 (one matrix product; cancellation error about 1e-16
    of the squared norms), clipped at zero, so the scores match
    :meth:`~kmx_eval.heads.KMeansHead.class_scores` to float64 rounding; the result is returned in
    ``z``'s dtype. Differentiable in ``z``.

    Returns
    -------
    torch.Tensor, (N, C)
    """
    C, H, D = prototypes.shape
    if z.ndim != 2 or z.shape[1] != D:
        raise ValueError(f"embeddings must have shape (N, {D}) to match the prototypes, got {tuple(z.shape)}")
    z64 = z.to(torch.float64)
    p = prototypes.reshape(C * H, D).to(device=z.device, dtype=torch.float64)
    d = (z64 * z64).sum(1, keepdim=True) - 2.0 * (z64 @ p.T) + (p * p).sum(1)[None, :]
    d = d.clamp_min(0.0).reshape(len(z), C, H)
    return (-d.amin(dim=2)).to(z.dtype)


class KMeansHeadModule(nn.Module):
    """Backbone + block combination + k-means prototypes -> class scores ``s_c(x)``.

    ``forward(x) = -min_h ||z_S(x) - p_ch||^2`` with ``z_S = pool(combine(extractor(x), ...))``.
    The module is always in eval mode: :meth:`train` keeps every submodule in eval, because the
    head is post-hoc (nothing is trained) and a BatchNorm switched to training mode by a caller
    (Quantus, captum) would change the features it explains.

    Parameters
    ----------
    extractor : kmx_eval.models.blocks.BlockExtractor
        Taps the blocks of the backbone (at least those of ``combination``).
    combination : Combination
        The block combination S with its block weighting (``Params.combination``).
    normalisation : {"none", "l2", "standardize"}
        Per-block normalisation used when the head was fitted.
    stats : kmx_eval.models.blocks.BlockStats or None
        Training-split statistics (required for ``standardize``).
    prototypes : array or tensor of shape (n_classes, n_prototypes, D)
        ``KMeansHead.prototypes_``; column c of the output is row c of the prototypes.
    resize : {"bilinear", "nearest"}, default="bilinear"

    Attributes
    ----------
    prototypes : torch.Tensor buffer (C, H, D), float64 (moves with ``.to(device)``)
    """

    def __init__(self, extractor: nn.Module, combination, normalisation: str, stats, prototypes,
                 resize: str = "bilinear"):
        super().__init__()
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {normalisation!r}")
        if resize not in RESIZES:
            raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}")
        protos = torch.as_tensor(np.asarray(prototypes) if not torch.is_tensor(prototypes) else prototypes)
        if protos.ndim != 3:
            raise ValueError(f"prototypes must have shape (n_classes, n_prototypes, D), got {tuple(protos.shape)}")
        self.extractor = extractor
        self.combination = as_combination(combination)
        self.normalisation = normalisation
        self.stats = stats
        self.resize = resize
        self.register_buffer("prototypes", protos.detach().to(torch.float64).clone())
        # Pooling weights per (source grid, shallowest grid, device, dtype), built on first use.
        self._pooling: dict = {}
        self.train(False)

    @classmethod
    def from_head(cls, head, extractor: nn.Module, combination, normalisation: str, stats,
                  resize: str = "bilinear") -> "KMeansHeadModule":
        """Build the module from a fitted :class:`~kmx_eval.heads.KMeansHead`."""
        return cls(extractor, combination, normalisation, stats, head.prototypes_, resize)

    @classmethod
    def from_backbone(cls, head, backbone: nn.Module, combination, normalisation: str, stats,
                      resize: str = "bilinear") -> "KMeansHeadModule":
        """Build the module of a fitted ``head`` on a trained backbone.

        The extractor taps only the blocks of ``combination`` (a :class:`Combination`) and
        not the logits: the class scores come from the prototypes, so the CNN's own classifier
        is never run.
        """
        combination = as_combination(combination)
        extractor = BlockExtractor(backbone, blocks=combination.blocks, logits=False)
        return cls(extractor, combination, normalisation, stats, head.prototypes_, resize)

    @property
    def n_classes(self) -> int:
        return int(self.prototypes.shape[0])

    def train(self, mode: bool = True) -> "KMeansHeadModule":
        """Stay in eval mode whatever ``mode`` is (see the class docstring)."""
        return super().train(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The combined map ``F_S(x)``, (N, sum_b C_b, H_s, W_s)."""
        acts = self.extractor(x)
        return combine(acts, self.combination, self.normalisation, self.stats, self.resize)

    def feature_grid(self, x) -> tuple[int, int]:
        """``(H_s, W_s)``, the grid of ``F_S`` for images shaped like ``x`` (one image is run)."""
        first = torch.as_tensor(x[:1], dtype=torch.float32, device=self.prototypes.device)
        with torch.no_grad():
            return tuple(int(v) for v in self.features(first).shape[-2:])

    def embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled embedding ``z_S(x) = mean_ij F_S(x)[:, i, j]``, (N, D), without building ``F_S``.

        Each block is pooled on its own grid with the weights of its resize to the shallowest
        grid (module docstring); equal to ``pool(self.features(x))`` up to float rounding.
        """
        return self.embeddings_from_blocks(self.extractor(x))

    def embeddings_from_blocks(self, acts) -> torch.Tensor:
        """``z_S`` from block activations ``{b: A_b}`` (module docstring), (N, sum_b C_b)."""
        comb = self.combination
        grid = tuple(acts[comb.shallowest].shape[-2:])
        # The block weighting g_b is a constant factor per block: it commutes with the pooling.
        scales = block_scales(comb.blocks, self.normalisation, comb.weighting, self.stats)
        parts = []
        for b in comb.blocks:
            a = acts[b]
            # l2 acts per location, before the resize; standardize is affine, so after pooling.
            if self.normalisation == "l2":
                a = normalise_block(a, b, "l2")
            source = tuple(a.shape[-2:])
            if source == grid:
                z = a.mean(dim=(2, 3))
            else:
                key = (source, grid, str(a.device), a.dtype)
                w = self._pooling.get(key)
                if w is None:
                    w = pooling_weights(source, grid, self.resize, device=a.device).to(a.dtype)
                    self._pooling[key] = w
                z = torch.einsum("nchw,hw->nc", a, w)
            if self.normalisation == "standardize":
                z = normalise_block(z[:, :, None, None], b, "standardize", self.stats)[:, :, 0, 0]
            parts.append(z if scales[b] == 1.0 else z * scales[b])
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def scores_from_embeddings(self, z: torch.Tensor) -> torch.Tensor:
        """``s_c(z) = -min_h ||z - p_ch||^2`` for embeddings ``z`` (N, D) -> (N, C)."""
        return prototype_scores(z, self.prototypes)

    def scores_from_features(self, f: torch.Tensor) -> torch.Tensor:
        """Class scores of combined maps ``F_S`` (N, D, H_s, W_s): ``s_c(pool(F))``."""
        return self.scores_from_embeddings(pool(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``s_c(x)`` of images ``x`` (N, 3, H, W) -> (N, C), from the pooled ``z_S``.

        ``s_c(z_S(x))`` with :meth:`embeddings` (no ``F_S``); equal to
        ``scores_from_features(features(x))`` up to float rounding.
        """
        return self.scores_from_embeddings(self.embeddings(x))
