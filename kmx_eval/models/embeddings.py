"""The pooled-embedding cache: one backbone forward per image serves every block combination.

The pooled embedding of a combination ``S`` with shallowest block ``s`` (:mod:`kmx_eval.models.blocks`)
is a concatenation over its blocks, and each part depends only on ``b``, ``s`` and the
normalisation:

    z_S(x) = concat_{b in S} mean_ij resize(norm_b(A_b(x)), grid_s)[:, i, j]

So storing, for every block ``b`` and every grid ``g <= b``, the part
``P_{b@g}(x) = mean_ij resize(norm_b(A_b(x)), grid_g)`` gives ``z_S`` of *any* combination by
concatenation, without keeping a single spatial map. It is stored for ``norm = none`` and
``norm = l2``. ``standardize`` needs no entry of its own: it is affine per channel and ``resize``
and the mean are linear with weights summing to one, so
``mean_ij resize((A_b - mu_b) / sigma_b) = (P^none_{b@g} - mu_b) / sigma_b``.
For the same reason ``P_{b@g}`` is computed as a weighted sum over the cells of ``A_b``
(:func:`pooling_weights`), without materialising the resized map.

Cache keys (``features/{ds}/seed{s}.npz``, see docs/ARCHITECTURE.md), for split in train, test:
``{split}/labels`` (N,) int64, ``{split}/logits`` (N, n_classes) float32,
``{split}/none/B{b}@B{g}`` and ``{split}/l2/B{b}@B{g}`` (N, C_b) float32, and
``stats/B{b}/mean``, ``stats/B{b}/std`` (C_b,) float32 (training split, :class:`BlockStats`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from kmx_eval.errors import DataError, KmxError, ParamsError
from kmx_eval.models.blocks import (
    L2_EPS,
    LOGITS,
    NORMALISATIONS,
    RESIZES,
    BlockExtractor,
    BlockStats,
    BlockStatsAccumulator,
    block_scales,
    pool,
    resize_to,
)
from kmx_eval.models.combination import Combination, as_combination

SPLITS = ("train", "test")
#: Normalisations stored in the cache; ``standardize`` is derived from ``none`` and the stats.
CACHED_NORMALISATIONS = ("none", "l2")


def part_key(split: str, normalisation: str, block: int, grid: int) -> str:
    """Cache key of ``P^{normalisation}_{block@grid}`` (``"train/none/B4@B2"``)."""
    return f"{split}/{normalisation}/B{block}@B{grid}"


def pooling_weights(source: tuple[int, int], grid: tuple[int, int], resize: str = "bilinear",
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Weights ``w`` (H_b, W_b) with ``mean_ij resize(A, grid)[:, i, j] = sum_kl w_kl A[:, k, l]``.

    ``resize`` is linear in ``A``, so the mean of the resized map is a fixed weighted sum of the
    source cells; ``w_kl`` is the mean of the resized unit image ``E_kl``. Applying ``w`` costs one
    pass over ``A_b`` instead of materialising ``resize(A_b)`` on a finer grid (B4 on B1's grid is
    64 times larger than B4). The weights sum to one.
    """
    h, w = int(source[0]), int(source[1])
    basis = torch.eye(h * w, device=device).reshape(h * w, 1, h, w)
    return resize_to(basis, grid, resize).mean(dim=(1, 2, 3)).reshape(h, w)


@torch.no_grad()
def _extract_split(extractor: BlockExtractor, dataset: Dataset, *, split: str, batch_size: int,
                   resize: str, device: torch.device, num_workers: int,
                   accumulator: BlockStatsAccumulator | None) -> dict[str, np.ndarray]:
    n = len(dataset)
    blocks = extractor.blocks
    out: dict[str, np.ndarray] = {}
    filled = np.zeros(n, dtype=bool)
    offset = 0
    weights: dict[tuple, torch.Tensor] = {}  # (source grid, target grid) -> pooling weights
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in tqdm(loader, desc=f"embed {split}", unit="batch", leave=False):
        x, y = batch[0], torch.as_tensor(batch[1], dtype=torch.long)
        # Rows go to the dataset index each item reports, so the cache is in split order
        # whatever the loader does; items without an index are taken in loader order.
        idx = (torch.as_tensor(batch[2], dtype=torch.long).numpy() if len(batch) > 2
               else np.arange(offset, offset + len(y)))
        offset += len(y)
        if idx.min() < 0 or idx.max() >= n:
            raise DataError(f"{split} split: item index {int(idx.max())} is outside 0..{n - 1}")
        acts = extractor(x.to(device))
        if accumulator is not None:
            accumulator.update(acts)
        parts = {f"{split}/labels": y.numpy(), f"{split}/logits": acts[LOGITS].float()}
        grids = {g: tuple(acts[g].shape[-2:]) for g in blocks}
        for b in blocks:
            by_norm = {"none": acts[b], "l2": F.normalize(acts[b], p=2.0, dim=1, eps=L2_EPS)}
            for g in blocks:
                if g > b:
                    continue
                key = (tuple(acts[b].shape[-2:]), grids[g])
                if g != b and key not in weights:
                    weights[key] = pooling_weights(*key, resize, device=acts[b].device)
                for norm, a in by_norm.items():
                    # g == b: no resize, z is the plain mean; else the exact weighted sum.
                    parts[part_key(split, norm, b, g)] = (
                        pool(a) if g == b else torch.einsum("nchw,hw->nc", a, weights[key]))
        for key, value in parts.items():
            value = value.cpu().numpy() if torch.is_tensor(value) else value
            if key not in out:
                dtype = np.int64 if key.endswith("/labels") else np.float32
                out[key] = np.zeros((n,) + value.shape[1:], dtype=dtype)
            out[key][idx] = value
        filled[idx] = True
    if not filled.all():
        raise DataError(f"{split} split: {int((~filled).sum())} of {n} items were never produced")
    return out


