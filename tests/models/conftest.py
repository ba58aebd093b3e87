"""Tiny in-memory images and a tiny ResNet18 for the models tests (no kmx_eval.data needed)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from kmx_eval.seeding import seed_everything


class TinyImages(Dataset):
    """Items ``(x float32 (3, H, W), label, index)``, the contract of ``kmx_eval.data.ImageDataset``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i]), i


def tiny_images(n: int, size: int = 32, n_classes: int = 2, seed: int = 0) -> TinyImages:
    """Class c has a bright square in quadrant c over noise: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    x = 0.3 * torch.randn(n, 3, size, size, generator=g)
    half = size // 2
    for i, c in enumerate(y.tolist()):
        r, col = divmod(c % 4, 2)
        x[i, :, r * half:(r + 1) * half, col * half:(col + 1) * half] += 1.5
    return TinyImages(x, y)


@pytest.fixture
def tiny_resnet18():
    """A randomly initialised ResNet18 with 3 classes, in eval mode."""
    from kmx_eval.models.backbone import build_backbone

    seed_everything(0)
    return build_backbone("resnet18", 3).eval()


@pytest.fixture
def make_images():
    """Factory ``make_images(n, size=32, n_classes=2, seed=0) -> TinyImages``."""
    return tiny_images
