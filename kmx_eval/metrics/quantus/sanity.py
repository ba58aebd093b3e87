"""The two checks reviewers ask for first (docs/METHOD.md, section 4): parameter randomisation
and stability.

**MPRT** (model-parameter randomisation test, Adebayo et al. 2018; Quantus ``MPRT`` with
``layer_order="top_down"``) at the granularity of the backbone's blocks: the blocks B4, B3, B2, B1
are re-initialised one after the other, cumulatively from the top (each module's own
``reset_parameters``, seeded), the explainer re-explains the same images and target on each
randomised copy, and the score of a sample is the mean over the four steps of the Spearman rank
correlation (Quantus's ``correlation_spearman``) between the original map and the map of the
randomised model. Quantus randomises every layer with parameters (about 70 for a ResNet34), one
re-explanation each; block granularity asks the question of the method (do the k-means maps change
when the features they read are destroyed?) in four. Lower is better; a map unrelated to the
original scores about 0, a map that ignores the model's parameters (the oracle) scores 1. The
random control redraws its values on every call and so scores about 0 too: MPRT is a necessary
check, not a sufficient one. Invariant to a per-image positive affine change of the maps (ranks).

**MaxSensitivity** (Yeh et al. 2019; Quantus ``MaxSensitivity``): the largest relative change
``||e(x) - e(x + d)|| / ||e(x)||`` of the (min-max rescaled) map over ``nr_samples`` uniform input
perturbations ``|d| <= 0.2``. Lower is better.

Both re-explain inputs (as RandomLogit does), so they run on the first ``sanity_images`` images of the
evaluation subset: the cost of a re-explanation is an explainer's (Integrated Gradients: ig_steps
backward passes per image), not one forward pass.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np

#: The backbone's blocks, top-down (torchvision ResNet module names).
BLOCKS_TOP_DOWN = ("layer4", "layer3", "layer2", "layer1")


def block_modules(model) -> dict[str, Any]:
    """The modules of ``model`` named like a ResNet block (``...layer4``), by block name.

    Works for the CNN (``layer4``) and for a k-means head module, whose feature extractor keeps the
    backbone's names (``extractor.body.layer4``, ...).
    """
    found: dict[str, Any] = {}
    for name, module in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in BLOCKS_TOP_DOWN and last not in found:
            found[last] = module
    return found


def randomised_cascade(model, seed: int):
    """Yield ``(block, copy of model with every block from B4 down to ``block`` re-initialised)``."""
    import torch

    randomised = copy.deepcopy(model)
    blocks = block_modules(randomised)
    for k, name in enumerate(b for b in BLOCKS_TOP_DOWN if b in blocks):
        torch.manual_seed(seed + k)
        for sub in blocks[name].modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
        randomised.eval()
        yield name, randomised


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between the rows of ``a`` and ``b`` (n, F); NaN for a constant row."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


class BlockMPRT:
    """A Quantus-style metric object: ``metric(model=..., x_batch=..., y_batch=..., a_batch=...,
    explain_func=..., ...) -> (n,)`` mean Spearman correlation over the block cascade."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.steps: list[str] = []

    def __call__(self, model, x_batch, y_batch, a_batch, explain_func: Callable, **kwargs) -> np.ndarray:
        original = np.asarray(a_batch, dtype=np.float64).reshape(len(x_batch), -1)
        sims = []
        self.steps = []
        for name, randomised in randomised_cascade(model, self.seed):
            maps = explain_func(model=randomised, inputs=x_batch, targets=y_batch)
            sims.append(spearman_rows(original, np.asarray(maps, dtype=np.float64).reshape(len(x_batch), -1)))
            self.steps.append(name)
        if not sims:
            raise ValueError("the model has no ResNet block (layer1..layer4) to randomise")
        return np.mean(np.stack(sims, axis=1), axis=1)
