"""Fitting the heads of one block combination from pooled embeddings (the ``fit`` stage's library part).

Given the embeddings ``z_S`` of the train and test splits, the ground-truth labels and the original
CNN's logits, :func:`fit_heads` fits the k-means head (KMEx) and the linear probe and measures

- test accuracy ``1/n sum_i [yhat_i = y_i]`` of the k-means head, the probe and the CNN;
- agreement with the CNN ``1/n sum_i [yhat_i = yhat_i^CNN]`` (post-hoc fidelity) of each head;

and, for the report's gallery, the nearest training embedding of every prototype
(:func:`prototype_neighbours`). Arrays in, arrays out: files are the stage's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from kmx_eval import io
from kmx_eval.errors import DataError, ParamsError
from kmx_eval.explain.concepts import concept_subset, fit_concepts, save_concepts, split_features
from kmx_eval.heads.kmeans import KMeansHead
from kmx_eval.heads.kmex import (KMEX_HEAD_NAME, KMEX_N_INIT, fit_kmex_reference, is_kmex_space,
                                 kmex_embeddings)
from kmx_eval.heads.linear import LinearProbe, LinearSEM
from kmx_eval.heads.module import KMeansHeadModule
from kmx_eval.heads.persist import save_kmeans_head, save_linear_sem, save_probe
from kmx_eval.metrics.accuracy import accuracy, agreement
from kmx_eval.metrics.prototype_fidelity import nearest_neighbours
from kmx_eval.models.architectures import architecture_of
from kmx_eval.models.blocks import BlockExtractor, BlockStats
from kmx_eval.models.embeddings import combination_embeddings

__all__ = ["LABEL_SOURCES", "FittedHeads", "training_labels", "prototype_neighbours", "fit_heads",
           "cnn_linear_head", "FittedCombination", "fit_combination", "save_fitted_combination"]

#: Where the labels that define the k-means head's classes come from (``params.head.labels``).
LABEL_SOURCES = ("ground_truth", "cnn")


def training_labels(labels: np.ndarray, logits: np.ndarray, source: str) -> np.ndarray:
    """The labels the heads are fitted on: ``y_i`` (``ground_truth``) or ``argmax_c logit_ic`` (``cnn``).

    With ``cnn`` the k-means head is a post-hoc explainer of the CNN's own decisions; with
    ``ground_truth`` (KMEx) it is a classifier in the CNN's feature space.
    """
    if source == "ground_truth":
        return np.asarray(labels, dtype=np.int64)
    if source == "cnn":
        return np.asarray(logits).argmax(axis=1).astype(np.int64)
    raise ParamsError(f"head.labels: unknown value {source!r}; valid: {', '.join(LABEL_SOURCES)}")


def prototype_neighbours(prototypes: np.ndarray, z_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index and Euclidean distance of the nearest training embedding of every prototype.

    ``i*(p) = argmin_i ||p - z_i||`` over the training split.

    Parameters
    ----------
    prototypes : array (..., D)
        Any leading shape: (C, H, D) for k-means prototypes, (C, D) for linear ones.
    z_train : array (N, D)

    Returns
    -------
    indices : int64 array (...), rows of the training split
    distances : float64 array (...)
    """
    P = np.asarray(prototypes, dtype=np.float64)
    lead = P.shape[:-1]
    dist, idx = nearest_neighbours(P.reshape(-1, P.shape[-1]), np.asarray(z_train, np.float64), k=1)
    return idx[:, 0].reshape(lead).astype(np.int64), dist[:, 0].reshape(lead).astype(np.float64)


@dataclass
class FittedHeads:
    """What :func:`fit_heads` returns.

    Attributes
    ----------
    kmeans : KMeansHead
    probe : LinearProbe
    labels : ndarray (N_train,) int64, the labels both heads were fitted on
    metrics : dict of str to float
        ``kmeans_accuracy``, ``probe_accuracy``, ``cnn_accuracy`` (test split, against the ground
        truth) and ``kmeans_agreement``, ``probe_agreement`` (test split, against the CNN).
    neighbours : dict of str to ndarray
        ``kmeans`` (C, H) int64 and ``kmeans_distance`` (C, H): nearest training embedding of each
        k-means prototype; ``linear`` (C,) int64 and ``linear_distance`` (C,): the same for each
        linear prototype; ``linear_source`` (0-d str): ``"cnn"`` when the linear prototypes are the
        CNN's own ``w_c`` (B4 without normalisation, the space of its linear layer), else ``"probe"``.
    linear : LinearSEM or None
        The CNN's linear head when its prototypes live in this space.
    """

    kmeans: KMeansHead
    probe: LinearProbe
    labels: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)
    neighbours: dict[str, np.ndarray] = field(default_factory=dict)
    linear: LinearSEM | None = None


