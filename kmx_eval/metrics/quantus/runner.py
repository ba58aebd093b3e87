"""Run one Quantus metric on one explainer's maps, one value per sample, with reasons.

- ``softmax`` comes from :class:`~.settings.QuantusSettings` and is passed explicitly to every call.
- ``np.random.seed(seed)`` right before every Quantus call (perturbations draw from the global
  RNG), so the same seed gives the same scores.
- A map that is not finite or is constant (all zero included) is NaN with its reason; localisation
  skips empty masks and masks that cover the whole image (Quantus scores an empty mask as a
  PointingGame hit). If Quantus still raises on the batch, every sample is retried alone.
"""

from __future__ import annotations

import hashlib
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from kmx_eval.errors import KmxError
from kmx_eval.metrics.faithfulness import pixel_grid

from .scaling import SCALING_NOTES, SCALINGS, map_problems, mask_problems
from .settings import QuantusSettings
from .spec import QUANTUS_METRICS, Built, QuantusSpec

if TYPE_CHECKING:
    import torch

#: Exceptions that Quantus raises for data it cannot score (assertions on maps and masks, NumPy
#: shape errors on degenerate samples) and that an explainer raises for an input it cannot explain
#: (KmxError, e.g. non-finite maps for RandomLogit's other class); anything else propagates.
SAMPLE_ERRORS = (AssertionError, ValueError, FloatingPointError, ZeroDivisionError, IndexError, KmxError)

NO_MASKS = "not applicable: dataset has no masks"

#: The reference class scores already computed in this process, per model: every explainer of an
#: evaluate stage is scored on the same model, images and targets, so ``f(x)_y`` (and the fully
#: perturbed one) is computed once, not once per explainer and faithfulness metric (a sixth of the
#: stage's forward passes on B4). Keyed by the exact inputs and the model's current weights
#: (:func:`_weights_fingerprint`: a model changed in place is a new key), so a hit returns the bytes a
#: new call would (the same call on the same batch); weak, so a model's entries go with it.
_REFERENCES: "weakref.WeakKeyDictionary[Any, dict[tuple, np.ndarray]]" = weakref.WeakKeyDictionary()


def rescaled_explain_func(explain_func: Callable, scaling: str = "rank") -> Callable:
    """Wrap a Quantus ``explain_func`` so that its maps are (n, H, W) and rescaled like the
    stored maps (:data:`~.scaling.SCALINGS`)."""

    def wrapped(model, inputs, targets, **kwargs):
        a = explain_func(model=model, inputs=inputs, targets=targets, **kwargs)
        if hasattr(a, "detach"):  # a torch tensor
            a = a.detach().cpu().numpy()
        a = np.asarray(a, dtype=np.float32)
        if a.ndim == 4:  # (n, 1, H, W) or channel-wise maps: sum the channels
            a = a.sum(axis=1)
        return SCALINGS[scaling](a)

    return wrapped


def class_scores(model: "torch.nn.Module", x: np.ndarray, y: np.ndarray, *, softmax: bool, device: str,
                 batch_size: int) -> np.ndarray:
    """``f(x)_y`` through Quantus's own model wrapper, so it matches the perturbed scores."""
    # quantus takes seconds to import: the metric registry (read by the resolve stage) must not need it
    from quantus.helpers.utils import get_wrapped_model

    wrapped = get_wrapped_model(model, channel_first=True, softmax=softmax, device=device)
    out = []
    for start in range(0, len(x), batch_size):
        pred = wrapped.predict(x[start:start + batch_size])
        out.append(pred[np.arange(len(pred)), y[start:start + batch_size]])
    return np.concatenate(out).astype(np.float64)


def fully_perturbed(x: np.ndarray, perturb_baseline: str) -> np.ndarray:
    """``x`` with every value replaced by Quantus's ``perturb_baseline`` (per sample, as the
    perturbation metrics replace them): the end point of a perturbation curve."""
    # quantus takes seconds to import: the metric registry (read by the resolve stage) must not need it
    from quantus.functions.perturb_func import batch_baseline_replacement_by_indices

    flat = x.reshape(len(x), -1)
    everything = np.tile(np.arange(flat.shape[1]), (len(x), 1))
    out = batch_baseline_replacement_by_indices(flat, everything, perturb_baseline=perturb_baseline)
    return np.ascontiguousarray(out.reshape(x.shape).astype(np.float32))


@dataclass
class QuantusRun:
    """What one :func:`run_quantus` call ran and measured, beside its scores.

    ``settings``: what was run (the metric's settings, ``n_images``, ``softmax``, ``map_scaling``);
    ``seconds``: time spent scoring (0 when nothing could be); ``chance``: per-sample chance level
    (localisation metrics with masks), else None; for metrics with curves (PixelFlipping)
    ``fractions`` (L+1,) and, once scored, ``curves`` (n, L+1) with NaN rows for missing samples.
    """

    settings: dict[str, Any]
    seconds: float = 0.0
    chance: np.ndarray | None = None
    fractions: np.ndarray | None = None
    curves: np.ndarray | None = None


