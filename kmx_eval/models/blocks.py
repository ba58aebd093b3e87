"""Blocks B1..Bn of a CNN, block combinations F_S and pooled embeddings z_S (docs/METHOD.md, section 1).

For an image ``x``, block ``b`` (the node its architecture names, e.g. a ResNet's ``layer{b}``:
:mod:`kmx_eval.models.architectures`) gives ``A_b(x)`` of shape
``(C_b, H_b, W_b)``. For a block combination ``S`` with shallowest block ``s``:

    F_S(x) = concat_{b in S, increasing} resize(norm_b(A_b(x)), (H_s, W_s))   (sum_b C_b, H_s, W_s)
    z_S(x) = mean_ij F_S(x)[:, i, j]                                          (sum_b C_b,)

where ``norm_b`` is applied to each block on its own grid, before resizing:

- ``none``:        ``A_b``;
- ``l2``:          ``A_b[:, i, j] / max(||A_b[:, i, j]||_2, eps)`` (each location a unit vector);
- ``standardize``: ``(A_b[c] - mu_bc) / sigma_bc`` with per-channel statistics over every location
  of every training image (:class:`BlockStats`).

With the block weighting ``balanced`` (docs/METHOD.md, section 6) each normalised block is multiplied
by ``g_b = 1 / sqrt(V_b)`` (:func:`block_scales`), ``V_b`` its total variance over the training
split, so that every block of S brings the same total variance to F_S, z_S, the heads and every map;
``channels`` keeps ``g_b = 1`` (a block weighs in proportion to its channel count).

``resize`` is bilinear (``align_corners=False``) or nearest. Both are linear maps whose weights sum
to one, so ``resize`` commutes with the affine ``standardize`` and with the mean; the embedding
cache relies on that (:mod:`kmx_eval.models.embeddings`). For ``S = {4}`` and ``none``, ``z_S`` is
(``n`` the deepest block) exactly the input of the CNN's own linear layer where the classifier is
global average pooling + one linear layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from kmx_eval.errors import DataError, ParamsError
from kmx_eval.models.architectures import Architecture, architecture_of
from kmx_eval.models.combination import WEIGHTINGS, Combination, as_combination

NORMALISATIONS = ("none", "l2", "standardize")
RESIZES = ("bilinear", "nearest")
#: Floor of the location norm in ``l2`` (an all-zero location stays zero instead of NaN).
L2_EPS = 1e-12
#: A channel whose training standard deviation is below this is constant on the training split
#: (a dead ReLU channel): standardisation only centres it (sigma := 1) instead of dividing by ~0.
MIN_STD = 1e-6
LOGITS = "logits"
_STATS_KEY = re.compile(r"^stats/B(\d+)/(mean|std)$")


def _check_blocks(blocks: Iterable[int], arch: Architecture) -> tuple[int, ...]:
    out = tuple(sorted(set(int(b) for b in blocks)))
    if not out or any(b not in arch.block_numbers for b in out):
        raise ParamsError(f"blocks {tuple(blocks)!r}: expected a non-empty subset of "
                          f"{arch.block_numbers} (the blocks of {arch.name})")
    return out


def block_channels(backbone: nn.Module) -> dict[int, int]:
    """``{b: C_b}``: output channels of every block of the backbone's architecture.

    From the architecture's meta-device dry forward (64..512 for ResNet18/34, 256..2048 for 50).
    """
    return architecture_of(backbone).channels


class BlockExtractor(nn.Module):
    """The backbone with taps on its blocks: ``x -> {b: A_b(x) for b in blocks, "logits": f(x)}``.

    Built with torchvision's :func:`~torchvision.models.feature_extraction.create_feature_extractor`
    (an FX graph of the backbone returning the outputs of the block nodes and the classifier), so one forward
    pass gives every block and the CNN's own logits, and the parameters are the backbone's own
    (shared, not copied: loading weights into the backbone changes the extractor).

    Parameters
    ----------
    backbone : nn.Module
        A model of a registered architecture (:func:`~kmx_eval.models.architectures.architecture_of`).
    blocks : iterable of int, optional
        Blocks to tap, a non-empty subset of the architecture's (default: all of them).
    logits : bool
        Also return the CNN's logits under ``"logits"`` (the graph then runs to the classifier;
        without it the graph stops after the deepest tapped block).

    Attributes
    ----------
    blocks : tuple of int
    channels : dict[int, int]
        ``C_b`` for every tapped block.
    architecture : Architecture
    backbone : nn.Module
        The wrapped model (e.g. for its classifier).
    """

    def __init__(self, backbone: nn.Module, blocks: Iterable[int] | None = None, logits: bool = True):
        super().__init__()
        self.architecture = arch = architecture_of(backbone)
        self.blocks = _check_blocks(arch.block_numbers if blocks is None else blocks, arch)
        self.returns_logits = bool(logits)
        self.channels = {b: c for b, c in arch.channels.items() if b in self.blocks}
        return_nodes = {arch.node(b): str(b) for b in self.blocks}
        if logits:
            return_nodes[arch.classifier] = LOGITS
        self.backbone = backbone
        self.body = create_feature_extractor(backbone, return_nodes=return_nodes)
        # A new Module is in training mode; take the backbone's mode instead, so that restoring
        # the extractor's mode later cannot switch a backbone in eval mode to training.
        self.train(backbone.training)

    def forward(self, x: torch.Tensor) -> dict:
        out = self.body(x)
        acts: dict = {b: out[str(b)] for b in self.blocks}
        if self.returns_logits:
            acts[LOGITS] = out[LOGITS]
        return acts


# ---------------------------------------------------------------------------------- statistics
@dataclass
class BlockStats:
    """Per-block, per-channel mean ``mu_bc`` and standard deviation ``sigma_bc`` of ``A_b``.

    ``mu_bc = mean_{n,i,j} A_b(x_n)[c, i, j]`` and
    ``sigma_bc = sqrt(mean_{n,i,j} A_b(x_n)[c, i, j]^2 - mu_bc^2)`` over every location of every
    training image (population variance); ``sigma_bc < MIN_STD`` is replaced by 1 (see
    :data:`MIN_STD`). Arrays are float32 of shape ``(C_b,)``.
    """

    mean: dict[int, np.ndarray] = field(default_factory=dict)
    std: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def blocks(self) -> tuple[int, ...]:
        return tuple(sorted(self.mean))

    @classmethod
    def from_moments(cls, count: Mapping[int, float], total: Mapping[int, np.ndarray],
                     total_sq: Mapping[int, np.ndarray]) -> "BlockStats":
        """Statistics from location counts, sums and sums of squares (float64) per block."""
        mean, std = {}, {}
        for b in sorted(total):
            n = float(count[b])
            if n <= 0:
                raise DataError(f"block statistics of B{b} need at least one location, got none")
            mu = np.asarray(total[b], np.float64) / n
            var = np.maximum(np.asarray(total_sq[b], np.float64) / n - mu**2, 0.0)
            sigma = np.sqrt(var)
            sigma[sigma < MIN_STD] = 1.0
            mean[b], std[b] = mu.astype(np.float32), sigma.astype(np.float32)
        return cls(mean, std)

    @classmethod
    def from_arrays(cls, acts: Mapping) -> "BlockStats":
        """Statistics of whole activation arrays ``{b: (N, C_b, H_b, W_b)}`` (numpy or torch)."""
        acc = BlockStatsAccumulator()
        acc.update({b: a for b, a in acts.items() if isinstance(b, int)})
        return acc.finalize()

    def to_dict(self) -> dict[str, np.ndarray]:
        """``{"stats/B{b}/mean": (C_b,), "stats/B{b}/std": (C_b,)}`` (the embedding cache's keys)."""
        out = {}
        for b in self.blocks:
            out[f"stats/B{b}/mean"] = self.mean[b]
            out[f"stats/B{b}/std"] = self.std[b]
        return out

    @classmethod
    def from_dict(cls, arrays: Mapping[str, np.ndarray]) -> "BlockStats":
        """Read the ``stats/B{b}/...`` keys of ``arrays`` (other keys, e.g. a whole cache, are ignored)."""
        mean, std = {}, {}
        found = sorted({int(m.group(1)) for k in arrays if (m := _STATS_KEY.match(str(k)))})
        for b in found:
            m, s = arrays.get(f"stats/B{b}/mean"), arrays.get(f"stats/B{b}/std")
            if m is None and s is None:
                continue
            if m is None or s is None:
                raise DataError(f"block statistics of B{b} have a mean or a std but not both")
            mean[b] = np.asarray(m, np.float32)
            std[b] = np.asarray(s, np.float32)
        return cls(mean, std)


class BlockStatsAccumulator:
    """Streaming :class:`BlockStats`: sums and sums of squares in float64 over all locations.

    Call :meth:`update` with each batch ``{b: A_b (n, C_b, H_b, W_b)}`` of the training split, then
    :meth:`finalize`. Sums stay on the activations' device until :meth:`finalize`.
    """

    def __init__(self):
        self.count: dict[int, float] = {}
        self.total: dict[int, torch.Tensor] = {}
        self.total_sq: dict[int, torch.Tensor] = {}

    def update(self, acts: Mapping) -> None:
        for b, a in acts.items():
            if not isinstance(b, int):
                continue  # "logits"
            a = torch.as_tensor(a).detach().to(torch.float64)
            s, sq = a.sum((0, 2, 3)), (a * a).sum((0, 2, 3))
            if b in self.total:
                self.total[b] += s
                self.total_sq[b] += sq
                self.count[b] += a.shape[0] * a.shape[2] * a.shape[3]
            else:
                self.total[b], self.total_sq[b] = s, sq
                self.count[b] = float(a.shape[0] * a.shape[2] * a.shape[3])

    def finalize(self) -> BlockStats:
        if not self.total:
            raise DataError("block statistics need at least one training image, got none")
        return BlockStats.from_moments(
            self.count,
            {b: t.cpu().numpy() for b, t in self.total.items()},
            {b: t.cpu().numpy() for b, t in self.total_sq.items()},
        )


# ---------------------------------------------------------------------------------- F_S and z_S
def _check_option(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ParamsError(f"features.{name}: unknown value {value!r}; valid: {', '.join(valid)}")


def normalise_block(a: torch.Tensor, block: int, normalisation: str = "none",
                    stats: BlockStats | None = None) -> torch.Tensor:
    """``norm_b(A_b)`` on the block's own grid (see the module docstring for the three choices).

    Parameters
    ----------
    a : torch.Tensor, (N, C_b, H_b, W_b)
    block : int
        ``b``, to pick the statistics for ``standardize``.
    normalisation : {"none", "l2", "standardize"}
    stats : BlockStats, required for ``standardize``
    """
    _check_option("normalisation", normalisation, NORMALISATIONS)
    if normalisation == "none":
        return a
    if normalisation == "l2":
        return F.normalize(a, p=2.0, dim=1, eps=L2_EPS)
    if stats is None or block not in stats.mean:
        have = ", ".join(f"B{b}" for b in stats.blocks) if stats is not None else "none"
        raise ParamsError(
            f"normalisation 'standardize' needs training-split statistics of B{block} "
            f"(statistics given for: {have})"
        )
    mu = torch.as_tensor(stats.mean[block], dtype=a.dtype, device=a.device)[None, :, None, None]
    sigma = torch.as_tensor(stats.std[block], dtype=a.dtype, device=a.device)[None, :, None, None]
    if mu.shape[1] != a.shape[1]:
        raise DataError(f"statistics of B{block} have {mu.shape[1]} channels, A_{block} has {a.shape[1]}")
    return (a - mu) / sigma


def block_scales(blocks: Iterable[int], normalisation: str, weighting: str,
                 stats: BlockStats | None = None) -> dict[int, float]:
    """Factor ``g_b`` of each block in F_S: 1 for ``channels``, ``1 / sqrt(V_b)`` for ``balanced``.

    ``V_b`` is the total variance of ``norm_b(A_b)`` over the locations of the training split, from
    the block statistics: ``standardize`` gives every channel unit variance, so ``V_b = C_b`` (a
    dead channel, whose sigma is floored to 1, counts as one); ``none`` gives
    ``V_b = sum_c sigma_bc^2``; ``l2`` makes every location a unit vector, so each block already has
    unit total second moment and ``V_b = 1`` (balanced equals channels there). With the factors,
    ``sum_{c in b} Var(g_b norm_b(A_b)[c]) = 1`` for every block of S on its own grid. Bilinear
    upsampling onto the shallowest grid removes part of a deeper block's variance, so the shares in
    F_S itself are not exactly equal: the fit stage measures them
    (:func:`kmx_eval.explain.concepts.variance_shares`) and the report shows them.
    """
    _check_option("block_weighting", weighting, WEIGHTINGS)
    _check_option("normalisation", normalisation, NORMALISATIONS)
    blocks = tuple(blocks)
    if weighting == "channels" or normalisation == "l2":
        return {b: 1.0 for b in blocks}
    missing = [b for b in blocks if stats is None or b not in stats.mean]
    if missing:
        raise ParamsError(f"features.block_weighting 'balanced' needs training-split statistics of "
                          f"B{missing[0]}; rerun the embed stage")
    out = {}
    for b in blocks:
        total = (float(len(stats.mean[b])) if normalisation == "standardize"
                 else float(np.sum(np.asarray(stats.std[b], np.float64) ** 2)))
        out[b] = 1.0 / float(np.sqrt(total)) if total > 0 else 1.0
    return out


def resize_to(a: torch.Tensor, size: tuple[int, int], resize: str = "bilinear") -> torch.Tensor:
    """``resize(a, size)``: bilinear (``align_corners=False``) or nearest; identity at equal size."""
    _check_option("resize", resize, RESIZES)
    size = (int(size[0]), int(size[1]))
    if tuple(a.shape[-2:]) == size:
        return a
    if resize == "bilinear":
        return F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    return F.interpolate(a, size=size, mode="nearest")


def combine(acts: Mapping, combination: Combination, normalisation: str = "none",
            stats: BlockStats | None = None, resize: str = "bilinear") -> torch.Tensor:
    """The combined map ``F_S = concat_{b in S} g_b resize(norm_b(A_b), grid of s)``, ``s = min S``.

    ``g_b`` is the block weighting of ``combination`` (:func:`block_scales`; 1 for ``channels``).

    Parameters
    ----------
    acts : mapping
        ``{b: A_b (N, C_b, H_b, W_b)}`` as returned by :class:`BlockExtractor`.
    combination : Combination
        The block combination ``S`` with its block weighting (``Params.combination``).
    normalisation : {"none", "l2", "standardize"}
        Applied to each block on its own grid, before resizing.
    stats : BlockStats, optional
        Training-split statistics, required for ``standardize``.
    resize : {"bilinear", "nearest"}

    Returns
    -------
    torch.Tensor, (N, sum_{b in S} C_b, H_s, W_s)
        Channels in increasing block order.
    """
    comb = as_combination(combination)
    missing = [b for b in comb.blocks if b not in acts]
    if missing:
        tapped = ", ".join(f"B{b}" for b in sorted(k for k in acts if isinstance(k, int)))
        raise ParamsError(
            f"block combination {comb.name} needs B{missing[0]}, which the extractor does not tap "
            f"(tapped: {tapped or 'none'}); build BlockExtractor with blocks including {comb.blocks}"
        )
    _check_option("normalisation", normalisation, NORMALISATIONS)
    _check_option("resize", resize, RESIZES)
    grid = tuple(acts[comb.shallowest].shape[-2:])
    scales = block_scales(comb.blocks, normalisation, comb.weighting, stats)
    parts = [resize_to(normalise_block(acts[b], b, normalisation, stats), grid, resize)
             for b in comb.blocks]
    parts = [p if scales[b] == 1.0 else p * scales[b] for b, p in zip(comb.blocks, parts)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def pool(f: torch.Tensor) -> torch.Tensor:
    """The pooled embedding ``z_S = mean_ij F_S[:, :, i, j]``: ``(N, D, H, W) -> (N, D)``."""
    return f.mean(dim=(2, 3))