def fit_heads(
    z_train: np.ndarray,
    z_test: np.ndarray,
    y_train: np.ndarray,
    y_test: np.ndarray,
    logits_train: np.ndarray,
    logits_test: np.ndarray,
    *,
    labels: Literal["ground_truth", "cnn"] = "ground_truth",
    n_prototypes: int = 5,
    n_init: int = 4,
    max_iter: int = 300,
    probe_C: float = 1.0,
    probe_max_iter: int = 2000,
    seed: int = 0,
    linear: LinearSEM | None = None,
) -> FittedHeads:
    """Fit the k-means head and the linear probe of one combination and measure them.

    Parameters
    ----------
    z_train, z_test : arrays (N, D)
        Pooled embeddings ``z_S`` of the train and test splits.
    y_train, y_test : arrays (N,)
        Ground-truth labels in ``0..n_classes-1``.
    logits_train, logits_test : arrays (N, n_classes)
        The original CNN's logits; its predictions are their arg-max.
    labels : {"ground_truth", "cnn"}
        The labels that define the heads' classes (:func:`training_labels`).
    n_prototypes, n_init, max_iter : k-means head parameters (``params.head``).
    probe_C, probe_max_iter : linear-probe parameters (``params.head``).
    seed : int
        ``random_state`` of both heads.
    linear : LinearSEM, optional
        The CNN's own linear head, when ``z_S`` is the input of its linear layer (B4, no
        normalisation): its rows ``w_c`` are then the linear prototypes; otherwise the probe's are.

    Raises
    ------
    DataError
        When the training labels miss a class (possible with ``labels="cnn"``: a class the CNN never
        predicts on the training split has no embeddings to cluster), or shapes disagree.
    """
    z_train, z_test = np.asarray(z_train), np.asarray(z_test)
    logits_train, logits_test = np.asarray(logits_train), np.asarray(logits_test)
    splits = {"train": (z_train, y_train, logits_train), "test": (z_test, y_test, logits_test)}
    fit_labels = _checked_fit_labels(splits, labels)
    kmeans = KMeansHead(n_prototypes=n_prototypes, n_init=n_init, max_iter=max_iter,
                        random_state=seed).fit(z_train, fit_labels)
    probe = LinearProbe(C=probe_C, max_iter=probe_max_iter, random_state=seed).fit(z_train, fit_labels)
    metrics = _head_metrics(kmeans, probe, z_test=z_test, y_test=y_test, cnn_test=logits_test.argmax(axis=1))
    if linear is not None and linear.n_features_in_ != z_train.shape[1]:
        raise DataError(f"the CNN's linear layer takes {linear.n_features_in_} features but z_S has "
                        f"{z_train.shape[1]}: its prototypes do not live in this space")
    (km_idx, km_dist), (lin_idx, lin_dist) = (prototype_neighbours(head.prototypes_, z_train)
                                              for head in (kmeans, linear if linear is not None else probe))
    neighbours = {"kmeans": km_idx, "kmeans_distance": km_dist, "linear": lin_idx, "linear_distance": lin_dist,
                  "linear_source": np.array("cnn" if linear is not None else "probe")}
    return FittedHeads(kmeans, probe, fit_labels, metrics, neighbours, linear)


def _checked_fit_labels(splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], labels: str) -> np.ndarray:
    """The labels the heads are fitted to (:func:`training_labels`), once the splits' (embeddings,
    labels, logits) agree in size and every class has training embeddings; a DataError saying what
    to change otherwise."""
    _, y_train, logits_train = splits["train"]
    n_classes = logits_train.shape[1]
    for name, (z, y, lg) in splits.items():
        if not (len(z) == len(y) == len(lg)):
            raise DataError(f"{name} split: {len(z)} embeddings, {len(y)} labels and {len(lg)} logits "
                            "do not match; rerun the embed stage")
        if lg.shape[1] != n_classes:
            raise DataError(f"{name} split: logits have {lg.shape[1]} classes, train has {n_classes}")
    fit_labels = training_labels(y_train, logits_train, labels)
    missing = sorted(set(range(n_classes)) - set(np.unique(fit_labels).tolist()))
    if missing:
        why = ("the CNN predicts no training image as" if labels == "cnn"
               else "the training split has no image of")
        raise DataError(
            f"head.labels={labels}: {why} class(es) {missing}, so the k-means head would have no "
            f"prototypes for them; use head.labels: ground_truth or a better-trained CNN"
        )
    return fit_labels


