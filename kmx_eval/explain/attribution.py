"""Attribution maps on the grid of F_S: pure tensor functions (docs/METHOD.md, section 3).

Notation. ``F`` is a combined map ``F_S(x)`` of shape ``(N, D, H, W)``; ``f_ij = F[:, :, i, j]`` is
the vector at grid location ``(i, j)`` and ``z = mean_ij f_ij`` the pooled embedding. A k-means
head has prototypes ``p_ch`` (``(C, H_p, D)``, H_p prototypes per class) and class scores
``s_c(z) = -min_h ||z - p_ch||^2``.

Because ``z`` is the mean of the ``f_ij``, the squared distance to any prototype decomposes exactly
over locations, ``||z - p||^2 = mean_ij <f_ij - p, z - p>``. The decision margin between the nearest
prototype ``p`` of the explained class and the nearest prototype ``p'`` of the runner-up class,
``m = ||z - p'||^2 - ||z - p||^2``, is therefore the mean of the *margin map*

    e_ij = <f_ij, p - p'> + <z, p - p'> + ||p'||^2 - ||p||^2,

which is complete (its mean is the margin), signed, and needs no gradient. The linear head's CAM,
``<w_c, a_ij> + b_c`` on the last block B_n (where the classifier is GAP + one linear layer), is complete in the same sense: its mean is the logit.

Every function here takes and returns tensors, so the identities are testable on plain numbers;
the explainers in :mod:`kmx_eval.explain.kmeans` and :mod:`kmx_eval.explain.baselines` wire them
to models.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as nnf

from kmx_eval.models.blocks import pool  # noqa: F401  (z = mean_ij f_ij; re-exported for the explainers)

__all__ = [
    "pool",
    "prototype_distances",
    "class_scores",
    "select_prototypes",
    "margin",
    "margin_map",
    "margin_centred_map",
    "distance_map",
    "cam_map",
    "upsample",
]


def _check_maps(F: torch.Tensor, name: str = "F") -> None:
    if F.dim() != 4:
        raise ValueError(f"{name} must have shape (N, D, H, W), got {tuple(F.shape)}")


def _per_image(v: torch.Tensor, n: int, name: str) -> torch.Tensor:
    """Broadcast a vector ``(D,)`` to ``(n, D)``; pass ``(n, D)`` through."""
    if v.dim() == 1:
        return v.unsqueeze(0).expand(n, -1)
    if v.dim() != 2 or v.shape[0] != n:
        raise ValueError(f"{name} must have shape (D,) or ({n}, D), got {tuple(v.shape)}")
    return v


def prototype_distances(z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Squared distances ``d_nch = ||z_n - p_ch||^2``: ``(N, D), (C, H, D) -> (N, C, H)``.

    Computed as an explicit difference (not the ``|z|^2 - 2<z,p> + |p|^2`` expansion), one class at
    a time, so that near-ties between prototypes are ranked without cancellation error and memory
    stays at ``N x H x D`` whatever the number of classes.
    """
    if z.dim() != 2 or prototypes.dim() != 3 or z.shape[1] != prototypes.shape[2]:
        raise ValueError(
            f"z must be (N, D) and prototypes (C, H, D) with the same D; got {tuple(z.shape)} "
            f"and {tuple(prototypes.shape)}"
        )
    prototypes = prototypes.to(dtype=z.dtype, device=z.device)
    out = [((z[:, None, :] - prototypes[c][None]) ** 2).sum(-1) for c in range(prototypes.shape[0])]
    return torch.stack(out, dim=1)


