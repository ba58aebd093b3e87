"""One place that seeds every random number generator the suite touches."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's global RNG (Quantus draws from it), and torch (CPU and CUDA).

    Deterministic algorithms are requested where torch has them; ops without a deterministic
    implementation only warn, so that a GPU run is not refused.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def rng(seed: int, *salt: int | str) -> np.random.Generator:
    """A numpy Generator derived from ``seed`` and a salt, so that each use has its own stream."""
    key = [seed] + [int.from_bytes(str(s).encode(), "little") % 2**32 for s in salt]
    return np.random.default_rng(key)
