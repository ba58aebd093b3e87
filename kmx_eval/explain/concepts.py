"""Concept maps: k-means on the per-location vectors of F_S (docs/METHOD.md, section 3).

Concepts are K cluster centres ``q_k`` of the vectors ``f_ij = F_S(x)[:, i, j]`` sampled from training
images (MiniBatchKMeans, streamed with ``partial_fit``, so the maps of the training split are never
held in memory at once). An image's concept map gives each location the id of its nearest concept,
``k_ij = argmin_k ||f_ij - q_k||^2``.

Scope ``global``: one set of K concepts shared by all classes (ids ``0..K-1``). Scope ``class``: one
MiniBatchKMeans per class on the locations of that class's images; class c owns the ids
``c*K .. c*K + K-1``, so ids are unique across classes, and an image's locations are assigned among
the concepts of the class it is explained for.

The concepts that make up each k-means prototype (:meth:`ConceptModel.prototype_concepts`) are the
shares of each concept among the locations of the training images assigned to that prototype.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from sklearn.cluster import MiniBatchKMeans
import torch
from tqdm.auto import tqdm

from kmx_eval import io
from kmx_eval.data import load_batch
from kmx_eval.errors import DataError, KmxError
from kmx_eval.numerics import EXACT_CDIST
from kmx_eval.seeding import rng

from .attribution import upsample
from .core import is_concept_key, model_device  # noqa: F401  (is_concept_key: re-exported)

__all__ = ["ConceptModel", "SCOPES", "MAX_CONCEPT_ID", "sample_locations", "concept_maps",
           "stored_concept_ids", "concept_key", "is_concept_key", "concept_subset", "FittedConcepts",
           "fit_concepts", "split_features", "save_concepts", "load_concepts", "variance_shares"]

SCOPES = ("global", "class")
#: Concept ids are stored as int16 in the maps file (docs/ARCHITECTURE.md, "Maps").
MAX_CONCEPT_ID = np.iinfo(np.int16).max


def concept_key(scope: str) -> str:
    """Name of a scope's concept maps in a maps file and of its model in a head folder
    (``concepts_global``, ``concepts_class``)."""
    if scope not in SCOPES:
        raise KmxError(f"explain.concepts.scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    return f"concepts_{scope}"


#: Array keys written by :meth:`ConceptModel.to_arrays` (a file may hold others beside them).
_KEYS = ("concepts/centres", "concepts/owner", "concepts/n_concepts", "concepts/scope",
         "concepts/random_state", "concepts/batch_size", "concepts/n_seen")


def sample_locations(F: torch.Tensor, locations_per_image: int, rng: np.random.Generator) -> np.ndarray:
    """Per-location vectors ``f_ij`` of each image, ``L`` locations drawn without replacement.

    Returns ``(N, L', D)`` float32 with ``L' = min(L, H*W)``, in image order.
    """
    if F.dim() != 4:
        raise ValueError(f"F must have shape (N, D, H, W), got {tuple(F.shape)}")
    n, d, h, w = F.shape
    n_loc = min(int(locations_per_image), h * w)
    flat = F.detach().float().reshape(n, d, h * w).permute(0, 2, 1).cpu().numpy()  # (N, HW, D)
    picks = np.stack([rng.choice(h * w, size=n_loc, replace=False) for _ in range(n)])
    return np.take_along_axis(flat, picks[:, :, None], axis=1).astype(np.float32, copy=False)


class ConceptModel:
    """K concepts on per-location vectors of F_S, global or per class.

    Parameters
    ----------
    n_concepts : int
        K, concepts per model (per class with ``scope="class"``).
    scope : {"global", "class"}
    random_state : int or None
        Seeds MiniBatchKMeans (k-means++ initialisation and reassignments).
    batch_size : int
        Sampled vectors gathered before each ``partial_fit`` step (at least ``n_concepts``).

    Attributes
    ----------
    centres_ : ndarray (n_ids, D)
        Concept centres ``q_k``, indexed by concept id.
    owner_ : ndarray (n_ids,)
        Class owning each id (``scope="class"``), ``-1`` for global concepts.
    n_seen_ : ndarray (n_ids // K or 1,)
        Vectors each model was fitted on (0 for a class with no training images).
    """

    def __init__(self, n_concepts: int = 8, scope: str = "global", random_state: int | None = None,
                 batch_size: int = 2048):
        self.n_concepts = n_concepts
        self.scope = scope
        self.random_state = random_state
        self.batch_size = batch_size

    # ------------------------------------------------------------------ fitting
    def _validate(self) -> None:
        if self.scope not in SCOPES:
            raise KmxError(f"explain.concepts.scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if int(self.n_concepts) < 2:
            raise KmxError(f"explain.concepts.n_concepts must be at least 2, got {self.n_concepts}")
        if int(self.batch_size) < int(self.n_concepts):
            raise KmxError(
                f"explain.concepts.batch_size ({self.batch_size}) must be at least n_concepts "
                f"({self.n_concepts}): each partial_fit step needs one vector per concept"
            )

    def _new_kmeans(self, key: int):
        seed = None if self.random_state is None else (int(self.random_state) + 7919 * (key + 1)) % 2**32
        return MiniBatchKMeans(n_clusters=int(self.n_concepts), random_state=seed,
                               batch_size=int(self.batch_size), n_init=1)

    def fit_stream(
        self,
        batches: Iterable[tuple[torch.Tensor, Any]],
        locations_per_image: int,
        rng: np.random.Generator,
        progress: bool = True,
    ) -> "ConceptModel":
        """Fit the concepts on a stream of ``(F (N, D, H, W), labels (N,))`` batches.

        From each image ``locations_per_image`` locations are sampled (``rng``); their vectors are
        buffered per model (one global model, or one per class) and passed to ``partial_fit``
        whenever ``batch_size`` have gathered, so memory holds one batch of maps and at most
        ``batch_size`` vectors per model. Calling it again continues from the fitted state.
        :meth:`start`, :meth:`consume` and :meth:`finish` do the same one batch at a time, so that
        one pass over the maps can feed several models.
        """
        self.start(locations_per_image)
        for F, labels in tqdm(batches, desc="concepts", disable=not progress, leave=False):
            self.consume(F, labels, rng)
        return self.finish()

    def start(self, locations_per_image: int) -> "ConceptModel":
        """Begin (or continue) fitting; then :meth:`consume` each batch and :meth:`finish`."""
        self._validate()
        if int(locations_per_image) < 1:
            raise KmxError(f"explain.concepts.locations_per_image must be at least 1, got {locations_per_image}")
        self._locations = int(locations_per_image)
        self._models = getattr(self, "_models", {})
        self._seen = getattr(self, "_seen", {})
        self._buffers: dict[int, list[np.ndarray]] = {}
        return self

    def _flush(self, key: int) -> None:
        vectors = np.concatenate(self._buffers.pop(key), axis=0)
        if key not in self._models:
            if len(vectors) < int(self.n_concepts):
                where = "the training split" if key < 0 else f"class {key}"
                raise DataError(
                    f"concepts: {where} gave {len(vectors)} sampled locations, fewer than "
                    f"n_concepts={self.n_concepts}; raise explain.concepts.n_images or "
                    f"locations_per_image, or lower n_concepts"
                )
            self._models[key] = self._new_kmeans(key)
        self._models[key].partial_fit(vectors)
        self._seen[key] = self._seen.get(key, 0) + len(vectors)

    def consume(self, F: torch.Tensor, labels: Any, rng: np.random.Generator) -> None:
        """Sample ``locations_per_image`` locations of each image of one batch and buffer them."""
        vectors = sample_locations(F, self._locations, rng)          # (N, L, D)
        dim = vectors.shape[2]
        labels = np.asarray(labels.cpu() if torch.is_tensor(labels) else labels).reshape(-1)
        if len(labels) != len(vectors):
            raise ValueError(f"fit_stream: {len(labels)} labels for {len(vectors)} feature maps")
        if self.scope == "global":
            groups = {-1: vectors.reshape(-1, dim)}
        else:
            if (labels < 0).any():
                raise DataError(f"concepts: negative class label {int(labels.min())} in the stream")
            groups = {int(c): vectors[labels == c].reshape(-1, dim) for c in np.unique(labels)}
        for key, v in groups.items():
            self._buffers.setdefault(key, []).append(v)
            if sum(len(b) for b in self._buffers[key]) >= int(self.batch_size):
                self._flush(key)

    def finish(self) -> "ConceptModel":
        """Fit what is still buffered and gather the centres."""
        for key in sorted(self._buffers):
            self._flush(key)
        if not self._models:
            raise DataError("concepts: the stream of training feature maps was empty; nothing to fit")
        self._collect()
        return self

    def _collect(self) -> None:
        """Gather the fitted centres into id-indexed arrays (class c owns ids c*K..c*K+K-1)."""
        k = int(self.n_concepts)
        if self.scope == "global":
            self.centres_ = self._models[-1].cluster_centers_.astype(np.float32)
            self.owner_ = np.full(k, -1, dtype=np.int64)
            self.n_seen_ = np.array([self._seen[-1]], dtype=np.int64)
            return
        n_classes = max(self._models) + 1
        dim = next(iter(self._models.values())).cluster_centers_.shape[1]
        centres = np.full((n_classes * k, dim), np.nan, dtype=np.float32)
        for c, model in self._models.items():
            centres[c * k:(c + 1) * k] = model.cluster_centers_
        self.centres_ = centres
        self.owner_ = np.repeat(np.arange(n_classes, dtype=np.int64), k)
        self.n_seen_ = np.array([self._seen.get(c, 0) for c in range(n_classes)], dtype=np.int64)

    # ------------------------------------------------------------------ using
    @property
    def n_ids(self) -> int:
        """Number of concept ids (K, or K times the number of classes)."""
        self._check_fitted()
        return int(self.centres_.shape[0])

    def _check_fitted(self) -> None:
        if not hasattr(self, "centres_"):
            raise KmxError("the concept model is not fitted; call fit_stream or load it with from_arrays")

    def assign(self, F: torch.Tensor, labels_or_pred: Any = None) -> np.ndarray:
        """Concept map ``k_ij = argmin_k ||f_ij - q_k||^2``: ``(N, D, H, W) -> (N, H, W)`` int64.

        With ``scope="class"``, ``labels_or_pred`` (N,) names the class whose concepts each image is
        assigned among (the explained class, ground truth or prediction).
        """
        self._check_fitted()
        if F.dim() != 4:
            raise ValueError(f"F must have shape (N, D, H, W), got {tuple(F.shape)}")
        n, d, h, w = F.shape
        if d != self.centres_.shape[1]:
            raise KmxError(
                f"the concept model was fitted on {self.centres_.shape[1]}-dimensional vectors but F "
                f"has {d} channels; refit the concepts for this combination"
            )
        vectors = F.detach().float().reshape(n, d, h * w).permute(0, 2, 1)          # (N, HW, D)
        centres = torch.as_tensor(self.centres_, device=vectors.device)
        if self.scope == "global":
            # Exact differences: a location between two concepts gets the same id on every run.
            ids = torch.cdist(vectors.reshape(-1, d), centres, compute_mode=EXACT_CDIST).argmin(-1)
            return ids.reshape(n, h, w).cpu().numpy().astype(np.int64)
        if labels_or_pred is None:
            raise KmxError("class-scoped concepts need the class of each image (labels_or_pred)")
        labels = np.asarray(labels_or_pred.cpu() if torch.is_tensor(labels_or_pred) else labels_or_pred)
        labels = labels.reshape(-1).astype(np.int64)
        if len(labels) != n:
            raise ValueError(f"assign: {len(labels)} labels for {n} feature maps")
        k = int(self.n_concepts)
        out = np.empty((n, h * w), dtype=np.int64)
        for c in np.unique(labels):
            if c < 0 or c >= len(self.n_seen_) or self.n_seen_[c] == 0:
                raise DataError(
                    f"concepts: no concepts were fitted for class {int(c)} (classes with training "
                    f"locations: {np.flatnonzero(self.n_seen_).tolist()})"
                )
            rows = np.flatnonzero(labels == c)
            rows_t = torch.as_tensor(rows, device=vectors.device)
            own = centres[c * k:(c + 1) * k]
            local = torch.cdist(vectors[rows_t].reshape(-1, d), own,
                                compute_mode=EXACT_CDIST).argmin(-1).reshape(len(rows), -1)
            out[rows] = local.cpu().numpy() + c * k
        return out.reshape(n, h, w)

    def prototype_concepts(self, assignments: np.ndarray, prototype_of_image: np.ndarray,
                           n_classes: int, n_prototypes: int) -> np.ndarray:
        """Share of each concept among the locations of the training images of each prototype.

        ``share[c, h, k] = #{(n, i, j) : image n assigned to p_ch, k_nij = k} / #{(n, i, j) : image n
        assigned to p_ch}``; NaN for a prototype with no image.

        Parameters
        ----------
        assignments : (N, H, W) int
            Concept maps of the training images (:meth:`assign`).
        prototype_of_image : (N, 2) int
            ``(class c, prototype h)`` of the prototype each training image belongs to.
        n_classes, n_prototypes : int
            Shape ``(C, H_p)`` of the head's prototypes.

        Returns
        -------
        ndarray (C, H_p, n_ids) float64, rows summing to one.
        """
        self._check_fitted()
        assignments = np.asarray(assignments)
        proto = np.asarray(prototype_of_image).astype(np.int64)
        if proto.ndim != 2 or proto.shape[1] != 2 or proto.shape[0] != assignments.shape[0]:
            raise ValueError(
                f"prototype_of_image must be ({assignments.shape[0]}, 2) rows of (class, prototype); "
                f"got {proto.shape}"
            )
        if (proto[:, 0] < 0).any() or (proto[:, 0] >= n_classes).any() or \
                (proto[:, 1] < 0).any() or (proto[:, 1] >= n_prototypes).any():
            raise ValueError(f"prototype_of_image has entries outside ({n_classes}, {n_prototypes})")
        n_ids = self.n_ids
        flat_ids = assignments.reshape(len(assignments), -1)
        if flat_ids.size and (flat_ids.min() < 0 or flat_ids.max() >= n_ids):
            raise ValueError(f"assignments hold concept ids outside [0, {n_ids})")
        counts = np.zeros((n_classes * n_prototypes, n_ids), dtype=np.float64)
        per_image = np.stack([np.bincount(row, minlength=n_ids) for row in flat_ids]) \
            if len(flat_ids) else np.zeros((0, n_ids))
        np.add.at(counts, proto[:, 0] * n_prototypes + proto[:, 1], per_image)
        totals = counts.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(totals > 0, counts / totals, np.nan)
        return share.reshape(n_classes, n_prototypes, n_ids)

    # ------------------------------------------------------------------ persistence (no pickle)
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted model as plain arrays for :func:`kmx_eval.io.save_npz` (keys ``concepts/...``)."""
        self._check_fitted()
        return {
            "concepts/centres": self.centres_.astype(np.float32),
            "concepts/owner": self.owner_.astype(np.int64),
            "concepts/n_concepts": np.array(int(self.n_concepts), dtype=np.int64),
            "concepts/scope": np.array(self.scope),
            "concepts/random_state": np.array(-1 if self.random_state is None else int(self.random_state),
                                             dtype=np.int64),
            "concepts/batch_size": np.array(int(self.batch_size), dtype=np.int64),
            "concepts/n_seen": self.n_seen_.astype(np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], source: str = "concepts.npz") -> "ConceptModel":
        """Rebuild a fitted model from :meth:`to_arrays` (other keys are ignored); it can assign,
        not continue fitting."""
        missing = [k for k in _KEYS if k not in arrays]
        if missing:
            raise DataError(f"{source} lacks {', '.join(missing)}; rerun the fit stage that writes it")
        random_state = int(arrays["concepts/random_state"])
        model = cls(n_concepts=int(arrays["concepts/n_concepts"]), scope=str(arrays["concepts/scope"]),
                    random_state=None if random_state < 0 else random_state,
                    batch_size=int(arrays["concepts/batch_size"]))
        model._validate()
        model.centres_ = np.asarray(arrays["concepts/centres"], dtype=np.float32)
        model.owner_ = np.asarray(arrays["concepts/owner"], dtype=np.int64)
        model.n_seen_ = np.asarray(arrays["concepts/n_seen"], dtype=np.int64)
        return model


def concept_maps(model: torch.nn.Module, concepts: ConceptModel, x: Any, *, labels: Any,
                 batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """Concept maps of images at input resolution: ``(n, H, W)`` int64.

    ``F_S = model.features(x)`` (a KMeansHeadModule), each location's nearest concept, then nearest
    upsampling to the image size (ids are categories, not values to interpolate).
    """
    labels = np.asarray(labels.cpu() if torch.is_tensor(labels) else labels).reshape(-1)
    out = []
    device = model_device(model)
    with torch.no_grad():
        for start in tqdm(range(0, len(x), batch_size), desc="concept maps", disable=not progress,
                          leave=False):
            xb = torch.as_tensor(x[start:start + batch_size], dtype=torch.float32).to(device)
            ids = concepts.assign(model.features(xb), labels[start:start + batch_size])
            up = upsample(torch.from_numpy(ids).double(), tuple(xb.shape[-2:]), mode="nearest")
            out.append(up.round().long().numpy())
    return np.concatenate(out, axis=0)


def stored_concept_ids(ids: np.ndarray) -> np.ndarray:
    """Concept maps ``(n, H, W)`` as the maps file stores them: int16 (docs/ARCHITECTURE.md, "Maps").

    The largest id (``C * K - 1`` with class-scoped concepts, K per class) must fit in int16, or
    the cast would wrap it round to another concept's id without a word. Raises
    :class:`DataError` naming ``explain.concepts.n_concepts`` when one does not.
    """
    if ids.max(initial=0) > MAX_CONCEPT_ID:
        raise DataError(
            f"concept id {ids.max()} does not fit the maps file's int16 (at most "
            f"{MAX_CONCEPT_ID}); lower explain.concepts.n_concepts"
        )
    return ids.astype(np.int16)


# ---------------------------------------------------------------------------------- fitting (fit stage)
def concept_subset(n_train: int, n_images: int, seed: int) -> np.ndarray:
    """The training images the concepts are fitted on: ``n_images`` drawn with the seed's
    ``concepts`` stream, sorted (the same subset for every combination and scope)."""
    n = min(int(n_images), int(n_train))
    return np.sort(rng(seed, "concepts").choice(int(n_train), n, replace=False))


def split_features(module: torch.nn.Module, split, device) -> Callable[[np.ndarray], torch.Tensor]:
    """``idx -> F_S`` of the images ``idx`` of a prepared split (``module.features``, no gradient)."""
    def features(idx: np.ndarray) -> torch.Tensor:
        x = load_batch(split, idx)[0]
        with torch.no_grad():
            return module.features(x.to(device))

    return features


@dataclass
class FittedConcepts:
    """What :func:`fit_concepts` returns.

    Attributes
    ----------
    models : dict scope -> ConceptModel
    prototype_concepts : dict scope -> (C, H_p, n_ids) shares (:meth:`ConceptModel.prototype_concepts`)
    variance_shares : dict ``"B{b}"`` -> share of F_S's total variance that block b carries
    """

    models: dict[str, ConceptModel]
    prototype_concepts: dict[str, np.ndarray]
    variance_shares: dict[str, float]


def variance_shares(total: np.ndarray, total_sq: np.ndarray, count: float,
                    block_channels: Sequence[tuple[int, int]]) -> dict[str, float]:
    """Share of F_S's total variance carried by each block.

    With per-channel ``Var_c = E[f_c^2] - E[f_c]^2`` over every location of the images seen,
    ``share_b = sum_{c in b} Var_c / sum_c Var_c`` (channels in block order, ``block_channels`` =
    ``[(b, C_b), ...]``). Invariance: unchanged when F_S is multiplied by a constant or shifted per
    channel; the block weighting ``balanced`` aims at equal shares.
    """
    var = np.maximum(np.asarray(total_sq, np.float64) / count - (np.asarray(total, np.float64) / count) ** 2, 0.0)
    if sum(c for _, c in block_channels) != len(var):
        raise ValueError(f"block channels {block_channels} do not add up to the {len(var)} channels of F_S")
    whole = float(var.sum())
    out, start = {}, 0
    for b, c in block_channels:
        out[f"B{b}"] = float(var[start:start + c].sum() / whole) if whole > 0 else float("nan")
        start += c
    return out


def fit_concepts(
    features: Callable[[np.ndarray], torch.Tensor],
    subset: np.ndarray,
    labels: np.ndarray,
    prototype_of_image: np.ndarray,
    head_shape: tuple[int, int],
    block_channels: Sequence[tuple[int, int]],
    *,
    scopes: Sequence[str],
    n_concepts: int,
    locations_per_image: int,
    batch_size: int,
    image_batch_size: int,
    seed: int,
    salt: str,
    progress: bool = True,
) -> FittedConcepts:
    """Fit one concept model per scope on the combined maps F_S of training images.

    Two passes over ``subset`` in batches of ``image_batch_size`` images: the first streams the
    maps into every scope's MiniBatchKMeans (``locations_per_image`` sampled locations per image,
    scope ``s`` drawing them from ``rng(seed, "concept-locations", salt[, s])``) and accumulates the
    per-channel moments of F_S (:func:`variance_shares`); the second assigns every location to
    its concept and gives the concepts that make up each k-means prototype
    (:meth:`ConceptModel.prototype_concepts`; each training image belongs to the nearest prototype
    of its own class, ``prototype_of_image`` = ``(class, prototype)`` rows).

    Parameters
    ----------
    features : ``idx -> F_S`` of those training images (:func:`split_features`)
    subset : training indices (:func:`concept_subset`); labels : their labels, the head's classes
    head_shape : ``(C, H_p)`` of the k-means head's prototypes
    block_channels : ``[(b, C_b), ...]`` in the order of F_S's channels
    scopes, n_concepts, locations_per_image, batch_size : ``explain.concepts`` settings
    """
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(subset):
        raise ValueError(f"fit_concepts: {len(labels)} labels for {len(subset)} images")
    models = {scope: ConceptModel(n_concepts, scope, seed, batch_size).start(locations_per_image)
              for scope in scopes}
    # Global concepts keep the stream of a single scope, so their fit does not depend on `scopes`.
    streams = {scope: rng(seed, "concept-locations", salt) if scope == "global"
               else rng(seed, "concept-locations", salt, scope) for scope in scopes}
    step = int(image_batch_size)
    starts = range(0, len(subset), step)
    total, total_sq, count = _stream_concepts(features, subset, labels, models=models, streams=streams,
                                              step=step, progress=progress)
    for model in models.values():
        model.finish()
    assignments: dict[str, list[np.ndarray]] = {scope: [] for scope in scopes}
    for start in tqdm(starts, desc="concept maps", disable=not progress, leave=False):
        F = features(subset[start:start + step])
        for scope, model in models.items():
            assignments[scope].append(model.assign(F, labels[start:start + step]))
    shares = {scope: models[scope].prototype_concepts(np.concatenate(a), prototype_of_image,
                                                      n_classes=head_shape[0], n_prototypes=head_shape[1])
              for scope, a in assignments.items()}
    return FittedConcepts(models, shares, variance_shares(total, total_sq, count, block_channels))


def _stream_concepts(features: Callable[[np.ndarray], torch.Tensor], subset: np.ndarray, labels: np.ndarray, *,
                     models: Mapping[str, ConceptModel], streams: Mapping[str, np.random.Generator], step: int,
                     progress: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """:func:`fit_concepts`' first pass: stream F_S of ``subset`` (``step`` images at a time) into every
    scope's model; return F_S's per-channel sum, sum of squares and number of locations."""
    total = total_sq = None
    count = 0.0
    for start in tqdm(range(0, len(subset), step), desc="concepts", disable=not progress, leave=False):
        F = features(subset[start:start + step])
        y = labels[start:start + step]
        for scope, model in models.items():
            model.consume(F, y, streams[scope])
        f64 = F.detach().to(torch.float64)
        s, sq = f64.sum((0, 2, 3)).cpu().numpy(), (f64 * f64).sum((0, 2, 3)).cpu().numpy()
        total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
        count += F.shape[0] * F.shape[2] * F.shape[3]
    if total is None:
        raise DataError("concepts: no training image to fit the concepts on (explain.concepts.n_images)")
    return total, total_sq, count


def save_concepts(folder, fitted: FittedConcepts, subset: np.ndarray, meta: Mapping[str, Any],
                  locations_per_image: int) -> None:
    """Write each scope's model as ``{folder}/concepts_{scope}.npz`` (arrays of
    :meth:`ConceptModel.to_arrays`, ``prototype_concepts`` and the training ``images``) and
    ``.json`` (``meta`` plus the concept settings)."""
    for scope, model in fitted.models.items():
        name = Path(folder) / concept_key(scope)
        io.save_npz(name.with_suffix(".npz"), {**model.to_arrays(),
                                               "prototype_concepts": fitted.prototype_concepts[scope],
                                               "images": np.asarray(subset, dtype=np.int64)})
        io.write_json(name.with_suffix(".json"), {
            **meta, "n_concepts": int(model.n_concepts), "scope": scope, "n_images": int(len(subset)),
            "locations_per_image": int(locations_per_image), "n_ids": int(model.n_ids)})


def load_concepts(folder, scope: str) -> ConceptModel:
    """The concept model of ``scope`` written by :func:`save_concepts`."""
    path = Path(folder) / f"{concept_key(scope)}.npz"
    if not path.exists():
        raise DataError(f"{path} does not exist: the concepts of scope {scope!r} were not fitted; "
                        f"rerun the fit stage (dvc repro)")
    return ConceptModel.from_arrays(io.load_npz(path), source=str(path))
