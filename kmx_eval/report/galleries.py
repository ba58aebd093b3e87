"""The report's galleries (matplotlib, drawn in :func:`kmx_eval.report.figures.style` and rendered
byte-stable by :func:`kmx_eval.report.figures.render`).

- :func:`explanation_gallery`: image, mask, concept map and attribution maps side by side.
- :func:`prototype_gallery`: for each class, the nearest training image of each prototype.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.colors as mcolors
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec

from kmx_eval.report.figures import new_figure, style
from kmx_eval.report.numbers import fmt


def scaled_maps(maps: Sequence[np.ndarray]) -> tuple[list[np.ndarray], bool]:
    """Scale each attribution map by its largest absolute value so a row shares one colour scale.

    ``a' = a / max_ij |a_ij|`` (an all-zero map stays zero). The row is *signed* when any map has
    a negative value; its scale is then the symmetric [-1, 1], otherwise [0, 1].
    """
    out, signed = [], False
    for a in maps:
        a = np.asarray(a, dtype=np.float64)
        m = np.nanmax(np.abs(a)) if a.size and np.isfinite(a).any() else 0.0
        out.append(a / m if m > 0 else np.zeros_like(a))
        signed |= bool(np.nanmin(a) < 0) if a.size and np.isfinite(a).any() else False
    return out, signed


def _concept_cmap(n: int) -> mcolors.ListedColormap:
    base = sns.color_palette("tab20", 20)
    return mcolors.ListedColormap([base[i % 20] for i in range(max(n, 1))])


def explanation_gallery(
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    *,
    masks: np.ndarray | None = None,
    concepts: np.ndarray | None = None,
    concept_label: str = "concepts",
    row_labels: Sequence[str] | None = None,
) -> Figure:
    """Explanation gallery: one row per test image; image, mask, concept map, then each map.

    Parameters
    ----------
    images : (n, H, W, 3) uint8
    maps : mapping label -> (n, H, W) float
        Attribution maps in column order (e.g. ``B4 margin``, ``B34 margin``, ``B234 margin``,
        ``Grad-CAM``, ``IG``). Within a row each map is scaled by :func:`scaled_maps` and all share
        one colour bar: diverging and symmetric when any map of the row is signed.
    masks : (n, H, W), optional
        Ground-truth object masks (0/1 or 0/255), drawn as a contour on the image column too.
    concepts : (n, H, W) int, optional
        Concept ids of each location, drawn over the image with a categorical palette.
    """
    images = np.asarray(images)
    n = len(images)
    labels = list(maps)
    cols = ["image"] + (["mask"] if masks is not None else []) + \
        ([concept_label] if concepts is not None else []) + labels
    fig = new_figure(1.35 * len(cols) + 0.5, 1.4 * n + 0.35)
    with style():
        gs = GridSpec(n, len(cols) + 1, figure=fig, width_ratios=[1] * len(cols) + [0.07],
                      wspace=0.05, hspace=0.12)
        n_concepts = int(np.max(concepts)) + 1 if concepts is not None and np.size(concepts) else 1
        for i in range(n):
            row, signed = scaled_maps([maps[k][i] for k in labels])
            cmap = "RdBu_r" if signed else "magma"
            vmin = -1.0 if signed else 0.0
            mappable = None
            for j, col in enumerate(cols):
                ax = fig.add_subplot(gs[i, j])
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                if i == 0:
                    ax.set_title(col, fontsize=8)
                if j == 0 and row_labels is not None:
                    ax.set_ylabel(row_labels[i], fontsize=7)
                if col == "image":
                    ax.imshow(images[i])
                    if masks is not None:
                        ax.contour(np.asarray(masks[i]) > 0, levels=[0.5], colors="yellow",
                                   linewidths=0.8)
                elif col == "mask" and masks is not None:
                    ax.imshow(np.asarray(masks[i]) > 0, cmap="gray", vmin=0, vmax=1)
                elif col == concept_label and concepts is not None:
                    ax.imshow(images[i])
                    ax.imshow(np.asarray(concepts[i]), cmap=_concept_cmap(n_concepts), alpha=0.6,
                              vmin=-0.5, vmax=n_concepts - 0.5)
                else:
                    mappable = ax.imshow(row[labels.index(col)], cmap=cmap, vmin=vmin, vmax=1.0)
            if mappable is not None:
                cax = fig.add_subplot(gs[i, -1])
                bar = fig.colorbar(mappable, cax=cax)
                bar.ax.tick_params(labelsize=6)
                bar.set_ticks([vmin, 0.0, 1.0] if signed else [0.0, 1.0])
    return fig


def prototype_gallery(
    images: Mapping[int, np.ndarray],
    kmeans: np.ndarray,
    *,
    linear: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    kmeans_distance: np.ndarray | None = None,
    linear_distance: np.ndarray | None = None,
    linear_label: str = "linear w_c",
    max_classes: int = 10,
) -> Figure:
    """For each class (row), the nearest training image of each k-means prototype and of ``w_c``.

    Parameters
    ----------
    images : mapping training index -> (H, W, 3) uint8
        At least the images named in ``kmeans`` and ``linear``.
    kmeans : (C, H) int
        ``i*(p_ch) = argmin_i ||p_ch - z_i||``, the nearest training image of each prototype.
    linear : (C,) int, optional
        The same for the linear prototypes ``w_c`` (drawn in a last, separated column).
    kmeans_distance, linear_distance : optional
        Distances ``||p - z_i*||`` printed under each image (small = the prototype sits on data).
    max_classes : int
        Rows shown (the first classes); a dataset with 200 classes would otherwise be unreadable.
    """
    kmeans = np.asarray(kmeans)
    C, H = kmeans.shape
    rows = min(C, max_classes)
    cols = H + (1 if linear is not None else 0)
    fig = new_figure(1.05 * cols + 1.1, 1.15 * rows + 0.4)
    with style():
        gs = GridSpec(rows, cols + (1 if linear is not None else 0), figure=fig,
                      width_ratios=[1] * H + ([0.15, 1] if linear is not None else []),
                      wspace=0.06, hspace=0.35)
        for c in range(rows):
            for h in range(cols):
                is_linear = h == H
                idx = int(linear[c]) if is_linear else int(kmeans[c, h])
                ax = fig.add_subplot(gs[c, h + 1 if is_linear else h])
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                ax.imshow(images[idx])
                dist = (linear_distance[c] if is_linear and linear_distance is not None else
                        kmeans_distance[c, h] if not is_linear and kmeans_distance is not None else None)
                ax.set_xlabel(f"#{idx}" + (f"  d={fmt(dist)}" if dist is not None else ""), fontsize=6)
                if c == 0:
                    ax.set_title(linear_label if is_linear else f"p_c{h + 1}", fontsize=8)
                if h == 0:
                    name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
                    ax.set_ylabel(name, fontsize=8)
        if rows < C:
            fig.suptitle(f"first {rows} of {C} classes", fontsize=8)
    return fig
