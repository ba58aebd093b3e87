"""Faithfulness on the map's own grid: bounded curves, the symmetric MoRF - LeRF score and ROAD
(docs/METHOD.md, section 4, "Faithfulness that measures the map").

Removing pixels in the order of a map measures the map *and* the model's response to the removal
itself: a k-means score (a negative squared distance, unbounded below) can collapse for any
out-of-distribution input, so scattered pixels removed in a random order can look "faithful". Three
remedies, each free of the model's output units (``f -> alpha f + beta``, ``alpha > 0``) and of a
per-image positive affine change of the map:

- :func:`bounded_curves`: a perturbation curve rescaled between its end points,
  ``(c_k - c_L) / (c_0 - c_L)``, **clipped to [0, 1]** (to its end points); a curve whose span
  ``c_0 - c_L`` is below ``tolerance`` times its own range ``max_k c_k - min_k c_k`` is refused
  (NaN, :data:`REFUSED_SPAN`): its rescaled values would lie outside ``[1 - 1/tolerance,
  1/tolerance]``, the span is then noise against the excursions. (The range, not ``|f(x_0)|``, is
  the reference: ``|f(x_0)|`` moves with ``beta`` and would make the refusal depend on the output
  units.)
- :func:`symmetric_score`: cells of the map's grid removed most-relevant-first (MoRF, ``m_k``) and
  least-relevant-first (LeRF, ``l_k``) at the same counts ``k``; the score is
  ``S = mean_k (l_k - m_k) / R``, ``R = max - min`` over both curves and ``f(x_0)``. Bounds
  ``-1 <= S <= 1`` (each ``|l_k - m_k| <= R``); 1 when the MoRF curve falls to its minimum at once
  while the LeRF curve stays at its maximum, 0 in expectation for a map whose order is random
  (MoRF and LeRF then have the same distribution), whatever the model does with the perturbed
  inputs: the model's own response to removal cancels. Higher is better.
- ROAD (Rong et al. 2022, "remove and debias"): the same symmetric score at a few percentages of
  cells, the removed cells filled by noisy linear imputation (Quantus's
  ``noisy_linear_imputation``, applied to the pixel indices of the cells with all channels at
  once, its system factorised once per removed set) instead of a constant, so that the removed
  region does not leak its shape.

Cells (:func:`cell_labels`): the grid ``(gh, gw)`` the map lives on, split as
``torch.nn.functional.adaptive_avg_pool2d`` splits it (cell ``(i, j)`` spans rows
``floor(i H / gh) .. ceil((i+1) H / gh)``, assigned to the first cell that covers them); the cell's
relevance is the map's mean over it (:func:`cell_relevance`), so only the order of the cells
matters. Ties are broken by cell index (stable sort).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

#: How every reason for a refused sample starts (:func:`refused_count`).
REFUSED = "refused: "
#: Why a bounded curve is NaN (:func:`bounded_curves`).
REFUSED_SPAN = REFUSED + "the span f(x_0) - f(x_L) is below the tolerance times the curve's range"
#: Why a symmetric score is NaN (:func:`symmetric_score`).
FLAT_RESPONSE = REFUSED + "the class score does not move under the perturbations"
#: Relative size below which a curve's range counts as rounding noise (symmetric scores).
NUMERIC_TOLERANCE = 1e-6


def bounded_curves(curves: np.ndarray, *, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample ``clip((c_k - c_L) / (c_0 - c_L), 0, 1)`` of ``curves`` (n, L+1) and the refused rows.

    A row is refused (NaN, ``refused[i]`` True) when ``c_0 - c_L < tolerance * (max_k c_k - min_k c_k)``
    (a span of 0 or below included). Bounds: every value in ``[0, 1]``. Invariant to
    ``c -> alpha c + beta`` (``alpha > 0``), values and refusals alike.
    """
    if not 0 < tolerance <= 1:
        raise ValueError(f"span tolerance must lie in (0, 1], got {tolerance}")
    curves = np.asarray(curves, dtype=np.float64)
    start, end = curves[:, :1], curves[:, -1:]
    span = start - end
    spread = curves.max(axis=1, keepdims=True) - curves.min(axis=1, keepdims=True)
    refused = ~(span > 0) | (span < tolerance * spread)
    refused = refused[:, 0] | ~np.isfinite(curves).all(axis=1)
    safe = np.where(refused[:, None], 1.0, span)
    out = np.clip((curves - end) / safe, 0.0, 1.0)
    out[refused] = np.nan
    return out, refused


