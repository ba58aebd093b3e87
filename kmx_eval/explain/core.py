"""The explainer interface, its registry, and the evaluation subset.

An explainer (OpenXAI-style) is a class registered in :data:`EXPLAINERS` under its params name, with
two class attributes, ``name`` and ``explains`` (``"kmeans"``: the model is a
:class:`~kmx_eval.heads.module.KMeansHeadModule`; ``"cnn"``: the model is the original CNN, a
torchvision model of a registered architecture), settings given to its constructor, and one method::

    explain(model, x, target) -> np.ndarray (n, H, W) float32, at the input resolution of x

Explanations are always computed from the ``model`` passed in, never from a model remembered at
construction, so that Quantus's randomisation metrics (which pass a copy with randomised layers, or
other targets) measure what they claim to measure. Adding an explainer is one class with
``@register`` and, when it needs settings from params, a ``settings_from`` classmethod.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from kmx_eval.errors import KmxError
from kmx_eval.registry import Registry
from kmx_eval.seeding import rng

from .attribution import upsample

__all__ = [
    "EXPLAINERS",
    "KINDS",
    "ANY",
    "MAP_KEYS",
    "Explainer",
    "register",
    "build_explainer",
    "explainer_names",
    "applicable_explainers",
    "explain",
    "explain_subset",
    "predict",
    "quantus_explain_func",
    "quantus_explain_funcs",
    "evaluation_subset",
    "model_device",
    "eval_mode",
]

#: What an explainer can explain: the k-means head (as an nn.Module) or the original CNN.
KINDS = ("kmeans", "cnn")
#: ``explains`` of a control that runs on every explained model (``random``).
ANY = "any"
#: Arrays of a maps file that are neither attribution maps nor concept maps (docs/ARCHITECTURE.md, "Maps").
MAP_KEYS = ("indices", "targets", "predictions", "labels", "target")

EXPLAINERS: Registry = Registry("explainer")


def is_concept_key(key: str) -> bool:
    """Whether an array of a maps file holds concept maps (not an attribution map)."""
    return key == "concepts" or key.startswith("concepts_")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module with neither)."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


def _as_inputs(model: torch.nn.Module, x: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as a float32 tensor ``(n, 3, H, W)`` on the model's device; targets as ``(n,)`` long."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float32)
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images (n, channels, H, W), got shape {tuple(x.shape)}")
    device = model_device(model)
    x = x.to(device)
    t = torch.as_tensor(np.asarray(target) if not torch.is_tensor(target) else target).long().reshape(-1)
    if t.numel() == 1 and x.shape[0] > 1:
        t = t.expand(x.shape[0])
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"target has {t.shape[0]} entries for {x.shape[0]} images")
    return x, t.to(device)


class Explainer:
    """Base class of every explainer.

    Subclasses set ``name`` and ``explains``, set ``needs_gradient`` when they backpropagate, and
    implement :meth:`attribute`, which returns maps on any grid; :meth:`explain` upsamples them
    (bilinear) to the input size and returns float32 numpy arrays.
    """

    name: ClassVar[str] = ""
    explains: ClassVar[str] = ""
    needs_gradient: ClassVar[bool] = False
    #: Another explainer whose maps equal this one's up to a per-image positive affine change for
    #: every model and target (so every rank-based result, re-explanations included, is shared).
    affine_equivalent_to: ClassVar[str | None] = None

    @classmethod
    def settings_from(cls, explain_cfg: Any, seed: int) -> dict[str, Any]:
        """Constructor settings taken from ``params.explain`` and the repetition's seed."""
        return {}

    @classmethod
    def not_applicable(cls, architecture: Any) -> str | None:
        """Why this explainer cannot explain a CNN of ``architecture`` (``None``: it can).

        The note starts with ``"not applicable: "``; the explain stage then skips the explainer
        and the evaluate stage writes that note instead of scores.
        """
        return None

    def attribute(self, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Attribution maps ``(n, h, w)`` on the explainer's own grid."""
        raise NotImplementedError

    def explain(self, model: torch.nn.Module, x: Any, target: Any) -> np.ndarray:
        """Attribution maps of ``target`` for images ``x``: ``(n, H, W)`` float32 at input resolution.

        Parameters
        ----------
        model : nn.Module
            The model under explanation, in eval mode (see ``explains``).
        x : Tensor or array (n, 3, H, W)
            Normalised images.
        target : Tensor, array or int (n,)
            The explained class of each image.
        """
        x, target = _as_inputs(model, x, target)
        if self.needs_gradient:
            x = x.detach().requires_grad_(True)  # captum would do it too, with a warning each call
        grad = torch.enable_grad() if self.needs_gradient else torch.no_grad()
        with grad:
            maps = self.attribute(model, x, target)
        maps = upsample(maps.detach().float(), tuple(x.shape[-2:]))
        out = maps.cpu().numpy().astype(np.float32, copy=False)
        if not np.isfinite(out).all():
            raise KmxError(
                f"explainer {self.name!r} produced non-finite values (NaN or inf) for "
                f"{int((~np.isfinite(out)).any(axis=(1, 2)).sum())} of {len(out)} images; "
                "check the model's outputs for these images"
            )
        return out

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"


def register(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator: register an explainer under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a class attribute 'name'")
    if cls.explains not in KINDS + (ANY,):
        raise ValueError(f"{cls.__name__}.explains must be one of {KINDS + (ANY,)}, got {cls.explains!r}")
    return EXPLAINERS.register(cls.name)(cls)


def build_explainer(name: str, explain_cfg: Any, seed: int) -> Explainer:
    """Instantiate the explainer ``name`` with its settings from ``params.explain`` and ``seed``."""
    cls = EXPLAINERS.get(name, where="explain.explainers")
    return cls(**cls.settings_from(explain_cfg, seed))


def explainer_names(names: Sequence[str], explains: str) -> list[str]:
    """The names in ``names`` (params order kept) whose explainers explain ``explains`` (controls
    with ``explains = "any"``, such as ``random``, explain every model)."""
    if explains not in KINDS:
        raise ValueError(f"explains must be one of {KINDS}, got {explains!r}")
    return [n for n in names if EXPLAINERS.get(n, where="explain.explainers").explains in (explains, ANY)]


def applicable_explainers(names: Sequence[str], architecture: Any) -> tuple[list[str], dict[str, str]]:
    """Split explainer ``names`` into those that can explain a CNN of ``architecture`` and the rest.

    Returns the applicable names (order kept) and, for each other name, why it is not applicable
    (:meth:`Explainer.not_applicable`, e.g. CAM on a classifier that is not GAP + one linear
    layer): the explain stage skips those explainers and the evaluate stage writes the reason
    in place of their scores, so both must agree on the same split.
    """
    applicable, reasons = [], {}
    for name in names:
        why = EXPLAINERS.get(name).not_applicable(architecture)
        if why is None:
            applicable.append(name)
        else:
            reasons[name] = why
    return applicable, reasons


def explain(
    explainer: Explainer,
    model: torch.nn.Module,
    x: Any,
    *,
    target: Any,
    batch_size: int = 32,
    progress: bool = True,
) -> np.ndarray:
    """Run ``explainer`` over images ``x`` in batches: ``(n, H, W)`` float32.

    Batching only bounds memory: every explainer here treats images independently, except
    ``random``, whose draws continue one seeded stream (same seed and batch size, same maps).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    n = len(x)
    target = np.asarray(target.cpu() if torch.is_tensor(target) else target).reshape(-1)
    out = []
    for start in tqdm(range(0, n, batch_size), desc=f"explain {explainer.name}", disable=not progress,
                      leave=False):
        out.append(explainer.explain(model, x[start:start + batch_size], target[start:start + batch_size]))
    if not out:
        raise ValueError("explain: no images to explain")
    return np.concatenate(out, axis=0)


def predict(model: torch.nn.Module, x: Any, batch_size: int = 32) -> np.ndarray:
    """``argmax_c`` of the model's class scores (logits, or k-means scores ``s_c``): ``(n,)`` int64."""
    preds = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, _ = _as_inputs(model, x[start:start + batch_size], 0)
            preds.append(model(xb).argmax(dim=1).cpu())
    return torch.cat(preds).numpy().astype(np.int64)


def explain_subset(
    model: torch.nn.Module,
    explainers: Mapping[str, Explainer],
    x: Any,
    *,
    targets: Any,
    indices: Any,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """The arrays of a maps file (docs/ARCHITECTURE.md, "Maps") for one model and one seed.

    Returns ``indices`` (n,) positions in the test split, ``targets`` (n,) the explained classes,
    ``predictions`` (n,) the model's own predictions, and one ``(n, H, W)`` float32 map per
    explainer, keyed by its registry name.
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    targets = np.asarray(targets.cpu() if torch.is_tensor(targets) else targets, dtype=np.int64).reshape(-1)
    if not (len(indices) == len(targets) == len(x)):
        raise ValueError(f"explain_subset: {len(x)} images, {len(targets)} targets, {len(indices)} indices")
    reserved = {n for n in explainers if n in MAP_KEYS or is_concept_key(n)}
    if reserved:
        raise ValueError(f"explainer names {sorted(reserved)} clash with the maps file's own keys")
    with eval_mode(model):
        out = {"indices": indices, "targets": targets, "predictions": predict(model, x, batch_size)}
        for name, explainer in explainers.items():
            out[name] = explain(explainer, model, x, target=targets, batch_size=batch_size, progress=progress)
    return out


def quantus_explain_func(explainer: Explainer) -> Callable[..., np.ndarray]:
    """Wrap an explainer as a Quantus ``explain_func``: ``(model, inputs, targets, **kwargs) -> (n, 1, H, W)``.

    ``inputs`` and ``targets`` may be numpy arrays or tensors. The maps are computed from the
    ``model`` Quantus passes (a randomised copy for MPRT, other targets for RandomLogit), so the
    sanity checks test the explainer, not a cached answer. Extra keyword arguments that Quantus
    forwards (``device``, ...) are accepted and ignored: the maps are computed where the model is.
    """

    def explain_func(model: torch.nn.Module, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
        with eval_mode(model):
            maps = explainer.explain(model, inputs, targets)
        return maps[:, None]

    explain_func.__name__ = f"explain_{explainer.name}"
    explain_func.__qualname__ = explain_func.__name__
    return explain_func


def quantus_explain_funcs(explain_cfg: Any, seed: int) -> Callable[[str], Callable[..., np.ndarray] | None]:
    """``method -> explain_func``: the Quantus ``explain_func`` of each explainer of one seed.

    The explainer is built at the call, from ``params.explain`` and the seed that explained the
    maps (:func:`build_explainer`), so that the metrics which re-explain (RandomLogit, MPRT,
    MaxSensitivity) explain as the explain stage did. A map without an explainer (the ``oracle``
    controls) gets ``None``.
    """

    def explain_func_for(method: str) -> Callable[..., np.ndarray] | None:
        return quantus_explain_func(build_explainer(method, explain_cfg, seed)) if method in EXPLAINERS else None

    return explain_func_for


def evaluation_subset(n_test: int, n_images: int, seed: int) -> np.ndarray:
    """The fixed evaluation subset of the test split: sorted positions, ``min(n_images, n_test)`` of them.

    Drawn without replacement from a generator seeded by ``seed`` (the dataset's seed, not the
    training seed), so every seed, combination and the CNN explain the same images and comparisons
    between them are paired.
    """
    if int(n_test) < 1:
        raise KmxError(f"the test split is empty (n_test={n_test}); there is nothing to explain")
    if int(n_images) < 1:
        raise KmxError(f"explain.n_images must be at least 1, got {n_images}")
    n = min(int(n_images), int(n_test))
    chosen = rng(int(seed), "evaluation_subset").choice(int(n_test), size=n, replace=False)
    return np.sort(chosen).astype(np.int64)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Put ``model`` in eval mode for the block, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
