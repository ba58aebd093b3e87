"""The two checks reviewers ask for first (docs/METHOD.md, section 4): parameter randomisation
and stability.

**MPRT** (model-parameter randomisation test, Adebayo et al. 2018; Quantus ``MPRT`` with
``layer_order="top_down"``) at the granularity of the backbone's blocks: the blocks B4, B3, B2, B1
are re-initialised one after the other, cumulatively from the top (each module's own
``reset_parameters``, seeded), the explainer re-explains the same images and target on each
randomised copy, and the score of a sample is the mean over the four steps of ``|rho|``, the
magnitude of the Spearman rank correlation (Quantus's ``correlation_spearman``) between the
original map and the map of the randomised model. Quantus randomises every layer with parameters
(about 70 for a ResNet34), one re-explanation each; block granularity asks the question of the
method (do the k-means maps change when the features they read are destroyed?) in four. The spec
declares the score a magnitude (``QuantusSpec.magnitude``; docs/METHOD.md, section 6, "Sanity and
stability"), taken per step so that an anti-correlated step and a correlated one do not cancel.
Lower is better: a map unrelated to the original scores about 0, a map that ignores the model's
parameters (the oracle) scores 1, and an anti-correlated map (rho = -0.34) scores 0.34 like a
correlated one, since the original map predicts it just as well. The random control redraws its
values on every call and so scores about 0 too: MPRT is a necessary check, not a sufficient one.
Invariant to a per-image positive affine change of the maps (ranks).

**MaxSensitivity** (Yeh et al. 2019; Quantus ``MaxSensitivity``): the largest relative change
``||e(x) - e(x + d)|| / ||e(x)||`` of the (min-max rescaled) map over ``nr_samples`` uniform input
perturbations ``|d| <= 0.2``. Lower is better.

Both re-explain inputs (as RandomLogit does), so they run on the first ``sanity_images`` images of the
evaluation subset: the cost of a re-explanation is an explainer's (Integrated Gradients: ig_steps
backward passes per image), not one forward pass.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import numpy as np
from scipy.stats import rankdata
import torch

from kmx_eval.models.architectures import architecture_of


def explained_backbone(model):
    """``(architecture, backbone)`` of a model under explanation: the CNN itself, or the backbone a
    k-means head module reads through its block extractor."""
    for module in model.modules():
        arch = getattr(module, "architecture", None)
        if arch is not None and hasattr(module, "backbone"):
            return arch, module.backbone
    return architecture_of(model), model


def block_groups(backbone, blocks: Sequence[str], classifier: str | None = None) -> list[tuple[str, list]]:
    """The resettable modules of each block B1..Bn of ``backbone``, in order.

    Block b owns every module after block b-1's node and up to the end of its own node (the node's
    submodules included), so the stem belongs to B1 and a VGG block's convolutions belong to the
    block whose pooling node ends them. A node that is not a module (DenseNet's final ``relu``) ends
    where the classifier starts. The classifier belongs to no block: MPRT asks whether the maps
    depend on the features.
    """
    named = list(backbone.named_modules())

    def inside(name: str, node: str) -> bool:
        return name == node or name.startswith(node + ".")

    in_classifier = [bool(classifier) and inside(n, classifier) for n, _ in named]
    ends = []
    for node in blocks:
        idx = [i for i, (n, _) in enumerate(named) if inside(n, node)]
        if idx:
            ends.append(idx[-1])
        else:  # a functional node: everything before the classifier
            ends.append(max(i for i, c in enumerate(in_classifier) if not c))
    groups, start = [], 0
    for b, end in enumerate(ends, start=1):
        mods = [m for i, (n, m) in enumerate(named[start:end + 1], start=start)
                if not in_classifier[i] and hasattr(m, "reset_parameters") and not list(m.children())]
        groups.append((f"B{b}", mods))
        start = end + 1
    return groups


def randomised_cascade(model, seed: int):
    """Yield ``(block, copy of model with every block from the deepest down to ``block`` re-initialised)``.

    The blocks come from the model's registered architecture (:mod:`kmx_eval.models.architectures`),
    so the cascade is B4, B3, B2, B1 for a ResNet and B5..B1 for a VGG.
    """
    randomised = copy.deepcopy(model)
    arch, backbone = explained_backbone(randomised)
    groups = block_groups(backbone, arch.blocks, arch.classifier)
    for k, (name, modules) in enumerate(reversed(groups)):
        torch.manual_seed(seed + k)
        for module in modules:
            module.reset_parameters()
        randomised.eval()
        yield name, randomised


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between the rows of ``a`` and ``b`` (n, F); NaN for a constant row."""
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


class BlockMPRT:
    """A Quantus-style metric object: ``metric(model=..., x_batch=..., y_batch=..., a_batch=...,
    explain_func=..., ...) -> (n,)`` mean over the block cascade of ``|rho|``, the magnitude of the
    Spearman correlation (module docstring)."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.steps: list[str] = []

    def __call__(self, model, x_batch, y_batch, a_batch, explain_func: Callable, **kwargs) -> np.ndarray:
        original = np.asarray(a_batch, dtype=np.float64).reshape(len(x_batch), -1)
        sims = []
        self.steps = []
        for name, randomised in randomised_cascade(model, self.seed):
            maps = explain_func(model=randomised, inputs=x_batch, targets=y_batch)
            maps = np.asarray(maps, dtype=np.float64).reshape(len(x_batch), -1)
            sims.append(np.abs(spearman_rows(original, maps)))
            self.steps.append(name)
        if not sims:
            raise ValueError("the model's architecture has no block to randomise")
        return np.mean(np.stack(sims, axis=1), axis=1)
