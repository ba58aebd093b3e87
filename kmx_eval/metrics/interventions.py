"""Faithfulness on part interventions with exact ground truth (docs/METHOD.md, section 4, "Part interventions").

The synthetic generator renders each evaluated image again with one part removed (what lay behind
it shown) and with only its object kept (background and distractors drawn anew):
:func:`kmx_eval.data.synthetic.intervention_copies`. These are images of the training
distribution, not pixels replaced by a baseline colour, so the model's answer to them needs no
out-of-distribution caveat. With ``f_t`` the model's score of the explained class ``t``:

- drop of part k: ``d_k = f_t(x) - f_t(x without part k)``;
- the map's share on part k: ``m_k = sum_{p in part k} max(a_p - abar, 0) / sum_p max(a_p - abar, 0)``
  (``abar`` the map's mean over the image: the mass above the mean, as the mass metrics score it);
- **part rank correlation**: Spearman's rho between ``d`` and ``m`` over the parts of one image, in
  [-1, 1]: 1 when the map ranks the parts as the decision uses them, about 0 for a map unrelated
  to the parts' effects (the chance column), -1 reversed;
- **part deletion curve**: the normalised drops ``dn_k = (d_k - min d) / (max d - min d)`` in [0, 1],
  read in the order of decreasing ``m``: point r (fraction r / P) is the normalised drop of the part
  the map ranks r-th. A faithful map gives a decreasing curve; its first point, the **top-part
  drop**, is 1 when the map's top part is the one whose removal costs the decision most, and its
  chance level (a random order) is the mean of ``dn`` over the parts;
- **background agreement** (a property of the model, not of a map): 1 when the predicted class of
  the object alone over a new background equals that of the image, 0 when it changes.

Invariances (property tests in tests/metrics/test_interventions.py): every number is unchanged when
the model's outputs become ``alpha f + beta`` (alpha > 0: drops scale by alpha, which the rank
correlation and the normalised drops ignore; beta cancels; the arg-max is kept) and when a map
becomes ``s a + c`` per image (s > 0: the mass above the mean scales by s). An image whose drops are
all equal, or whose map has no mass above its mean, has no order to compare: NaN with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

FLAT_DROPS = "undefined: removing any part changes the decision's score by the same amount"
FLAT_MAP = "undefined: the map has no mass above its mean (a constant map)"
#: Rows of the evaluate stage's tables per explainer (metric: higher is better) where the dataset has
#: no interventions; with them the curve has one row per part, ``part_deletion_1`` .. ``part_deletion_P``.
MAP_METRICS = {"part_rank_correlation": True, "part_deletion_1": True}
#: The model's own row: the share of images whose decision survives a new background.
MODEL_METRICS = {"background_agreement": True}
#: The rows' notes, by metric (``part_deletion_`` for every point of the curve).
NOTES = {
    "part_rank_correlation": ("Spearman rho between the decision's drop when a part is removed and the map's "
                              "mass above its mean on that part, per image; chance 0"),
    "part_deletion_": ("normalised drop (d - min d) / (max d - min d) of the part the map ranks r-th of P; "
                       "chance: the mean over parts (a random order)"),
    "background_agreement": "the object alone over a new background keeps the image's predicted class",
}


def part_mass_shares(maps, parts, n_parts: int) -> np.ndarray:
    """``m_k`` of each image (module docstring): (n, n_parts), NaN rows for a map without mass above
    its mean. ``maps`` (n, H, W) float, ``parts`` (n, H, W) int part ids (0 background)."""
    a = np.asarray(maps, dtype=np.float64)
    p = np.asarray(parts)
    if a.shape != p.shape or a.ndim != 3:
        raise ValueError(f"maps {a.shape} and part maps {p.shape} must both be (n, H, W)")
    above = np.maximum(a - a.mean(axis=(1, 2), keepdims=True), 0.0)
    total = above.sum(axis=(1, 2))
    shares = np.stack([(above * (p == k)).sum(axis=(1, 2)) for k in range(1, n_parts + 1)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total[:, None] > 0, shares / total[:, None], np.nan)


def part_drops(scores, scores_without, targets) -> np.ndarray:
    """``d_k = f_t(x) - f_t(x without part k)``: (n, P) from the model's outputs ``scores`` (n, C)
    on the images and ``scores_without`` (n, P, C) on the copies, at the classes ``targets`` (n,)."""
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(scores_without, dtype=np.float64)
    t = np.asarray(targets, dtype=np.int64)
    rows = np.arange(len(t))
    return s[rows, t][:, None] - w[rows, :, t]


def normalised_drops(drops) -> np.ndarray:
    """``dn_k = (d_k - min d) / (max d - min d)`` per image, (n, P) in [0, 1]; NaN rows where the drops
    are all equal."""
    d = np.asarray(drops, dtype=np.float64)
    low, span = d.min(axis=1, keepdims=True), np.ptp(d, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(span > 0, (d - low) / span, np.nan)


@dataclass
class PartScores:
    """Per-image scores of one map set (module docstring); ``reasons[i]`` says why image i is NaN.

    ``curve`` (n, P): the normalised drop of the part the map ranks r-th (r = 1..P); ``chance`` (n,):
    the top-part drop of a random order (the mean normalised drop).
    """

    rank_correlation: np.ndarray
    top_part_drop: np.ndarray
    curve: np.ndarray
    chance: np.ndarray
    reasons: list[str | None]


def part_scores(maps, parts, drops) -> PartScores:
    """The part rank correlation, deletion curve and top-part drop of ``maps`` (n, H, W) on images
    with part maps ``parts`` and part drops ``drops`` (n, P) (:func:`part_drops`)."""
    d = np.asarray(drops, dtype=np.float64)
    n, n_parts = d.shape
    shares = part_mass_shares(maps, parts, n_parts)
    dn = normalised_drops(d)
    rho = np.full(n, np.nan)
    curve = np.full((n, n_parts), np.nan)
    reasons: list[str | None] = []
    for i in range(n):
        if np.isnan(dn[i]).any():
            reasons.append(FLAT_DROPS)
            continue
        if np.isnan(shares[i]).any():
            reasons.append(FLAT_MAP)
            continue
        reasons.append(None)
        # A map that gives every part the same share does not order them: chance, not undefined.
        rho[i] = spearmanr(shares[i], d[i]).statistic if np.ptp(shares[i]) > 0 else 0.0
        curve[i] = _curve(shares[i], dn[i])
    chance = np.array([row.mean() if np.isfinite(row).all() else np.nan for row in dn])
    return PartScores(rho, curve[:, 0].copy(), curve, chance, reasons)


def _curve(shares: np.ndarray, dn: np.ndarray) -> np.ndarray:
    """``dn`` in the order of decreasing ``shares``; parts the map ties share their mean ``dn`` (the
    expected value of any order among them), so no tie is broken by part id."""
    order = np.argsort(-shares, kind="stable")
    tied = [dn[shares == shares[k]].mean() for k in order]
    return np.asarray(tied, dtype=np.float64)


def background_agreement(scores, scores_object_only) -> np.ndarray:
    """``[argmax f(x_object only) = argmax f(x)]`` per image, (n,) of 0/1."""
    a = np.asarray(scores).argmax(axis=1)
    b = np.asarray(scores_object_only).argmax(axis=1)
    return (a == b).astype(np.float64)


@dataclass
class InterventionOutputs:
    """The model's outputs (class scores, ``n_classes`` columns) on the evaluated images
    (``scores`` (n, C)), on each copy without one part (``without_part`` (n, P, C)) and on the object
    over a new background (``object_only`` (n, C)): n (P + 2) model calls."""

    scores: np.ndarray
    without_part: np.ndarray
    object_only: np.ndarray


def intervention_outputs(model, x, copies, *, device, batch_size: int = 64) -> InterventionOutputs:
    """Run ``model`` (images -> class scores, in eval mode) on the normalised images ``x`` (n, 3, H, W)
    and on their copies (:class:`kmx_eval.data.interventions.Interventions`, uint8)."""
    # torch and the data's normalisation only where a model is scored: the report reads this module's names
    import torch
    from kmx_eval.data import normalise

    n, n_parts = copies.without_part.shape[:2]
    images = normalise(np.concatenate([copies.without_part.reshape((-1,) + copies.without_part.shape[2:]),
                                       copies.object_only]))
    inputs = torch.cat([torch.as_tensor(np.asarray(x, dtype=np.float32)), images])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = torch.cat([model(inputs[i:i + batch_size].to(device)).float().cpu()
                             for i in range(0, len(inputs), batch_size)]).numpy().astype(np.float64)
    finally:
        model.train(was_training)
    return InterventionOutputs(out[:n], out[n:n + n * n_parts].reshape(n, n_parts, -1), out[n + n * n_parts:])
