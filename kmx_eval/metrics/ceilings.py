"""The ceiling of each localisation metric on a map's own grid (docs/METHOD.md, section 6).

A map on an ``h x w`` grid reaches the metric as ``scale(up(g))``: ``g`` (h, w) upsampled
bilinearly to the image (:func:`kmx_eval.explain.attribution.upsample`, as every grid map is) and
rescaled per the metric's spec (:mod:`kmx_eval.metrics.quantus.scaling`). Its ceiling is
``max_g metric(scale(up(g)), S)`` per image. The mask averaged onto the grid (the old ``oracle``) is
not that maximum: all the mass on the cell with the largest mask share beats it on the mass metrics
(issue 22). Mask-only: no model call.

On the pixel grid (``grid == (H, W)``, Integrated Gradients) the ceiling is the metric of the mask
itself, which reaches each metric's bound (1, or ``|S| / k`` for TopKIntersection with ``|S| < k``).
On a coarser grid it is the best of a search (:func:`grid_ceilings`): every one-hot cell, the top-j
cells by mask share for every j, the averaged mask, seeded uniform maps (and for PointingGame every
map with one cell off); from the best of these, gradient ascent for RelevanceMassAccuracy, then a
hill climb (single-cell steps and random perturbations at shrinking scales) and, except for AUC, a
polish (random perturbations at 1e-1 .. 1e-4 of the map's span) until no step improves. Scores are Quantus 0.6's formulas on the same arrays (:func:`localisation_scores`, tested
equal to Quantus), so ties are broken as Quantus breaks them. The search is a lower bound of the
true maximum; the tests show that no random, one-hot, top-j, averaged-mask or perturbed map of the
grid exceeds it.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf

from kmx_eval.explain.attribution import upsample
from kmx_eval.explain.controls import explained_grid
from kmx_eval.metrics.quantus.scaling import SCALINGS, mask_problems
from kmx_eval.metrics.quantus.settings import top_k
from kmx_eval.metrics.quantus.spec import QUANTUS_METRICS
from kmx_eval.metrics.room import CEILING, CEILING_PIXEL, PIXEL_MAPS, RANDOM_PIXEL
from kmx_eval.seeding import rng

#: The localisation metrics with a ceiling here (their Quantus 0.6 formulas: :func:`localisation_scores`).
CEILING_METRICS = ("PointingGame", "AttributionLocalisation", "RelevanceMassAccuracy", "RelevanceRankAccuracy",
                   "TopKIntersection", "AUC")
#: Hill climb (:func:`_climb`): first single-cell step (times the map's span), smallest, random tries per round.
CELL_STEP, MIN_SCALE = 0.5, 1e-4
NOISE_TRIES = 16
MAX_ROUNDS = 16
POLISH_SCALES = (1e-1, 1e-2, 1e-3, 1e-4)
POLISH_TRIES, POLISH_ROUNDS = 32, 40
#: Gradient ascent of the mass metrics (:func:`_ascend_mass`): steps and Adam's initial rate.
ASCENT_STEPS, ASCENT_RATE = 150, 0.05
#: Seeded uniform maps among the starts (:func:`_starts`).
RANDOM_STARTS = 32
#: On grids with more cells than this, single-cell steps only touch cells near the mask's edge.
ALL_CELLS_UP_TO = 36


def _auc(a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``a`` (B, N) as a classifier of ``s`` (N,): the Mann-Whitney statistic
    with tied scores counted half, which is what sklearn's ``roc_curve`` + ``auc`` (Quantus) integrate.
    One sort for the batch: row r is shifted by ``2 r`` (values are in [0, 1]), exact in float64."""
    rows = np.arange(len(a), dtype=np.float64)[:, None] * 2.0
    shifted = np.asarray(a, dtype=np.float64) + rows
    negatives = np.sort(shifted[:, ~s], axis=None)
    positives = shifted[:, s].ravel()
    below = np.searchsorted(negatives, positives, side="left")
    tied = np.searchsorted(negatives, positives, side="right") - below
    n0, n1 = int((~s).sum()), int(s.sum())
    row_start = (np.arange(len(a)) * n0).repeat(n1)
    wins = (below - row_start + 0.5 * tied).reshape(len(a), n1).sum(axis=1)
    return wins / (n1 * n0)


