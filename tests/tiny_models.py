"""Tiny models shared by the models, explain and pipeline tests (fixtures imported by their conftests).

- ``tiny_resnet18`` / ``make_images``: a random ResNet18 with 3 classes and learnable in-memory images
  (no kmx_eval.data needed);
- ``resnet18`` / ``images`` / ``kmeans_module``: a random ResNet18 with random BatchNorm statistics,
  four 64 px images and a k-means head module of combination B234 on it.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.utils.data import Dataset

from kmx_eval.models.combination import Combination, parse_combination
from kmx_eval.seeding import seed_everything

N_CLASSES = 3
SIZE = 64  # B4 is a 2x2 grid, B2 an 8x8 grid: enough for maps with structure, still fast on CPU


def comb(name: str) -> Combination:
    """The combination ``name`` as a study with the schema's default ``features.block_weighting``
    (``channels``) gets it from ``Params.combination``; a suffix (``B234_balanced``) wins."""
    return parse_combination(name, weighting="channels")


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


@pytest.fixture(scope="session")
def resnet18():
    """A randomly initialised torchvision ResNet18 with a 3-class fc, in eval mode."""
    seed_everything(0)
    model = torchvision.models.resnet18(num_classes=N_CLASSES).eval()
    # Random BatchNorm statistics make the activations larger and less uniform than at init.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="session")
def images():
    """Four normalised 64 px images."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, SIZE, SIZE, generator=g)


@pytest.fixture(scope="session")
def kmeans_module(resnet18, images):
    """The k-means head of combination B234 (standardize) on the ResNet18, 2 prototypes per class.

    Prototypes are pooled embeddings of perturbed copies of the test images, so they sit where the
    data is and the runner-up class is not decided by a huge gap.
    """
    from kmx_eval.heads import KMeansHeadModule
    from kmx_eval.models.blocks import BlockExtractor, BlockStats, pool

    extractor = BlockExtractor(resnet18, blocks=(2, 3, 4), logits=False)
    with torch.no_grad():
        stats = BlockStats.from_arrays(extractor(images))
        probe = KMeansHeadModule(extractor, comb("B234"), "standardize", stats,
                                 torch.zeros(N_CLASSES, 2, 448), "bilinear")
        g = torch.Generator().manual_seed(2)
        noisy = images.repeat(2, 1, 1, 1)[: N_CLASSES * 2] + 0.5 * torch.randn(
            N_CLASSES * 2, 3, SIZE, SIZE, generator=g)
        prototypes = pool(probe.features(noisy)).reshape(N_CLASSES, 2, -1)
    return KMeansHeadModule(extractor, comb("B234"), "standardize", stats, prototypes, "bilinear")