def class_scores(z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """k-means head class scores ``s_c(z) = -min_h ||z - p_ch||^2``: ``(N, D) -> (N, C)``.

    The explicit-difference form (:func:`prototype_distances`), the one :func:`select_prototypes`
    ranks prototypes with. The same score has two more implementations, in the expanded form
    ``||z||^2 - 2 <z, p> + ||p||^2``: :meth:`kmx_eval.heads.KMeansHead.class_scores` (numpy; the
    scikit-learn estimator imports no torch) and :func:`kmx_eval.heads.module.prototype_scores`
    (torch, differentiable, one matrix product for every batch Quantus perturbs). The three agree
    to float64 rounding, not bit for bit: merging them could change which prototype wins a
    near-tie and the bytes of maps and metrics.
    """
    return -prototype_distances(z, prototypes).min(dim=2).values


def select_prototypes(
    z: torch.Tensor, prototypes: torch.Tensor, target: torch.Tensor | Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prototypes that define the explained decision.

    ``p = argmin_h ||z - p_{t h}||^2``, the nearest prototype of the target class ``t``, and
    ``p' = argmin_h ||z - p_{r h}||^2`` with ``r = argmax_{c != t} s_c(z)``, the runner-up class
    (the best-scoring class other than the target; ``s_c(z) = -min_h ||z - p_ch||^2``).
    When the target is the head's decision, ``p'`` is the closest competitor and the margin is
    positive; when it is not (a misclassified image explained for its true class), the runner-up
    is the predicted class and the margin is negative: the map then shows the evidence against.

    Parameters
    ----------
    z : Tensor (N, D)
        Pooled embeddings.
    prototypes : Tensor (C, H, D)
        Prototypes of the k-means head, C >= 2 classes.
    target : Tensor or sequence of int (N,)
        Explained class of each image.

    Returns
    -------
    p, p_prime : Tensor (N, D)
    """
    if prototypes.dim() != 3 or prototypes.shape[0] < 2:
        raise ValueError(
            f"prototypes must be (C, H, D) with at least 2 classes (a margin needs a runner-up); "
            f"got {tuple(prototypes.shape)}"
        )
    prototypes = prototypes.to(dtype=z.dtype, device=z.device)
    target = torch.as_tensor(target, device=z.device).long().reshape(-1)
    n, n_classes = z.shape[0], prototypes.shape[0]
    if target.shape[0] != n:
        raise ValueError(f"target has {target.shape[0]} entries for {n} embeddings")
    if (target < 0).any() or (target >= n_classes).any():
        raise ValueError(f"target classes must lie in [0, {n_classes}); got {target.tolist()}")
    dist = prototype_distances(z, prototypes)            # (N, C, H)
    nearest_dist, nearest_h = dist.min(dim=2)            # (N, C)
    scores = -nearest_dist
    rows = torch.arange(n, device=z.device)
    scores[rows, target] = -torch.inf                    # the runner-up is any class but the target
    runner_up = scores.argmax(dim=1)
    p = prototypes[target, nearest_h[rows, target]]
    p_prime = prototypes[runner_up, nearest_h[rows, runner_up]]
    return p, p_prime


def margin(z: torch.Tensor, p: torch.Tensor, p_prime: torch.Tensor) -> torch.Tensor:
    """Decision margin ``m = ||z - p'||^2 - ||z - p||^2``: ``(N, D) -> (N,)``."""
    p = _per_image(p, z.shape[0], "p")
    p_prime = _per_image(p_prime, z.shape[0], "p_prime")
    return ((z - p_prime) ** 2).sum(1) - ((z - p) ** 2).sum(1)


def margin_map(F: torch.Tensor, p: torch.Tensor, p_prime: torch.Tensor) -> torch.Tensor:
    """Complete margin map ``e_ij = <f_ij, p - p'> + <z, p - p'> + ||p'||^2 - ||p||^2``.

    Its mean over locations equals the margin exactly:
    ``mean_ij e_ij = 2<z, p - p'> + ||p'||^2 - ||p||^2 = ||z - p'||^2 - ||z - p||^2 = m``.

    Parameters
    ----------
    F : Tensor (N, D, H, W)
    p, p_prime : Tensor (N, D) or (D,)
        Nearest prototype of the explained class and of the runner-up class.

    Returns
    -------
    Tensor (N, H, W), positive where a location argues for ``p`` over ``p'``.
    """
    _check_maps(F)
    n = F.shape[0]
    p = _per_image(p, n, "p").to(F)
    p_prime = _per_image(p_prime, n, "p_prime").to(F)
    delta = p - p_prime
    z = pool(F)
    # The spatially constant part: identical at every location, it carries the rest of the margin.
    offset = (z * delta).sum(1) + (p_prime ** 2).sum(1) - (p ** 2).sum(1)
    return torch.einsum("ndhw,nd->nhw", F, delta) + offset[:, None, None]


def margin_centred_map(F: torch.Tensor, p: torch.Tensor, p_prime: torch.Tensor) -> torch.Tensor:
    """Centred margin map ``c_ij = <f_ij - z, p - p'>`` (mean zero over locations).

    It is the margin map without its spatially constant part: ``e_ij = c_ij + m``, so it shows
    where the evidence for ``p`` over ``p'`` is above the image's average.
    """
    _check_maps(F)
    n = F.shape[0]
    delta = _per_image(p, n, "p").to(F) - _per_image(p_prime, n, "p_prime").to(F)
    centred = F - pool(F)[:, :, None, None]
    return torch.einsum("ndhw,nd->nhw", centred, delta)


def distance_map(F: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Prototype activation ``a_ij = -||f_ij - p||^2`` (ProtoPNet-style): ``(N, H, W)``.

    High (close to zero) where a location resembles the prototype ``p``.
    """
    _check_maps(F)
    p = _per_image(p, F.shape[0], "p").to(F)
    return -((F - p[:, :, None, None]) ** 2).sum(1)


def cam_map(
    A4: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, target: torch.Tensor | Sequence[int]
) -> torch.Tensor:
    """Class activation map of a linear head, ``cam_ij = <w_c, a_ij> + b_c``, c the target class.

    With ``A4`` the last block's output and ``(W, b)`` the CNN's linear classifier (which sees the mean of
    ``a_ij``), ``mean_ij cam_ij = <w_c, mean_ij a_ij> + b_c`` is exactly the logit of class c.

    Parameters
    ----------
    A4 : Tensor (N, D, H, W)
    W : Tensor (C, D)
    b : Tensor (C,) or None
    target : (N,) int

    Returns
    -------
    Tensor (N, H, W)
    """
    _check_maps(A4, "A4")
    target = torch.as_tensor(target, device=A4.device).long().reshape(-1)
    if target.shape[0] != A4.shape[0]:
        raise ValueError(f"target has {target.shape[0]} entries for {A4.shape[0]} maps")
    w = W.to(A4)[target]                                     # (N, D)
    cam = torch.einsum("ndhw,nd->nhw", A4, w)
    if b is not None:
        cam = cam + b.to(A4)[target][:, None, None]
    return cam


def upsample(maps: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize grid maps ``(N, h, w)`` to the input size ``(N, H, W)``.

    ``bilinear`` (``align_corners=False``, so each grid cell is centred on the pixels it covers) for
    attribution maps; ``nearest`` for categorical maps such as concept ids (pass a float tensor).
    """
    if maps.dim() != 3:
        raise ValueError(f"maps must have shape (N, h, w), got {tuple(maps.shape)}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(maps.shape[1:]) == size:
        return maps
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return nnf.interpolate(maps[:, None].float() if not maps.is_floating_point() else maps[:, None],
                           size=size, mode=mode, **kwargs)[:, 0]