def _head_metrics(kmeans: KMeansHead, probe: LinearProbe, *, z_test: np.ndarray, y_test: np.ndarray,
                  cnn_test: np.ndarray) -> dict[str, float]:
    """Test accuracy of both heads and the CNN, and each head's agreement with the CNN's predictions."""
    km_test, probe_test = kmeans.predict(z_test), probe.predict(z_test)
    return {
        "kmeans_accuracy": float(accuracy(km_test, y_test).mean()),
        "probe_accuracy": float(accuracy(probe_test, y_test).mean()),
        "cnn_accuracy": float(accuracy(cnn_test, y_test).mean()),
        "kmeans_agreement": float(agreement(km_test, cnn_test).mean()),
        "probe_agreement": float(agreement(probe_test, cnn_test).mean()),
    }


def cnn_linear_head(fc, z_test: np.ndarray, cnn_logits_test: np.ndarray, source: str) -> LinearSEM:
    """The CNN's own linear layer as a :class:`LinearSEM`, checked against the embedding cache.

    The cache and the backbone must belong together: the classifier on the cached ``z_n`` (no
    normalisation) has to reproduce at least 99% of the cached CNN predictions, or the linear
    prototypes would describe another model. Raises :class:`DataError` naming ``source``.
    """
    linear = LinearSEM.from_linear(fc)
    same = float(np.mean(linear.predict(z_test) == np.asarray(cnn_logits_test).argmax(axis=1)))
    if same < 0.99:
        raise DataError(f"{source}: the backbone's classifier on the cached deepest-block embeddings reproduces only "
                        f"{same:.1%} of the cached CNN predictions; rerun the embed stage")
    return linear


@dataclass
class FittedCombination:
    """Everything the fit stage writes for one combination and seed (:func:`fit_combination`).

    Attributes
    ----------
    heads : FittedHeads
    concepts : kmx_eval.explain.concepts.FittedConcepts
    subset : (n,) training indices the concepts were fitted on
    meta : dict, the settings recorded beside every head (checked by later stages,
        :func:`kmx_eval.heads.check_fitted_with`)
    metrics : dict, the heads' accuracies and agreement plus ``variance_share_B{b}`` per block
    kmex : KMeansHead or None
        KMEx's reference head (:func:`fit_kmex_head`), on the deepest block alone when asked for
    """

    heads: FittedHeads
    concepts: object
    subset: np.ndarray
    meta: dict
    metrics: dict
    kmex: KMeansHead | None = None


def fit_kmex_head(cache, n_blocks: int, n_prototypes: int, seed: int) -> tuple[KMeansHead, dict[str, float]]:
    """KMEx's reference head (:mod:`kmx_eval.heads.kmex`) with its test accuracy and agreement with the CNN.

    Fitted on the raw pooled embeddings of the deepest block ``B{n_blocks}`` (no normalisation, no
    block factor), with the ground-truth labels, as KMEx's ``get_kmeans_class`` does, whatever
    ``features`` and ``head.labels`` the suite's own heads use.
    """
    z_train, z_test = kmex_embeddings(cache, n_blocks)
    head = fit_kmex_reference(z_train, cache["train/labels"], n_prototypes=n_prototypes, seed=seed)
    pred = head.predict(z_test)
    return head, {f"{KMEX_HEAD_NAME}_accuracy": float(accuracy(pred, cache["test/labels"]).mean()),
                  f"{KMEX_HEAD_NAME}_agreement": float(agreement(pred, cache["test/logits"].argmax(axis=1)).mean())}


