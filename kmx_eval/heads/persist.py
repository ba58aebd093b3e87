"""Pickle-free persistence of heads: arrays in ``{name}.npz``, parameters and metadata in ``{name}.json``.

A head is saved as its learned arrays (loaded with ``allow_pickle=False``) plus a JSON file with its
kind, a format version, its constructor parameters and any metadata the caller adds (dataset,
combination, normalisation, labels, seed). Loading rebuilds the same object, which predicts exactly
as the saved one, in any process. Writes go through :mod:`kmx_eval.io` and are atomic.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kmx_eval.errors import DataError
from kmx_eval.heads.kmeans import KMeansHead
from kmx_eval.heads.linear import LinearProbe, LinearSEM
from kmx_eval.io import load_npz, read_json, save_npz, write_json

__all__ = [
    "FORMAT_VERSION",
    "save_kmeans_head", "load_kmeans_head",
    "save_probe", "load_probe",
    "save_linear_sem", "load_linear_sem",
    "read_head_meta", "check_fitted_with", "load_checked_kmeans_head",
]

FORMAT_VERSION = 1


def _classes_array(classes: np.ndarray) -> np.ndarray:
    """``classes_`` as a numeric or fixed-width string array (object arrays would need pickle)."""
    classes = np.asarray(classes)
    if classes.dtype != object:
        return classes
    if all(isinstance(c, str) for c in classes):
        return classes.astype(str)
    raise TypeError(
        "classes_ holds Python objects that are neither numbers nor strings; only numeric or "
        "string class labels can be saved without pickle"
    )


def _json_param(value: Any) -> Any:
    # A RandomState instance cannot be written to JSON; the learned arrays do not need it.
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def _save(folder: str | Path, name: str, kind: str, params: Mapping[str, Any],
          arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None) -> tuple[Path, Path]:
    folder = Path(folder)
    extra = dict(meta or {})
    clash = {"kind", "format_version", "params"} & set(extra)
    if clash:
        raise ValueError(f"meta must not redefine the reserved key(s) {sorted(clash)}")
    doc = {"kind": kind, "format_version": FORMAT_VERSION,
           "params": {k: _json_param(v) for k, v in params.items()}, **extra}
    npz = save_npz(folder / f"{name}.npz", arrays)
    js = write_json(folder / f"{name}.json", doc)
    return npz, js


def read_head_meta(folder: str | Path, name: str) -> dict:
    """The JSON metadata of head ``name`` in ``folder`` (kind, format_version, params, caller's meta)."""
    return read_json(Path(folder) / f"{name}.json")


def check_fitted_with(folder: str | Path, name: str, expected: Mapping[str, Any]) -> dict:
    """The metadata of head ``name``, after checking that it was fitted with the ``expected`` settings.

    ``expected`` maps params keys to their values now (``{"features.normalisation": "standardize"}``);
    the metadata holds the last component (``normalisation``). A head whose metadata lacks a key
    (written before the setting existed) passes for that key. Raises :class:`DataError` naming the
    folder, the key and both values: the head is stale and the fit stage must run again.
    """
    meta = read_head_meta(folder, name)
    for key, wanted in expected.items():
        field = key.rsplit(".", 1)[-1]
        if field in meta and meta[field] != wanted:
            raise DataError(f"{folder}: the head was fitted with {field} {meta[field]!r} but {key} is "
                            f"{wanted!r}; rerun the fit stage (dvc repro)")
    return meta


def _load(folder: str | Path, name: str, kind: str) -> tuple[dict, dict[str, np.ndarray]]:
    folder = Path(folder)
    doc = read_head_meta(folder, name)
    if doc.get("kind") != kind:
        raise DataError(f"{folder / (name + '.json')} holds a {doc.get('kind')!r}, not a {kind}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{folder / (name + '.json')} has format_version {doc.get('format_version')!r}; this "
            f"version of kmx-eval reads {FORMAT_VERSION}: rerun the fit stage"
        )
    return doc, load_npz(folder / f"{name}.npz")


def _require(arrays: Mapping[str, np.ndarray], keys: tuple[str, ...], where: Path) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(f"{where} lacks the array(s) {', '.join(missing)}: rerun the fit stage")


# ------------------------------------------------------------------ KMeansHead
def save_kmeans_head(head: KMeansHead, folder: str | Path, name: str = "kmeans",
                     meta: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``folder/{name}.npz`` (prototypes, classes, n_prototypes_per_class, inertia, n_iter) and ``.json``."""
    arrays = {
        "prototypes": head.prototypes_,
        "classes": _classes_array(head.classes_),
        "n_prototypes_per_class": head.n_prototypes_per_class_,
        "inertia": head.inertia_,
        "n_iter": head.n_iter_,
    }
    return _save(folder, name, "KMeansHead", head.get_params(), arrays, meta)


def load_kmeans_head(folder: str | Path, name: str = "kmeans") -> KMeansHead:
    """Rebuild a fitted :class:`KMeansHead` saved by :func:`save_kmeans_head`."""
    doc, arrays = _load(folder, name, "KMeansHead")
    _require(arrays, ("prototypes", "classes", "n_prototypes_per_class", "inertia"),
             Path(folder) / f"{name}.npz")
    head = KMeansHead(**doc["params"])
    head.prototypes_ = arrays["prototypes"].astype(np.float64, copy=False)
    head.classes_ = arrays["classes"]
    head.n_prototypes_per_class_ = arrays["n_prototypes_per_class"].astype(np.int64, copy=False)
    head.inertia_ = arrays["inertia"].astype(np.float64, copy=False)
    head.n_iter_ = arrays.get("n_iter", np.zeros(len(head.classes_))).astype(np.int64, copy=False)
    head.n_features_in_ = int(head.prototypes_.shape[2])
    return head


def load_checked_kmeans_head(folder: str | Path, *, normalisation: str, resize: str,
                             block_weighting: str) -> KMeansHead:
    """The k-means head of ``folder``, checked against the features settings it is explained with.

    The head must have been fitted with the same ``features.normalisation``, ``features.resize``
    and block weighting (:func:`check_fitted_with`): prototypes live in the space of ``z_S`` they
    were fitted in, and a head fitted under other settings would be explained in another space.
    Its classes must be ``0..C-1``: row c of ``prototypes_`` is then class c, the class index
    that targets, labels and the module's score columns use. Raises :class:`DataError` naming
    the folder otherwise (the fit stage must run again).
    """
    head = load_kmeans_head(folder)
    check_fitted_with(folder, "kmeans", {"features.normalisation": normalisation,
                                         "features.resize": resize,
                                         "features.block_weighting": block_weighting})
    n_classes = head.prototypes_.shape[0]
    if not np.array_equal(np.asarray(head.classes_), np.arange(n_classes)):
        raise DataError(f"{folder}: head classes {head.classes_} are not 0..{n_classes - 1}")
    return head


# ------------------------------------------------------------------ LinearProbe
def save_probe(probe: LinearProbe, folder: str | Path, name: str = "probe",
               meta: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``folder/{name}.npz`` (coef, intercept, classes) and ``.json`` of a fitted probe."""
    arrays = {"coef": probe.coef_, "intercept": probe.intercept_,
              "classes": _classes_array(probe.classes_), "n_iter": np.int64(probe.n_iter_)}
    return _save(folder, name, "LinearProbe", probe.get_params(), arrays, meta)


def load_probe(folder: str | Path, name: str = "probe") -> LinearProbe:
    """Rebuild a fitted :class:`LinearProbe` saved by :func:`save_probe`."""
    doc, arrays = _load(folder, name, "LinearProbe")
    _require(arrays, ("coef", "intercept", "classes"), Path(folder) / f"{name}.npz")
    probe = LinearProbe(**doc["params"])
    probe.coef_ = arrays["coef"].astype(np.float64, copy=False)
    probe.intercept_ = arrays["intercept"].astype(np.float64, copy=False)
    probe.classes_ = arrays["classes"]
    probe.n_iter_ = int(arrays.get("n_iter", 0))
    probe.n_features_in_ = int(probe.coef_.shape[1])
    probe._set_prototypes()
    return probe


# ------------------------------------------------------------------ LinearSEM
def save_linear_sem(sem: LinearSEM, folder: str | Path, name: str = "linear",
                    meta: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``folder/{name}.npz`` (weight, bias) and ``.json`` of the CNN's linear head."""
    arrays = {"weight": sem.prototypes_, "bias": sem.bias_}
    return _save(folder, name, "LinearSEM", {}, arrays, meta)


def load_linear_sem(folder: str | Path, name: str = "linear") -> LinearSEM:
    """Rebuild a :class:`LinearSEM` saved by :func:`save_linear_sem`."""
    _, arrays = _load(folder, name, "LinearSEM")
    _require(arrays, ("weight", "bias"), Path(folder) / f"{name}.npz")
    return LinearSEM(arrays["weight"], arrays["bias"])