#: Bins of the AUC the search climbs on (:func:`_binned_auc`); scaled maps lie in [0, 1].
AUC_BINS = 4096


def _binned_auc(a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUC with the values of each row binned into ``AUC_BINS`` bins over [0, 1] (pairs in one bin
    count half): within about one bin's share of pairs of :func:`_auc`, in O(N) per row instead of a
    sort. The search climbs on it; the ceiling is scored exactly."""
    b = len(a)
    bins = (np.minimum((a * AUC_BINS).astype(np.int64), AUC_BINS - 1) + np.arange(b)[:, None] * AUC_BINS).ravel()
    counts = np.bincount(bins, minlength=b * AUC_BINS).reshape(b, AUC_BINS)
    inside = np.bincount(bins, weights=np.broadcast_to(s, (b, s.size)).ravel(),
                         minlength=b * AUC_BINS).reshape(b, AUC_BINS)
    outside = counts - inside
    below = np.cumsum(outside, axis=1) - outside  # negatives in lower bins
    return (inside * (below + 0.5 * outside)).sum(axis=1) / (s.sum() * (~s).sum())


def localisation_scores(metric: str, a: np.ndarray, s: np.ndarray, *, k: int | None = None) -> np.ndarray:
    """Quantus 0.6's per-sample score of ``metric`` for maps ``a`` (B, N), already rescaled, against
    one mask ``s`` (N,) bool (not empty, not the whole image); ``k`` for TopKIntersection."""
    if metric == "PointingGame":
        return np.any(s & (a == a.max(axis=1, keepdims=True)), axis=1).astype(np.float64)
    if metric in ("RelevanceMassAccuracy", "AttributionLocalisation"):
        inside, total = (a * s).sum(axis=1), a.sum(axis=1)
        if metric == "RelevanceMassAccuracy":
            return (inside / total).astype(np.float64)
        ratio = (inside / (total + 1e-9)).astype(np.float64)
        return np.where(ratio > 1, np.nan, ratio)
    if metric in ("RelevanceRankAccuracy", "TopKIntersection"):
        return _top_share(a, s, _top(metric, s, k))
    if metric == "AUC":
        return _auc(a, s)
    raise ValueError(f"no ceiling for {metric!r}; metrics with one: {', '.join(CEILING_METRICS)}")


def _top_share(a: np.ndarray, s: np.ndarray, top: int) -> np.ndarray:
    """Share of the mask among the ``top`` first pixels of ``np.argsort(-a)`` (Quantus's order), per row.

    A partition finds the ``top``-th value ``t``; every pixel above ``t`` is among them, and ``top``
    minus their number of those tied at ``t``. Only where the ties at ``t`` mix mask and background
    does their order matter: those rows alone are sorted as Quantus sorts them."""
    t = -np.partition(-a, top - 1, axis=1)[:, top - 1:top]
    above, tied = a > t, a == t
    inside = (above & s).sum(axis=1) + np.where((tied & ~s).any(axis=1), 0, top - above.sum(axis=1))
    mixed = np.flatnonzero((tied & s).any(axis=1) & (tied & ~s).any(axis=1))
    if mixed.size:
        inside[mixed] = s[np.argsort(-a[mixed], axis=-1)[:, :top]].sum(axis=1)
    return inside / top


def _top(metric: str, s: np.ndarray, k: int | None) -> int:
    """How many top-ranked pixels the rank metric counts: ``|S|`` or ``k``."""
    return int(s.sum()) if metric == "RelevanceRankAccuracy" else int(k)


def _upsampled(g: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``up(g)`` for grid maps ``g`` (B, h, w): (B, H, W) float32, as the stored grid maps are."""
    return upsample(torch.as_tensor(np.ascontiguousarray(g, dtype=np.float32)), size).numpy()


def _starts(share: np.ndarray, pointing: bool) -> np.ndarray:
    """Start maps on the grid (B, h, w): each one-hot cell, the top-j cells by mask share for every j,
    the mask share itself (the averaged mask), ``RANDOM_STARTS`` seeded uniform maps and, for
    PointingGame (``pointing``), each map with one cell off (its maximum is a plateau)."""
    h, w = share.shape
    n = h * w
    eye = np.eye(n, dtype=np.float32)
    order = np.argsort(-share.ravel(), kind="stable")
    top_j = np.cumsum(eye[order], axis=0)[:-1]  # j = 1 .. n-1 (all n cells: a constant map)
    noise = rng(n, "ceiling starts").uniform(0, 1, (RANDOM_STARTS, n)).astype(np.float32)
    maps = [eye, top_j, share.reshape(1, -1).astype(np.float32), noise] + ([1 - eye] if pointing else [])
    return np.concatenate(maps).reshape(-1, h, w)


def _edge_cells(share: np.ndarray) -> np.ndarray:
    """Cells whose share is strictly between 0 and 1, with their 8 neighbours: where a step can move
    the mask's edge."""
    edge = torch.as_tensor(((share > 0) & (share < 1)).astype(np.float32))[None, None]
    near = nnf.max_pool2d(edge, 3, stride=1, padding=1)[0, 0].numpy() > 0
    return np.flatnonzero(near.ravel()) if near.any() else np.arange(share.size)


@dataclass
class Ceiling:
    """Per-image ceilings of one metric on one grid: ``values`` (n,) and the grid maps reaching them
    (``maps`` (n, h, w)); NaN where the mask is empty or covers the image."""

    values: np.ndarray
    maps: np.ndarray


def _climb(score, g: np.ndarray, best: float, cells: np.ndarray, stream, *,
           polish: bool = True) -> tuple[np.ndarray, float]:
    """Hill climb from ``g``: each round tries every single-cell step of ``+-scale`` times the map's span
    and random perturbations of that size and a tenth of it, keeps the best if it improves, and otherwise
    divides ``scale`` by 4; it stops below ``MIN_SCALE``, at the bound 1, or after ``MAX_ROUNDS``. Then
    :func:`_polish` (unless ``polish`` is False: AUC, whose supremum is approached only as cells go to
    -inf, so polishing gains ever smaller amounts at a sort per try)."""
    h, w = g.shape
    scale = CELL_STEP
    for _ in range(MAX_ROUNDS):
        if best >= 1.0 or scale < MIN_SCALE:
            break
        span = float(np.ptp(g)) or 1.0
        steps = np.repeat(g.reshape(1, 1, -1), 2, axis=0).repeat(len(cells), axis=1)
        steps[:, np.arange(len(cells)), cells] += np.array([[scale], [-scale]], np.float32) * span
        noise = [g + f * scale * span * stream.standard_normal((NOISE_TRIES, h, w)).astype(np.float32)
                 for f in (1.0, 0.1)]
        tries = np.concatenate([steps.reshape(-1, h, w), *noise])
        values = score(tries)
        i = int(np.nanargmax(values)) if np.isfinite(values).any() else 0
        if values[i] > best + 1e-12:
            g, best = tries[i], float(values[i])
        else:
            scale /= 4
    return (g, best) if not polish else _polish(score, g, best, stream)


def _polish(score, g: np.ndarray, best: float, stream) -> tuple[np.ndarray, float]:
    """Random perturbations of ``g`` at every scale of ``POLISH_SCALES`` (times its span), ``POLISH_TRIES``
    each per round, the best kept while it improves (at most ``POLISH_ROUNDS`` rounds): what a small
    change of the best map can still gain, the property the tests check."""
    h, w = g.shape
    for _ in range(POLISH_ROUNDS):
        if best >= 1.0:
            break
        span = float(np.ptp(g)) or 1.0
        tries = np.concatenate([g + f * span * stream.standard_normal((POLISH_TRIES, h, w)).astype(np.float32)
                                for f in POLISH_SCALES])
        values = score(tries)
        i = int(np.nanargmax(values)) if np.isfinite(values).any() else 0
        if not values[i] > best + 1e-12:
            break
        g, best = tries[i], float(values[i])
    return g, best


def _ascend_mass(g: np.ndarray, s: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Gradient ascent (Adam, ``ASCENT_STEPS``, decaying rate) of RelevanceMassAccuracy
    ``sum_S max(v - mean v, 0) / sum max(v - mean v, 0)``, ``v = up(g)``, from ``g`` (h, w): the best map
    met on the way. The mass metrics are continuous in ``g``, so this reaches a local maximum that
    single-cell steps approach slowly on fine grids."""
    x = torch.tensor(g / (float(np.ptp(g)) or 1.0), dtype=torch.float32)[None].requires_grad_(True)
    inside = torch.as_tensor(s, dtype=torch.float32)
    opt = torch.optim.Adam([x], lr=ASCENT_RATE)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - t / ASCENT_STEPS)
    best, best_g = -np.inf, g
    for _ in range(ASCENT_STEPS):
        v = nnf.interpolate(x[:, None], size=size, mode="bilinear", align_corners=False).reshape(-1)
        a = torch.relu(v - v.mean())
        r = (a * inside).sum() / a.sum().clamp_min(1e-12)
        if float(r.detach()) > best:
            best, best_g = float(r.detach()), x.detach()[0].numpy().copy()
        opt.zero_grad()
        (-r).backward()
        opt.step()
        sched.step()
    return best_g


def _image_ceilings(s: np.ndarray, share: np.ndarray, size: tuple[int, int], metrics, *, k, seed: int,
                    image: int) -> dict[str, tuple[float, np.ndarray]]:
    """``{metric: (ceiling, grid map)}`` for one mask ``s`` (H*W,) bool and its grid shares (h, w)."""
    starts = _starts(share, pointing="PointingGame" in metrics)
    up = _upsampled(starts, size)
    scaled = {sc: SCALINGS[sc](up).reshape(len(up), -1) for sc in {QUANTUS_METRICS.get(m).scaling for m in metrics}}
    cells = np.arange(share.size) if share.size <= ALL_CELLS_UP_TO else _edge_cells(share)
    out = {}
    # AttributionLocalisation is RelevanceMassAccuracy over (total + 1e-9) (weighted=False): the same maps win.
    for metric in sorted(metrics, key=lambda m: m == "AttributionLocalisation"):
        scaling = QUANTUS_METRICS.get(metric).scaling
        if metric == "AttributionLocalisation" and "RelevanceMassAccuracy" in out:
            candidates = [out["RelevanceMassAccuracy"][1]]
        else:
            def score(g, scaling=scaling, metric=metric):
                a = SCALINGS[scaling](_upsampled(g, size)).reshape(len(g), -1)
                return _binned_auc(a, s) if metric == "AUC" else localisation_scores(metric, a, s, k=k)

            values = localisation_scores(metric, scaled[scaling], s, k=k)
            j = int(np.nanargmax(values))
            g = starts[j]
            if metric == "RelevanceMassAccuracy":
                g = _ascend_mass(g, s, size)
            climbed, _ = _climb(score, g, float(score(g[None])[0]), cells, rng(seed, "ceiling", metric, image),
                                polish=metric != "AUC")
            candidates = [starts[j], g, climbed]
        exact = localisation_scores(metric, SCALINGS[scaling](_upsampled(np.stack(candidates), size)).reshape(
            len(candidates), -1), s, k=k)
        best = int(np.nanargmax(exact))
        out[metric] = (float(exact[best]), candidates[best])
    return out


def grid_ceilings(masks: np.ndarray, grid: tuple[int, int], metrics=CEILING_METRICS, *, k: int | None = None,
                  seed: int = 0) -> dict[str, Ceiling]:
    """The ceiling of each metric of ``metrics`` per image (module docstring): masks (n, H, W) 0/1,
    ``grid`` (h, w) the explained grid, ``k`` TopKIntersection's k. Seeded (``seed``): the same masks,
    grid and seed give the same values."""
    s_all = np.asarray(masks) > 0
    n, size = len(s_all), tuple(s_all.shape[-2:])
    grid = tuple(int(v) for v in grid)
    if grid == size:
        return pixel_ceilings(s_all, metrics, k=k)
    shares = nnf.adaptive_avg_pool2d(torch.as_tensor(s_all, dtype=torch.float32)[:, None], grid)[:, 0].numpy()
    out = {m: Ceiling(np.full(n, np.nan), np.zeros((n, *grid), np.float32)) for m in metrics}
    todo = [i for i in range(n) if s_all[i].any() and not s_all[i].all()]

    def search(i: int):
        return _image_ceilings(s_all[i].ravel(), shares[i], size, metrics, k=k, seed=seed, image=i)

    # Images are independent searches, each with its own seeded stream, so they run side by side on
    # the stage's threads (numpy's sorts and torch's kernels release the GIL): the same values in the
    # same order, in about half the time on two cores.
    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
        for i, found in zip(todo, pool.map(search, todo)):
            for metric, (value, g) in found.items():
                out[metric].values[i], out[metric].maps[i] = value, g
    return out


def pixel_ceilings(masks: np.ndarray, metrics=CEILING_METRICS, *, k: int | None = None) -> dict[str, Ceiling]:
    """Ceilings on the pixel grid: the metric of the mask itself, each metric's bound."""
    s_all = np.asarray(masks) > 0
    out = {}
    for metric in metrics:
        scaling = QUANTUS_METRICS.get(metric).scaling
        values = np.full(len(s_all), np.nan)
        for i, s in enumerate(s_all):
            if s.any() and not s.all():
                a = SCALINGS[scaling](s[None].astype(np.float32)).reshape(1, -1)
                values[i] = localisation_scores(metric, a, s.ravel(), k=k)[0]
        out[metric] = Ceiling(values, s_all.astype(np.float32))
    return out


#: Ceilings already searched in this process, by (masks, grid, k, metrics): every seed of a stage
#: explains the same images, and the ceiling depends on the masks and the grid only.
_SEARCHED: dict[tuple, dict[str, Ceiling]] = {}


def cached_ceilings(masks: np.ndarray, grid: tuple[int, int], metrics, *, k: int) -> dict[str, Ceiling]:
    """:func:`grid_ceilings` (search seed 0), computed once per masks, grid, k and metrics."""
    s = np.ascontiguousarray(np.asarray(masks) > 0)
    key = (hashlib.sha256(s.tobytes()).hexdigest(), s.shape, tuple(int(v) for v in grid), int(k), tuple(metrics))
    if key not in _SEARCHED:
        _SEARCHED[key] = grid_ceilings(s, grid, metrics, k=k, seed=0)
    return _SEARCHED[key]


def ceiling_grids(model, x: np.ndarray, methods, *, device: str = "cpu") -> dict[str, tuple[int, int]]:
    """The ceilings one explained model gets: ``ceiling`` on its explained grid
    (:func:`~kmx_eval.explain.controls.explained_grid`) and, where a pixel-level map is among
    ``methods`` (Integrated Gradients, saliency), ``ceiling_pixel`` on the pixels."""
    grid = explained_grid(model, torch.from_numpy(np.ascontiguousarray(x[:1], dtype=np.float32)).to(device))
    grids = {CEILING: grid}
    if any(m in PIXEL_MAPS and m not in (RANDOM_PIXEL, "oracle_pixel") for m in methods):
        grids[CEILING_PIXEL] = tuple(int(v) for v in x.shape[-2:])
    return grids


def add_ceilings(tables, seed: int, *, model, x: np.ndarray, masks: np.ndarray | None, methods, metrics, settings,
                 sample_ids: np.ndarray, device: str = "cpu") -> None:
    """Rows of each localisation metric of ``metrics`` for each ceiling of :func:`ceiling_grids`
    (``ceiling``, ``ceiling_pixel``) into ``tables`` (:class:`~kmx_eval.metrics.evaluation.EvaluationTables`),
    with per-image values in ``samples``, like a method; nothing without masks. ``settings``:
    :class:`~kmx_eval.metrics.quantus.QuantusSettings` (TopKIntersection's k)."""
    names = [m for m in metrics if m in CEILING_METRICS]
    if masks is None or not names:
        return
    height, width = np.asarray(masks).shape[-2:]
    k = top_k(height, width, settings.top_k_fraction)
    reasons = mask_problems(np.asarray(masks))
    for method, grid in ceiling_grids(model, x, methods, device=device).items():
        t0 = time.perf_counter()
        found = cached_ceilings(masks, grid, names, k=k)
        where = "the pixels" if tuple(grid) == (height, width) else f"the {grid[0]} x {grid[1]} grid"
        for name in names:
            spec = QUANTUS_METRICS.get(name)
            tables._summary(seed, found[name].values, reasons, kind="explainer", method=method,
                            category=spec.category.value, metric=name, higher_is_better=True,
                            note=f"ceiling: the metric's maximum over maps on {where} (kmx_eval/metrics/ceilings.py)")
            tables._samples(seed, method, name, found[name].values, reasons, sample_ids)
        tables.seconds[f"ceilings/{method}"] += time.perf_counter() - t0