def fit_combination(cache, backbone, train_split, combination, *, normalisation: str, resize: str,
                    labels: str, n_prototypes: int, n_init: int, max_iter: int, probe_C: float,
                    probe_max_iter: int, scopes, n_concepts: int, concept_images: int,
                    locations_per_image: int, concept_batch_size: int, image_batch_size: int,
                    seed: int, device, source: str = "embeddings", kmex_reference: bool = False
                    ) -> FittedCombination:
    """Fit the heads and the concept models of one block combination for one seed.

    ``cache`` is the embedding cache (:mod:`kmx_eval.models.embeddings`), ``backbone`` the trained
    CNN, ``train_split`` the prepared training split. The k-means head and the probe are fitted on
    ``z_S`` (:func:`fit_heads`; the CNN's classifier is the linear head only where it is GAP + one
    linear layer, on the deepest block without normalisation, :func:`cnn_linear_head`); then one concept model per scope on the combined maps
    F_S of a seeded subset of training images
    (:func:`kmx_eval.explain.concepts.fit_concepts`), which also measures each block's share of
    F_S's variance. Settings are the ``head``, ``features`` and ``explain.concepts`` params. With
    ``kmex_reference`` (``head.kmex_reference``) and the deepest block alone, KMEx's own head too
    (:func:`fit_kmex_head`).
    """
    z = {s: combination_embeddings(cache, s, combination, normalisation) for s in ("train", "test")}
    # A classifier that is GAP + one linear layer maps z_n (deepest block, no normalisation) to the
    # logits: only there are its rows w_c prototypes in the space of z_S.
    arch = architecture_of(backbone)
    cnn_space = arch.gap_linear and combination.blocks == (arch.n_blocks,) and normalisation == "none"
    linear = (cnn_linear_head(arch.classifier_of(backbone), z["test"], cache["test/logits"], source)
              if cnn_space else None)
    heads = fit_heads(z["train"], z["test"], cache["train/labels"], cache["test/labels"],
                      cache["train/logits"], cache["test/logits"], labels=labels,
                      n_prototypes=n_prototypes, n_init=n_init, max_iter=max_iter, probe_C=probe_C,
                      probe_max_iter=probe_max_iter, seed=seed, linear=linear)
    extractor = BlockExtractor(backbone, blocks=combination.blocks, logits=False)
    module = KMeansHeadModule.from_head(heads.kmeans, extractor, combination, normalisation,
                                        BlockStats.from_dict(cache), resize).to(device)
    subset = concept_subset(len(train_split), concept_images, seed)
    y = heads.labels[subset]
    concepts = fit_concepts(
        split_features(module, train_split, device), subset, y,
        np.stack(heads.kmeans.nearest_prototype(z["train"][subset], y), axis=1),
        heads.kmeans.prototypes_.shape[:2], [(b, extractor.channels[b]) for b in combination.blocks],
        scopes=scopes, n_concepts=n_concepts, locations_per_image=locations_per_image,
        batch_size=concept_batch_size, image_batch_size=image_batch_size, seed=seed, salt=combination.name)
    meta = {"combination": combination.name, "normalisation": normalisation, "resize": resize,
            "block_weighting": combination.weighting, "labels": labels, "seed": seed,
            "n_classes": int(cache["train/logits"].shape[1]), "n_train": int(len(z["train"])),
            "dimension": int(z["train"].shape[1])}
    shares = {f"variance_share_{b}": v for b, v in concepts.variance_shares.items()}
    kmex, kmex_metrics = None, {}
    if kmex_reference and is_kmex_space(combination.blocks, arch.n_blocks):
        kmex, kmex_metrics = fit_kmex_head(cache, arch.n_blocks, n_prototypes, seed)
    return FittedCombination(heads, concepts, subset, meta, {**heads.metrics, **kmex_metrics, **shares}, kmex)


def save_fitted_combination(folder, fitted: FittedCombination, meta: dict, locations_per_image: int) -> None:
    """Write a :class:`FittedCombination` into ``folder``: ``kmeans``, ``probe``, ``linear`` (when the
    CNN's fc is the linear head), ``kmeans_kmex`` (KMEx's reference head, when fitted), ``neighbours.npz``
    and ``concepts_{scope}`` (docs/ARCHITECTURE.md)."""
    folder = Path(folder)
    if fitted.kmex is not None:
        save_kmeans_head(fitted.kmex, folder, name=KMEX_HEAD_NAME,
                         meta={**meta, "normalisation": "none", "block_weighting": "channels",
                               "labels": "ground_truth", "n_init": KMEX_N_INIT,
                               "reference": "KMEx, utils/common.py, get_kmeans_class"})
    save_kmeans_head(fitted.heads.kmeans, folder, meta=meta)
    save_probe(fitted.heads.probe, folder, meta=meta)
    if fitted.heads.linear is not None:
        save_linear_sem(fitted.heads.linear, folder, meta={**meta, "source": "cnn fc"})
    io.save_npz(folder / "neighbours.npz", fitted.heads.neighbours)
    save_concepts(folder, fitted.concepts, fitted.subset, meta, locations_per_image)