@dataclass
class _Scorer:
    """One metric's Quantus call on a subset ``ix`` of the samples, its fixed inputs bound once."""

    spec: QuantusSpec
    built: Built
    model: "torch.nn.Module"
    x: np.ndarray
    y: np.ndarray
    a_scaled: np.ndarray
    masks: np.ndarray | None
    explain_func: Callable | None
    settings: QuantusSettings
    seed: int
    device: str
    batch_size: int

    def __call__(self, ix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        softmax = bool(self.settings.softmax)
        s_batch = None if self.masks is None else self.masks[ix][:, None]
        np.random.seed(self.seed % 2**32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = self.built.metric(model=self.model, x_batch=self.x[ix], y_batch=self.y[ix],
                                    a_batch=self.a_scaled[ix].copy()[:, None], s_batch=s_batch,
                                    channel_first=True, explain_func=self.explain_func, softmax=softmax,
                                    device=self.device, batch_size=self.batch_size)
        scores, curves = self.built.finish(raw, self._reference(ix, softmax))
        if self.spec.magnitude:  # a similarity read as its size: anti-correlation is no merit (spec)
            scores = np.abs(np.asarray(scores, dtype=np.float64))
        return scores, curves

    def _reference(self, ix: np.ndarray, softmax: bool) -> dict[str, np.ndarray] | None:
        """The unperturbed (and, when the spec asks, fully perturbed) class scores of ``ix``."""
        if not self.spec.needs_reference:
            return None
        scored = dict(softmax=softmax, device=self.device, batch_size=self.batch_size)
        reference = {"original": reference_scores(self.model, self.x[ix], self.y[ix], **scored)}
        if self.spec.needs_reference == "both":  # the curve does not end fully perturbed (RegionPerturbation)
            np.random.seed(self.seed % 2**32)
            x_base = fully_perturbed(self.x[ix], self.settings.perturb_baseline)
            reference["perturbed"] = reference_scores(self.model, x_base, self.y[ix], **scored)
        return reference


def reference_scores(model: "torch.nn.Module", x: np.ndarray, y: np.ndarray, *, softmax: bool, device: str,
                     batch_size: int) -> np.ndarray:
    """:func:`class_scores` of ``x``, computed once per model, inputs, targets and settings in this
    process (:data:`_REFERENCES`); a copy, so a caller cannot change the cached values."""
    key = (hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(), x.shape, x.dtype.str,
           np.asarray(y).tobytes(), bool(softmax), str(device), int(batch_size), _weights_fingerprint(model))
    cached = _REFERENCES.setdefault(model, {})
    if key not in cached:
        cached[key] = class_scores(model, x, y, softmax=softmax, device=device, batch_size=batch_size)
    return cached[key].copy()


def _weights_fingerprint(model: "torch.nn.Module") -> tuple[float, ...]:
    """The sum and absolute sum of every parameter and buffer of ``model``, in float64: 0.05-0.1 s for
    a ResNet34 on two cores, against a forward pass of the evaluation images per reference it spares,
    and a change in place of a parameter or buffer (through ``.data`` too, which torch's version
    counters miss) changes it. What a module holds outside its parameters and buffers is not seen:
    the k-means head module registers its prototypes as a buffer, and its normalisation statistics
    are fixed when it is built (:mod:`kmx_eval.heads.module`)."""
    import torch  # torch: the metric registry, imported by the resolve stage, stays free of it

    with torch.no_grad():
        sums = [(float(t.double().sum()), float(t.double().abs().sum()))
                for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    return tuple(v for pair in sums for v in pair)


def _checked_inputs(name: str, x, y, a) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x`` float32 contiguous, ``y`` int64 (n,), ``a`` float32; a ValueError unless the shapes fit."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    y = np.asarray(y).astype(np.int64).ravel()
    a = np.asarray(a, dtype=np.float32)
    n = len(x)
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise ValueError(f"{name}: inputs must be square images (n, C, H, H), got {x.shape}")
    if a.shape != (n, *x.shape[2:]) or y.shape != (n,):
        raise ValueError(f"{name}: maps {a.shape} and targets {y.shape} must be (n, H, W) and (n,) "
                         f"for inputs {x.shape}")
    return x, y, a


def _output_width(model: "torch.nn.Module", x: np.ndarray, device: str) -> int:
    """The number of classes ``model`` scores (its output width on the first input)."""
    import torch  # torch: the metric registry, imported by the resolve stage, stays free of it

    with torch.no_grad():
        return int(model(torch.from_numpy(x[:1]).to(device)).shape[1])


def _unscorable(spec: QuantusSpec, explain_func: Callable | None, n_classes: int) -> str | None:
    """Why no sample can be scored by a metric that needs an explanation function, if none can."""
    if not spec.needs_explain_func:
        return None
    if explain_func is None:
        return "no explanation function for this explainer"
    if n_classes < 2:
        return "needs at least two classes"
    return None


def _score_samples(scorer: _Scorer, idx: np.ndarray, scores: np.ndarray, reasons: list[str | None],
                   curves: np.ndarray | None) -> None:
    """Score the samples ``idx`` in one batch into ``scores`` (and ``curves``), retrying each alone if
    Quantus raises on the batch; a sample that fails alone, or scores NaN, gets its reason."""
    if idx.size:
        try:
            out, out_curves = scorer(idx)
            scores[idx] = out
            if curves is not None:
                curves[idx] = out_curves
        except SAMPLE_ERRORS:
            for i in idx:  # one bad sample must not cost the batch: retry each alone
                try:
                    out, out_curves = scorer(np.array([i]))
                    scores[i] = out[0]
                    if curves is not None:
                        curves[i] = out_curves[0]
                except SAMPLE_ERRORS as exc:
                    msg = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
                    reasons[i] = f"quantus {type(exc).__name__}: {msg}".rstrip(": ")
    for i in idx:
        if reasons[i] is None and not np.isfinite(scores[i]):
            scores[i] = np.nan
            reasons[i] = scorer.built.nan_reason or "undefined for this sample (Quantus returned NaN)"


def run_quantus(name: str, model: "torch.nn.Module", x: np.ndarray, y: np.ndarray, a: np.ndarray,
                s: np.ndarray | None, *, settings: QuantusSettings, seed: int, device: str = "cpu",
                explain_func: Callable | None = None, n_classes: int | None = None,
                batch_size: int = 64, grid: tuple[int, int] | None = None) -> tuple[np.ndarray, list[str | None], QuantusRun]:
    """Score one explainer's maps with Quantus metric ``name`` (a key of :data:`~.spec.QUANTUS_METRICS`),
    one value per sample; ``np.random.seed(seed)`` runs right before every Quantus call.

    ``model`` (k-means head module or CNN) is put in eval mode here, already on ``device`` (Quantus
    moves inputs, not the model). ``x`` (n, 3, H, H): normalised inputs; ``y`` (n,): explained
    classes; ``a`` (n, H, W): maps at input resolution (any sign; rescaled per the spec's
    ``scaling``); ``s`` (n, H, W) 0/1 object masks or None when the dataset has none.
    ``explain_func``: Quantus-style ``explain_func(model, inputs, targets, **kw) -> (n, H, W)`` of the
    same explainer, needed by metrics with ``needs_explain_func``; ``n_classes`` (RandomLogit)
    defaults to ``model``'s output width. ``grid`` (gh, gw): the grid the maps live on, for metrics
    that perturb its cells (``needs_grid``); None: the fixed ``pixel_grid`` patch grid.

    Returns ``scores`` (n,) float, NaN where a sample was not scored; ``reasons``, why each NaN is
    missing (None for scored samples); and the :class:`QuantusRun`.
    """
    spec = QUANTUS_METRICS.get(name)
    x, y, a = _checked_inputs(name, x, y, a)
    n, device = len(x), str(device)
    model.eval()
    if n_classes is None:
        n_classes = _output_width(model, x, device)
    build_args = dict(n_channels=x.shape[1], n_classes=n_classes, seed=seed)
    if spec.needs_grid:
        build_args["grid"] = tuple(grid) if grid is not None else pixel_grid(x.shape[2], settings.pixel_grid)
    built = spec.build(settings, x.shape[2], **build_args)
    run = QuantusRun({**built.settings, "n_images": n, "softmax": bool(settings.softmax),
                      "map_scaling": SCALING_NOTES[spec.scaling]}, fractions=built.fractions)
    scores = np.full(n, np.nan)
    reasons: list[str | None] = list(map_problems(a, spec.scaling))
    masks = None
    if spec.needs_masks:
        if s is None:
            return scores, [NO_MASKS] * n, run
        masks = (np.asarray(s) > 0).astype(np.uint8)
        if masks.shape != a.shape:
            raise ValueError(f"{name}: masks {masks.shape} must match the maps {a.shape}")
        run.chance = spec.chance(masks) if spec.chance else None
        reasons = [r or m for r, m in zip(reasons, mask_problems(masks))]
    if (why := _unscorable(spec, explain_func, n_classes)) is not None:
        return scores, [why] * n, run
    if spec.subset and n > settings.sanity_images:
        outside = f"outside the first {settings.sanity_images} images (evaluate.sanity.n_images)"
        reasons = [r if i < settings.sanity_images else outside for i, r in enumerate(reasons)]
        run.settings["n_images"] = settings.sanity_images
    start_time = time.perf_counter()
    efunc = rescaled_explain_func(explain_func, spec.scaling) if spec.needs_explain_func else None
    scorer = _Scorer(spec, built, model, x, y, SCALINGS[spec.scaling](a), masks, efunc, settings, seed,
                     device, batch_size)
    curves = None if built.fractions is None else np.full((n, len(built.fractions)), np.nan)
    _score_samples(scorer, np.flatnonzero([r is None for r in reasons]), scores, reasons, curves)
    run.seconds, run.curves = time.perf_counter() - start_time, curves
    return scores, reasons, run
