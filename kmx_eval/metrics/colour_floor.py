"""The colour floor of concept alignment: how far pixel colour alone recovers the part maps.

A concept model that never looks at a network: k-means on the RGB values of pixels, with the
study's number of concepts, fitted on the scored pixels pooled over images (the most favourable
case for colour: it sees only the pixels it is scored on) and scored per image against the part
map by adjusted mutual information (:func:`sklearn.metrics.adjusted_mutual_info_score`): about 0
when the clusters tell nothing of the parts, 1 when they are the parts up to renaming
(docs/METHOD.md, section 4, "Synthetic parts"). A dataset on which this floor is high measures
colour segmentation, not concepts: a concept map scoring near it shows nothing a colour
histogram would not.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score

#: Pixels the k-means is fitted on at most (drawn uniformly from the scored ones): enough for a few
#: colour clusters, and the fit stays well under a second.
FIT_PIXELS = 20_000


def colour_kmeans_ami(images, part_maps, *, n_concepts: int, seed: int, region=None) -> np.ndarray:
    """Per-image AMI between a pixel-colour k-means and the part map, shape (n,).

    Parameters
    ----------
    images : uint8 (n, H, W, 3)
    part_maps : int (n, H, W), 0 background, 1..P parts
    n_concepts : the number of clusters (the study's ``explain.concepts.n_concepts``)
    seed : seeds the pixel draw and the k-means (same inputs, same scores)
    region : bool (n, H, W), optional
        Pixels fitted and scored; default the object (``part_maps > 0``). An image with no scored
        pixel, or whose scored part map holds one label, gives NaN (AMI compares partitions).
    """
    images = np.asarray(images)
    parts = np.asarray(part_maps).astype(np.int64)
    if images.ndim != 4 or images.shape[:3] != parts.shape or images.shape[3] != 3:
        raise ValueError(f"images {images.shape} must be (n, H, W, 3) over part maps (n, H, W), got {parts.shape}")
    region = parts > 0 if region is None else np.asarray(region, dtype=bool)
    pixels = images[region].astype(np.float64)
    if len(pixels) < n_concepts:
        return np.full(len(images), np.nan)
    gen = np.random.default_rng(seed)
    fit = pixels[gen.choice(len(pixels), min(FIT_PIXELS, len(pixels)), replace=False)]
    model = KMeans(n_clusters=n_concepts, n_init=4, random_state=seed).fit(fit)
    scores = np.full(len(images), np.nan)
    for i in range(len(images)):
        keep = region[i]
        truth = parts[i][keep]
        if np.unique(truth).size >= 2:
            scores[i] = adjusted_mutual_info_score(truth, model.predict(images[i][keep].astype(np.float64)))
    return scores