def extract_embedding_cache(extractor: BlockExtractor, train_dataset: Dataset, test_dataset: Dataset, *,
                            batch_size: int = 128, resize: str = "bilinear",
                            device: torch.device | str = "cpu",
                            num_workers: int = 0) -> dict[str, np.ndarray]:
    """Compute the pooled-embedding cache (module docstring) in one pass per split.

    Runs ``extractor`` once per image, in eval mode and without gradients, streaming batches: only
    pooled parts ``P_{b@g}`` (N, C_b) are kept, never the spatial maps. Block statistics are
    accumulated over every location of the training split in float64.

    Parameters
    ----------
    extractor : BlockExtractor
        Taps the blocks to cache and returns the logits; its blocks set which ``b`` and ``g`` exist.
    train_dataset, test_dataset : Dataset
        Items ``(x float32 (3, H, W), label, index)``; no augmentation.
    batch_size : int
    resize : {"bilinear", "nearest"}
        How deeper blocks reach shallower grids (``features.resize``).
    device : torch.device or str
    num_workers : int

    Returns
    -------
    dict[str, np.ndarray]
        The cache keys listed in the module docstring.
    """
    if resize not in RESIZES:
        raise ParamsError(f"features.resize: unknown value {resize!r}; valid: {', '.join(RESIZES)}")
    if not extractor.returns_logits:
        raise ValueError("extract_embedding_cache needs a BlockExtractor built with logits=True")
    device = torch.device(device)
    was_training = extractor.training
    extractor.to(device).eval()
    try:
        accumulator = BlockStatsAccumulator()
        cache = _extract_split(extractor, train_dataset, split="train", batch_size=batch_size, resize=resize,
                               device=device, num_workers=num_workers, accumulator=accumulator)
        cache.update(accumulator.finalize().to_dict())
        cache.update(_extract_split(extractor, test_dataset, split="test", batch_size=batch_size, resize=resize,
                                    device=device, num_workers=num_workers, accumulator=None))
    finally:
        extractor.train(was_training)
    return cache


def cache_blocks(cache) -> tuple[int, ...]:
    """Blocks whose pooled parts the cache holds (those with statistics)."""
    return BlockStats.from_dict(cache).blocks


def load_block_stats(path) -> BlockStats:
    """The training-split :class:`BlockStats` of the embedding cache file at ``path``.

    Only the ``stats/B{b}/...`` arrays are read: an ``.npz`` member is loaded when it is accessed,
    and the pooled parts of every block at every grid, most of the file, are not needed to
    rebuild a head's ``standardize`` normalisation. Raises :class:`KmxError` when the file is
    missing (the embed stage has not run).
    """
    path = Path(path)
    if not path.exists():
        raise KmxError(f"{path} does not exist; run the embed stage first (dvc repro)")
    with np.load(path, allow_pickle=False) as cache:
        return BlockStats.from_dict({k: cache[k] for k in cache.files if k.startswith("stats/")})


def combination_embeddings(cache, split: str, combination: Combination, normalisation: str = "none") -> np.ndarray:
    """Assemble ``z_S`` of ``split`` from the cache: equal to ``pool(combine(...))`` of the live maps.

    ``z_S = concat_{b in S} g_b P^{norm}_{b@s}`` with ``s = min S``; for ``standardize``,
    ``z_S = concat_{b in S} g_b (P^{none}_{b@s} - mu_b) / sigma_b`` (exact, see the module docstring);
    ``g_b`` is the combination's block weighting (:func:`~kmx_eval.models.blocks.block_scales`).

    Parameters
    ----------
    cache : mapping of str to np.ndarray
        As returned by :func:`extract_embedding_cache` or loaded from its ``.npz``.
    split : {"train", "test"}
    combination : Combination
    normalisation : {"none", "l2", "standardize"}

    Returns
    -------
    np.ndarray, (N, sum_{b in S} C_b) float32
    """
    comb = as_combination(combination)
    if normalisation not in NORMALISATIONS:
        raise ParamsError(f"features.normalisation: unknown value {normalisation!r}; "
                          f"valid: {', '.join(NORMALISATIONS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    stored = "l2" if normalisation == "l2" else "none"
    stats = BlockStats.from_dict(cache)
    scales = block_scales(comb.blocks, normalisation, comb.weighting, stats)
    parts = []
    for b in comb.blocks:
        key = part_key(split, stored, b, comb.shallowest)
        if key not in cache:
            have = ", ".join(f"B{c}" for c in cache_blocks(cache))
            raise DataError(
                f"the embedding cache has no {key!r}: combination {comb.name} needs block B{b}, "
                f"cached blocks: {have or 'none'}; rerun the embed stage"
            )
        z = np.asarray(cache[key], dtype=np.float32)
        if normalisation == "standardize":
            z = (z - stats.mean[b]) / stats.std[b]
        if scales[b] != 1.0:
            z = z * np.float32(scales[b])
        parts.append(z)
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)
