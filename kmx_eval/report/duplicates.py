"""Maps that are one map: which explainers of a model the ranking counts once (docs/METHOD.md,
section 6, "A ranking of distinct maps and metrics").

Two attribution maps of the same model are *the same map* when, on every evaluated image of every
seed, the Spearman correlation of their pixels is above :data:`SAME_MAP_RHO`::

    same(A, B)  <=>  min_{s, i} rho_Spearman(A_si, B_si) > 0.99

``margin`` and ``margin_centred`` differ by a per-image constant (rho = 1 everywhere); CAM and
Grad-CAM on a GAP network differ only where Grad-CAM's ReLU is active. The relation is closed
transitively (connected components), and each group is represented by its first member in the
maps file's (sorted) order; the others are listed beside it and left out of the ranking, so that a
map counted twice cannot move it. Controls (:data:`kmx_eval.report.stats.CONTROLS`) are never
grouped: they are never ranked, and a control must not stand in for an explainer.

The maps are read from ``maps/`` (the report stage's DVC dependency), so no stage writes anything new.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from kmx_eval import io, paths

#: Above this Spearman correlation on every image two maps are counted as one.
SAME_MAP_RHO = 0.99
#: Columns of :func:`map_duplicates`.
DUPLICATE_COLUMNS = ["dataset", "combination", "method", "same_as", "min_spearman"]


def _standardised_ranks(maps: np.ndarray) -> np.ndarray:
    """Per image, the pixel ranks (ties averaged) centred and scaled to unit norm, (n, H*W);
    a constant map's row is NaN. The Spearman correlation of two maps is the dot product of their
    rows, so each map is ranked once, not once per pair."""
    ranks = rankdata(np.asarray(maps, dtype=np.float64).reshape(len(maps), -1), axis=1)
    ranks -= ranks.mean(axis=1, keepdims=True)
    norm = np.sqrt((ranks ** 2).sum(axis=1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, ranks / np.where(norm > 0, norm, 1.0), np.nan)


def pairwise_min_spearman(maps: Mapping[str, np.ndarray]) -> dict[tuple[str, str], float]:
    """For every pair ``(a, b)`` (``a`` before ``b`` in ``maps``' order) of maps of the same images
    (n, H, W), the smallest per-image Spearman correlation; NaN when some image's map is constant."""
    names = list(maps)
    ranked = {m: _standardised_ranks(maps[m]) for m in names}
    return {(a, b): float(np.min((ranked[a] * ranked[b]).sum(axis=1)))
            for i, a in enumerate(names) for b in names[i + 1:]}


def same_map_groups(min_rho: Mapping[tuple[str, str], float], methods: Sequence[str],
                    threshold: float = SAME_MAP_RHO) -> dict[str, str]:
    """``{method: representative}`` for every method of ``methods`` that is the same map as an
    earlier one (``min_rho > threshold``, closed transitively); the representative is the first of
    its group in ``methods``' order. Methods that represent themselves are not listed."""
    parent = {m: m for m in methods}

    def root(m: str) -> str:
        while parent[m] != m:
            m = parent[m]
        return m

    order = {m: i for i, m in enumerate(methods)}
    for (a, b), rho in min_rho.items():
        if a in parent and b in parent and np.isfinite(rho) and rho > threshold:
            ra, rb = root(a), root(b)
            if ra != rb:  # the earlier root represents the merged group
                first, second = sorted((ra, rb), key=order.__getitem__)
                parent[second] = first
    return {m: root(m) for m in methods if root(m) != m}


def map_duplicates(datasets: Iterable[str], models: Iterable[str], seeds: Sequence[int], *,
                   excluded: Iterable[str] = ()) -> pd.DataFrame:
    """The same-map groups of every dataset and model (``models``: combinations and the CNN's
    pseudo-combination), from ``maps/{dataset}/{model}/seed{s}.npz`` of every seed: one row per map
    counted under another (``same_as``), with the smallest Spearman correlation over images and
    seeds between the two (columns :data:`DUPLICATE_COLUMNS`). ``excluded``: maps never grouped
    (the controls). A model without a maps file is skipped: the report checks its inputs elsewhere.
    """
    # kmx_eval.explain imports torch; the report stage has imported it already (check_settings), and
    # the attribution-map keys of a maps file are defined there.
    from kmx_eval.explain import MAP_KEYS
    from kmx_eval.explain.concepts import is_concept_key

    skip = set(MAP_KEYS) | set(excluded)
    rows = []
    for ds in datasets:
        for model in models:
            files = [paths.maps_file(ds, model, s) for s in seeds]
            if not all(f.exists() for f in files):
                continue
            worst: dict[tuple[str, str], float] = {}
            methods: list[str] | None = None
            for f in files:
                data = io.load_npz(f)
                names = sorted(k for k in data if k not in skip and not is_concept_key(k))
                methods = names if methods is None else [m for m in methods if m in names]
                for pair, rho in pairwise_min_spearman({m: data[m] for m in names}).items():
                    worst[pair] = min(worst.get(pair, rho), rho) if np.isfinite(rho) else np.nan
            for method, rep in same_map_groups(worst, methods or []).items():
                rows.append(dict(dataset=ds, combination=model, method=method, same_as=rep,
                                 min_spearman=worst.get((rep, method), worst.get((method, rep), np.nan))))
    return pd.DataFrame(rows, columns=DUPLICATE_COLUMNS)


def same_as_mapping(duplicates: pd.DataFrame) -> dict[tuple[str, str, str], str]:
    """``{(dataset, combination, method): representative}`` from :func:`map_duplicates`' frame."""
    return {(r.dataset, r.combination, r.method): r.same_as for r in duplicates.itertuples(index=False)}
