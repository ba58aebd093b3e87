"""What the suite needs to know about a CNN architecture, in one registration per architecture.

A k-means explanation (docs/METHOD.md, section 1) reads the outputs ``A_1 .. A_n`` of the CNN's
blocks B1..Bn and compares the k-means head with the CNN's own classifier (section 2). An
:class:`Architecture` says, for one torchvision builder:

- ``blocks``: the nodes whose outputs are B1..Bn, as
  :func:`torchvision.models.feature_extraction.create_feature_extractor` node names
  (``get_graph_node_names`` lists them), shallowest first;
- ``classifier``: the module path of the final ``nn.Linear``, whose output is the logits and which
  :meth:`Architecture.build` replaces by a fresh ``Linear(in_features, n_classes)``;
- ``cam_layer``: the node whose output CAM and Grad-CAM read (the last convolutional feature map);
- ``gap_linear``: whether the classifier is global average pooling of the deepest block followed
  by that one linear layer, ``logit_c = <w_c, mean_ij A_n[:, i, j]> + b_c``. Only then is the
  classifier a nearest-prototype model with prototypes ``w_c`` in the space of ``z_n`` (section 2)
  and CAM's map ``<w_c, a_ij> + b_c`` complete (its mean is the logit). ``classifier_note`` says
  why not, where it is not.

Channel counts, strides and grid sizes are never typed in: :meth:`Architecture.shapes` runs the
feature extractor once on the ``meta`` device (no memory, no arithmetic) and reads them off.

Registering an architecture is one call::

    register_architecture(Architecture(
        "resnet101", torchvision.models.resnet101,
        blocks=("layer1", "layer2", "layer3", "layer4"), classifier="fc", cam_layer="layer4",
        gap_linear=True))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from kmx_eval.errors import ParamsError
from kmx_eval.registry import Registry

#: The attribute :meth:`Architecture.build` sets on a model to name its architecture.
TAG = "kmx_architecture"
#: Image size at which strides are read (every registered stride divides it).
REFERENCE_SIZE = 224


@dataclass(frozen=True)
class Architecture:
    """One CNN architecture (see the module docstring for the meaning of each field).

    Parameters
    ----------
    name : str
        The ``backbone.architecture`` value.
    builder : callable
        ``builder(weights=None | str) -> nn.Module``: a torchvision model builder.
    blocks : tuple of str
        Feature-extraction node names of B1..Bn (at most 9), shallowest first.
    classifier : str
        Module path of the final linear layer (its output is the model's output).
    cam_layer : str
        Node whose output CAM and Grad-CAM read.
    gap_linear : bool
        The classifier is ``Linear(mean_ij A_n)`` with ``A_n`` the output of the last block.
    classifier_note : str
        Why the classifier is not global average pooling + one linear layer (when it is not).
    """

    name: str
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)
    blocks: tuple[str, ...]
    classifier: str
    cam_layer: str
    gap_linear: bool
    classifier_note: str = ""

    def __post_init__(self):
        if not 1 <= len(self.blocks) <= 9:
            raise ValueError(f"{self.name}: an architecture has 1 to 9 blocks (B1..B9), got {len(self.blocks)}")
        if not self.gap_linear and not self.classifier_note:
            raise ValueError(f"{self.name}: say in classifier_note why the classifier is not GAP + linear")

    # ------------------------------------------------------------------ blocks
    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def block_numbers(self) -> tuple[int, ...]:
        """``(1, ..., n)``."""
        return tuple(range(1, self.n_blocks + 1))

    def node(self, block: int) -> str:
        """Feature-extraction node name of block ``B{block}``."""
        if block not in self.block_numbers:
            raise ParamsError(f"{self.name} has no block B{block}; its blocks: {self.block_list()}")
        return self.blocks[block - 1]

    def block_list(self) -> str:
        return ", ".join(f"B{b}" for b in self.block_numbers)

    def check_blocks(self, blocks, name: str, where: str) -> None:
        """Raise :class:`ParamsError` naming ``where`` when ``blocks`` uses a block this architecture lacks."""
        missing = [b for b in blocks if b not in self.block_numbers]
        if missing:
            raise ParamsError(f"{where}: block combination {name!r} uses B{missing[0]}, which "
                              f"{self.name} does not have; its blocks: {self.block_list()}")

    def shapes(self, image_size: int = REFERENCE_SIZE) -> dict[int, tuple[int, int, int]]:
        """``{b: (C_b, H_b, W_b)}`` for a square ``image_size`` input, from a meta-device forward."""
        return dict(_meta_shapes(self, int(image_size)))

    @property
    def channels(self) -> dict[int, int]:
        """``{b: C_b}``."""
        return {b: s[0] for b, s in self.shapes().items()}

    @property
    def strides(self) -> dict[int, int]:
        """``{b: input pixels per grid cell of A_b}`` (read at :data:`REFERENCE_SIZE`)."""
        return {b: REFERENCE_SIZE // s[1] for b, s in self.shapes().items()}

    @property
    def min_image_size(self) -> int:
        """The deepest block's stride: a smaller image leaves that block no grid cell."""
        return max(self.strides.values())

    # ------------------------------------------------------------------ models
    def build(self, n_classes: int, weights: str | None = None) -> nn.Module:
        """The torchvision model with a fresh ``Linear(in_features, n_classes)`` classifier, tagged."""
        model = self.builder(weights=weights)
        old = self.classifier_of(model)
        parent, _, leaf = self.classifier.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf,
                nn.Linear(old.in_features, int(n_classes)))
        setattr(model, TAG, self.name)
        return model

    def classifier_of(self, model: nn.Module) -> nn.Linear:
        """The final linear layer of ``model``."""
        layer = model.get_submodule(self.classifier)
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"{self.name}: {self.classifier} is a {type(layer).__name__}, not nn.Linear")
        return layer

    def not_gap_linear_reason(self) -> str | None:
        """``None`` when the classifier is GAP + one linear layer, else the reason it is not."""
        return None if self.gap_linear else f"{self.name}'s classifier is not GAP + one linear layer ({self.classifier_note})"