def refused_count(reasons: Sequence[str | None]) -> int:
    """How many samples were refused (their reason starts with :data:`REFUSED`)."""
    return sum(1 for r in reasons if r is not None and r.startswith(REFUSED))


def cell_labels(height: int, width: int, grid: tuple[int, int]) -> np.ndarray:
    """(H, W) int64: the index ``i * gw + j`` of the grid cell each pixel belongs to (module docstring)."""
    gh, gw = (int(v) for v in grid)
    if not (1 <= gh <= height and 1 <= gw <= width):
        raise ValueError(f"grid {grid} must lie between 1 x 1 and the image size {height} x {width}")
    rows = np.array([min(r * gh // height, gh - 1) for r in range(height)])
    cols = np.array([min(c * gw // width, gw - 1) for c in range(width)])
    return (rows[:, None] * gw + cols[None, :]).astype(np.int64)


def cell_relevance(a: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n, G): the mean of each map of ``a`` (n, H, W) over each cell of ``labels`` (H, W)."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    flat = labels.reshape(-1)
    n_cells = int(flat.max()) + 1
    sums = np.zeros((len(a), n_cells))
    np.add.at(sums.T, flat, a.T)
    return sums / np.bincount(flat, minlength=n_cells)[None, :]


def removal_counts(n_cells: int, n_steps: int) -> np.ndarray:
    """Cells removed at the inner points of a curve of ``L = min(n_steps, G)`` steps:
    ``round(j G / L)`` for ``j = 1 .. L-1``, distinct. The end points (nothing and everything
    removed) are left out: there ``l_k = m_k``, so they add nothing but model calls."""
    steps = max(1, min(int(n_steps), int(n_cells)))
    counts = np.round(np.arange(1, steps) * n_cells / steps).astype(np.int64)
    return np.unique(counts[(counts > 0) & (counts < n_cells)])


def percentage_counts(n_cells: int, percentages: Sequence[float]) -> np.ndarray:
    """Cells removed at ROAD's ``percentages`` (of the cells): ``round(p G / 100)``, distinct, strictly
    between 0 and ``G`` (empty for a one-cell grid)."""
    counts = np.round(np.asarray(percentages, dtype=np.float64) * n_cells / 100).astype(np.int64)
    return np.unique(np.clip(counts, 1, n_cells - 1)) if n_cells > 1 else np.zeros(0, np.int64)


def symmetric_score(original: np.ndarray, morf: np.ndarray, lerf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``S = mean_k (l_k - m_k) / R`` per sample (module docstring) and the refused rows.

    ``original`` (n,) is ``f(x_0)``; ``morf`` and ``lerf`` (n, K) the class scores at the same
    removal counts. ``R`` is the range of ``f(x_0)``, ``m`` and ``l`` together; a sample whose
    ``R`` is at most :data:`NUMERIC_TOLERANCE` times its largest ``|score|`` (rounding noise) is
    refused (NaN). Bounds ``[-1, 1]``; invariant to ``f -> alpha f + beta`` (``alpha > 0``).
    """
    original = np.asarray(original, dtype=np.float64)[:, None]
    morf, lerf = np.asarray(morf, dtype=np.float64), np.asarray(lerf, dtype=np.float64)
    if morf.shape[1] == 0:  # a one-cell grid: no order to test
        return np.full(len(original), np.nan), np.ones(len(original), dtype=bool)
    every = np.concatenate([original, morf, lerf], axis=1)
    spread = every.max(axis=1) - every.min(axis=1)
    refused = ~(spread > NUMERIC_TOLERANCE * np.abs(every).max(axis=1)) | ~np.isfinite(every).all(axis=1)
    score = (lerf - morf).mean(axis=1) / np.where(refused, 1.0, spread)
    return np.where(refused, np.nan, np.clip(score, -1.0, 1.0)), refused


def _cell_masks(order: np.ndarray, counts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K, H, W) bool: the first ``counts[k]`` cells of ``order`` removed."""
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    pixel_rank = rank[labels]
    return np.stack([pixel_rank < c for c in counts])


#: Quantus 0.6's ``noisy_linear_imputation`` stencil: (row, column) offset and weight of each neighbour.
_STENCIL = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
            ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))
#: Factorised imputation systems kept (:func:`_imputation_system`); a 96 px system takes about 1 MB.
IMPUTATION_CACHE = 64
_SYSTEMS: "OrderedDict[tuple, tuple]" = OrderedDict()


def _imputation_system(removed: np.ndarray):
    """``(indices, lu, known)`` for the removed pixels of ``removed`` (H, W): the pixel indices, the
    LU factors of Quantus's system ``A`` (each removed pixel minus the weighted mean of its in-frame
    neighbours) and ``known`` (n_removed, H*W), the weights of the neighbours that stay, so that
    ``b = -known @ x``. ``A`` depends on the removed set only, not on the image: every image and map
    that removes the same cells shares one factorisation (on a 3 x 3 grid there are at most 126 sets at
    50 %), which is most of ROAD's cost. Kept in a small LRU cache (``IMPUTATION_CACHE``)."""
    # ROAD alone solves systems; the metric registry, read by the resolve stage, imports this module
    from scipy.sparse import csc_matrix, csr_matrix
    from scipy.sparse.linalg import splu

    height, width = removed.shape
    key = (height, width, np.packbits(removed).tobytes())
    if key in _SYSTEMS:
        _SYSTEMS.move_to_end(key)
        return _SYSTEMS[key]
    flat = removed.reshape(-1)
    indices = np.flatnonzero(flat)
    variable = np.full(flat.size, -1, dtype=np.int64)
    variable[indices] = np.arange(len(indices))
    rows, cols = np.divmod(indices, width)
    diagonal = np.ones(len(indices))
    a_rows, a_cols, a_vals, k_rows, k_cols, k_vals = [], [], [], [], [], []
    for (dr, dc), weight in _STENCIL:
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (c >= 0) & (r < height) & (c < width)
        diagonal[~inside] -= weight  # Quantus: "reduce weight for invalid coordinates"
        own = np.flatnonzero(inside)
        neighbour = r[own] * width + c[own]
        unknown = flat[neighbour]
        a_rows.append(own[unknown]), a_cols.append(variable[neighbour[unknown]])
        a_vals.append(np.full(int(unknown.sum()), weight))
        k_rows.append(own[~unknown]), k_cols.append(neighbour[~unknown])
        k_vals.append(np.full(int((~unknown).sum()), weight))
    n = len(indices)
    a = csc_matrix((np.concatenate(a_vals + [-diagonal]),
                    (np.concatenate(a_rows + [np.arange(n)]), np.concatenate(a_cols + [np.arange(n)]))), shape=(n, n))
    known = csr_matrix((np.concatenate(k_vals), (np.concatenate(k_rows), np.concatenate(k_cols))),
                       shape=(n, flat.size))
    _SYSTEMS[key] = (indices, splu(a), known)
    if len(_SYSTEMS) > IMPUTATION_CACHE:
        _SYSTEMS.popitem(last=False)
    return _SYSTEMS[key]


def _impute(x: np.ndarray, removed: np.ndarray, noise: float) -> np.ndarray:
    """``x`` (C, H, W) with the pixels of ``removed`` (H, W) filled by noisy linear imputation: Quantus
    0.6's ``noisy_linear_imputation`` (its stencil, its frame handling, its noise ``noise *
    np.random.randn`` drawn from the global ``np.random``, seeded by the runner), every channel from
    the same pixel indices (Quantus's ROAD indexes C*H*W values and fails on three channels), with the
    system factorised once per removed set (:func:`_imputation_system`) instead of solved anew per
    image. Tested equal to Quantus's function."""
    removed = np.asarray(removed, dtype=bool)
    if not removed.any():
        return x.copy()
    indices, lu, known = _imputation_system(removed)
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    solved = lu.solve(np.ascontiguousarray(-(known @ flat.T))).T
    out = flat.copy()
    out[:, indices] = solved + noise * np.random.randn(*solved.shape)
    return out.reshape(x.shape).astype(np.float32)


@dataclass
class GridPerturbation:
    """A Quantus-like metric: MoRF and LeRF class-score curves over the cells of ``grid``.

    Called as Quantus calls a metric (``model, x_batch, y_batch, a_batch, softmax, device,
    batch_size``; other keyword arguments ignored); returns a dict with ``morf`` and ``lerf``
    (n, K) at the removal ``counts`` of the grid's G cells. ``imputation``: ``"baseline"`` replaces
    a removed cell by the image's ``perturb_baseline`` (``fully_perturbed``: PixelFlipping's end
    point), ``"noisy_linear"`` imputes it (ROAD). ``class_scores(model, x, y, softmax=, device=,
    batch_size=)`` and ``fully_perturbed(x, perturb_baseline)`` are the runner's
    (:mod:`kmx_eval.metrics.quantus.runner`), given by the metric's builder: this module stays free
    of the Quantus package, which imports it.
    """

    grid: tuple[int, int]
    class_scores: Callable[..., np.ndarray]
    fully_perturbed: Callable[[np.ndarray, str], np.ndarray]
    n_steps: int = 5
    percentages: tuple[float, ...] | None = None  # ROAD: removal at these percentages of the cells
    imputation: str = "baseline"
    perturb_baseline: str = "black"
    noise: float = 0.01

    def counts(self, height: int, width: int) -> np.ndarray:
        n_cells = int(self.grid[0]) * int(self.grid[1])
        if self.percentages is not None:
            return percentage_counts(n_cells, self.percentages)
        return removal_counts(n_cells, self.n_steps)

    def model_calls(self, height: int, width: int) -> int:
        """Forward passes per image: ``f(x_0)`` and both curves."""
        return 1 + 2 * len(self.counts(height, width))

    def __call__(self, *, model: "torch.nn.Module", x_batch: np.ndarray, y_batch: np.ndarray,
                 a_batch: np.ndarray, softmax: bool = False, device: str = "cpu", batch_size: int = 64,
                 **ignored: Any) -> dict[str, np.ndarray]:
        x = np.asarray(x_batch, dtype=np.float32)
        n, _, height, width = x.shape
        labels = cell_labels(height, width, self.grid)
        relevance = cell_relevance(np.asarray(a_batch).reshape(n, height, width), labels)
        counts = self.counts(height, width)
        if not counts.size:  # a one-cell grid: no order to test (symmetric_score refuses it)
            return {"morf": np.zeros((n, 0)), "lerf": np.zeros((n, 0))}
        base = self.fully_perturbed(x, self.perturb_baseline) if self.imputation == "baseline" else None
        curves = {}
        for name, sign in (("morf", -1.0), ("lerf", 1.0)):
            perturbed = np.empty((n, len(counts), *x.shape[1:]), dtype=np.float32)
            for i in range(n):
                order = np.argsort(sign * relevance[i], kind="stable")
                for k, removed in enumerate(_cell_masks(order, counts, labels)):
                    perturbed[i, k] = (np.where(removed[None], base[i], x[i]) if base is not None
                                       else _impute(x[i], removed, self.noise))
            scores = self.class_scores(model, perturbed.reshape(-1, *x.shape[1:]), np.repeat(y_batch, len(counts)),
                                  softmax=softmax, device=device, batch_size=batch_size)
            curves[name] = scores.reshape(n, len(counts))
        return curves


#: The faithfulness control's informed map (:class:`kmx_eval.explain.baselines.OcclusionExplainer`).
OCCLUSION = "occlusion"
#: Maps that live on the pixels, not on a feature grid: their cells are the fixed ``pixel_grid`` patch
#: grid. Every other map (k-means maps: F_S's grid; CAM, Grad-CAM, occlusion, the oracle: the
#: explained model's grid; ``random``: i.i.d. pixels, whose cell order is uniform on any grid, so it
#: is scored on the model's grid, where the maps it is the floor of live) uses the model's grid.
PIXEL_GRID_MAPS = frozenset({"integrated_gradients", "saliency", "oracle_pixel", "ceiling_pixel"})


def map_grid(method: str, model_grid: tuple[int, int], *, height: int, pixel_cells: int) -> tuple[int, int]:
    """The grid whose cells SymmetricMoRFLeRF and ROAD perturb for the map named ``method``:
    the ``pixel_cells`` x ``pixel_cells`` patch grid for :data:`PIXEL_GRID_MAPS`, else ``model_grid``
    (:func:`kmx_eval.explain.controls.explained_grid` of the explained model)."""
    if method in PIXEL_GRID_MAPS:
        return pixel_grid(height, pixel_cells)
    return tuple(int(v) for v in model_grid)


def pixel_grid(height: int, cells: int) -> tuple[int, int]:
    """The fixed patch grid of pixel-level maps (Integrated Gradients, saliency): ``cells`` x ``cells``,
    at most one cell per pixel."""
    side = max(1, min(int(cells), int(height)))
    return side, side

