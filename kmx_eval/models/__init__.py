"""Backbones and their blocks: B1..Bn taps, block combinations F_S and pooled embeddings z_S.

- :mod:`~kmx_eval.models.architectures`: ``Architecture`` descriptions (blocks, classifier, CAM
  layer) in the ``ARCHITECTURES`` registry.
- :mod:`~kmx_eval.models.combination`: block combinations ``S`` (``B4``, ``B234``...).
- :mod:`~kmx_eval.models.backbone`: the CNN under explanation, training, the user's checkpoint,
  safetensors persistence.
- :mod:`~kmx_eval.models.blocks`: ``BlockExtractor`` (``A_1..A_n`` and the logits in one forward),
  ``combine`` (``F_S``), ``pool`` (``z_S``), ``BlockStats``.
- :mod:`~kmx_eval.models.embeddings`: the pooled-embedding cache and ``combination_embeddings``.

The names below are re-exported lazily: ``kmx_eval.config`` imports ``combination`` at start-up
and must not pay for importing torchvision.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Combination": "combination", "parse_combination": "combination",
    "Architecture": "architectures", "ARCHITECTURES": "architectures",
    "register_architecture": "architectures", "architecture_of": "architectures",
    "build_backbone": "backbone", "train_backbone": "backbone", "load_checkpoint": "backbone",
    "checkpoint_sha256": "backbone", "classifier_of": "backbone",
    "evaluate_backbone": "backbone", "save_backbone": "backbone", "load_backbone": "backbone",
    "BlockExtractor": "blocks", "BlockStats": "blocks", "BlockStatsAccumulator": "blocks",
    "combine": "blocks", "pool": "blocks", "normalise_block": "blocks", "resize_to": "blocks",
    "extract_embedding_cache": "embeddings", "combination_embeddings": "embeddings",
    "pooling_weights": "embeddings", "load_block_stats": "embeddings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
