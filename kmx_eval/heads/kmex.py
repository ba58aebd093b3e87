"""KMEx's own head, fitted as KMEx's reference code fits it: the reference row of the prototype table.

Source: github.com/SrishtiGautam/KMEx, utils/common.py, ``get_kmeans_class``: for each class ``k``,
``KMeans(n_clusters=model.H).fit(k_embed)`` on the training embeddings of that class, where
``k_embed`` are the encoder's outputs (``model.encoder(img)[:, :LATENT]``: for a ResNet with
``fc = Identity``, the global average pool of the deepest block, without any normalisation) and the
classes are the ground-truth labels. Everything else is scikit-learn's default: k-means++
initialisation, ``max_iter = 300``, ``tol = 1e-4``, and ``n_init = 10`` restarts (KMEx's
requirements.yml pins numpy 1.19 and an unpinned scikit-learn of that time, whose default was 10;
scikit-learn 1.4 changed the default to ``"auto"``, one run for k-means++, so the number is written
out here). Test decisions are those of ``model.kmc.predict``: the class of the nearest prototype.

The suite's default head differs in two settings only (docs/METHOD.md, section 4): it clusters the
per-block standardised embeddings of every combination with ``head.n_init`` restarts (4). The
reference uses the same :class:`~kmx_eval.heads.kmeans.KMeansHead` (the same scikit-learn KMeans; it
sorts each class's embeddings and fixes the seed, which picks one of k-means++'s random draws, not
another algorithm) in float64, where KMEx's float32 embeddings made scikit-learn compute in float32.
"""

from __future__ import annotations

import numpy as np

from kmx_eval.heads.kmeans import KMeansHead

__all__ = ["KMEX_N_INIT", "KMEX_MAX_ITER", "KMEX_HEAD_NAME", "is_kmex_space", "kmex_embeddings",
           "fit_kmex_reference"]

#: scikit-learn's ``KMeans`` defaults as KMEx ran them (module docstring).
KMEX_N_INIT = 10
KMEX_MAX_ITER = 300
#: File name (``{name}.npz`` / ``.json`` in the head folder) and method name in the tables.
KMEX_HEAD_NAME = "kmeans_kmex"


def is_kmex_space(blocks: tuple[int, ...], n_blocks: int) -> bool:
    """True for the combination whose pooled embeddings, without normalisation, are KMEx's: the
    deepest block alone (``blocks == (n_blocks,)``, B4 for a ResNet)."""
    return tuple(blocks) == (int(n_blocks),)


def kmex_embeddings(cache, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """KMEx's embeddings ``(train, test)`` from the embedding cache (:mod:`kmx_eval.models.embeddings`):
    the pooled ``z`` of the deepest block ``B{n_blocks}``, without normalisation or block factor."""
    # models.embeddings loads torch: imported here, so that fitting the head on arrays stays light.
    from kmx_eval.models.combination import Combination
    from kmx_eval.models.embeddings import combination_embeddings

    deepest = Combination((int(n_blocks),), "channels")  # one block: its factor is 1
    train, test = (combination_embeddings(cache, s, deepest, "none") for s in ("train", "test"))
    return train, test


def fit_kmex_reference(z_train, y_train, *, n_prototypes: int, seed: int) -> KMeansHead:
    """KMEx's head on raw pooled embeddings ``z_train`` with ground-truth labels ``y_train``.

    ``n_prototypes`` k-means++ prototypes per class (KMEx's ``H``), :data:`KMEX_N_INIT` restarts and
    :data:`KMEX_MAX_ITER` iterations, seeded by ``seed`` (KMEx leaves ``random_state`` unset).
    """
    return KMeansHead(n_prototypes=n_prototypes, n_init=KMEX_N_INIT, max_iter=KMEX_MAX_ITER,
                      random_state=seed).fit(np.asarray(z_train), np.asarray(y_train))