@functools.lru_cache(maxsize=None)
def meta_model(arch: Architecture) -> nn.Module:
    """``arch`` built on the meta device (parameter names and shapes, no memory), once per architecture:
    what its blocks and parameter names are, read without building weights."""
    with torch.device("meta"):
        return arch.build(2).eval()


@functools.lru_cache(maxsize=None)
def _meta_shapes(arch: Architecture, image_size: int) -> tuple:
    body = create_feature_extractor(meta_model(arch), {n: str(b) for b, n in zip(arch.block_numbers, arch.blocks)})
    with torch.no_grad():
        out = body(torch.empty(1, 3, image_size, image_size, device="meta"))
    return tuple((b, tuple(int(d) for d in out[str(b)].shape[1:])) for b in arch.block_numbers)


#: ``backbone.architecture`` -> :class:`Architecture`.
ARCHITECTURES: Registry[Architecture] = Registry("backbone architecture")


def register_architecture(arch: Architecture) -> Architecture:
    """Add ``arch`` to :data:`ARCHITECTURES` under its name."""
    return ARCHITECTURES.register(arch.name)(arch)


def get_architecture(name: str, where: str = "backbone.architecture") -> Architecture:
    return ARCHITECTURES.get(name, where=where)


def architecture_of(model: nn.Module) -> Architecture:
    """The registered architecture of ``model``.

    A model built by :meth:`Architecture.build` carries its name; any other torchvision model is
    matched by class and by the names and shapes of its parameters (classifier excluded).
    """
    name = getattr(model, TAG, None)
    if name is not None:
        return ARCHITECTURES.get(name)
    for arch in (ARCHITECTURES.get(n) for n in ARCHITECTURES.names()):
        meta = meta_model(arch)
        if type(meta) is not type(model):
            continue
        skip = arch.classifier + "."
        want = {k: tuple(v.shape) for k, v in meta.state_dict().items() if not k.startswith(skip)}
        have = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith(skip)}
        if want == have:
            return arch
    raise ParamsError(f"a {type(model).__name__} matches no registered architecture; "
                      f"registered: {', '.join(ARCHITECTURES.names())}")


_RESNET = dict(blocks=("layer1", "layer2", "layer3", "layer4"), classifier="fc", cam_layer="layer4",
               gap_linear=True)
register_architecture(Architecture("resnet18", torchvision.models.resnet18, **_RESNET))
register_architecture(Architecture("resnet34", torchvision.models.resnet34, **_RESNET))
register_architecture(Architecture("resnet50", torchvision.models.resnet50, **_RESNET))
register_architecture(Architecture(
    "vgg16_bn", torchvision.models.vgg16_bn,
    # The five max-pool outputs (strides 2..32); Grad-CAM reads the last convolution's ReLU.
    blocks=("features.6", "features.13", "features.23", "features.33", "features.43"),
    classifier="classifier.6", cam_layer="features.42", gap_linear=False,
    classifier_note="7x7 adaptive average pooling, then three linear layers with ReLU and dropout"))
register_architecture(Architecture(
    "densenet121", torchvision.models.densenet121,
    # B4 is ReLU(norm5(denseblock4)), the map the classifier pools.
    blocks=("features.denseblock1", "features.denseblock2", "features.denseblock3", "relu"),
    classifier="classifier", cam_layer="relu", gap_linear=True))
register_architecture(Architecture(
    "efficientnet_b0", torchvision.models.efficientnet_b0,
    # Stage outputs at strides 4, 8, 16 and the final 1x1 convolution (1280 channels, stride 32)
    # that the classifier pools; dropout before the linear layer is the identity in eval mode.
    blocks=("features.2", "features.3", "features.5", "features.8"),
    classifier="classifier.1", cam_layer="features.8", gap_linear=True))
