"""Run one Quantus metric on one explainer's maps, one value per sample, with reasons.

- ``softmax`` comes from :class:`~.settings.QuantusSettings` and is passed explicitly to every call.
- ``np.random.seed(seed)`` right before every Quantus call (perturbations draw from the global
  RNG), so the same seed gives the same scores.
- A map that is not finite or is constant (all zero included) is NaN with its reason; localisation
  skips empty masks and masks that cover the whole image (Quantus scores an empty mask as a
  PointingGame hit). If Quantus still raises on the batch, every sample is retried alone.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from kmx_eval.errors import KmxError

from .scaling import SCALING_NOTES, SCALINGS, map_problems, mask_problems
from .settings import QuantusSettings
from .spec import QUANTUS_METRICS

if TYPE_CHECKING:
    import torch

#: Exceptions that Quantus raises for data it cannot score (assertions on maps and masks, NumPy
#: shape errors on degenerate samples) and that an explainer raises for an input it cannot explain
#: (KmxError, e.g. non-finite maps for RandomLogit's other class); anything else propagates.
SAMPLE_ERRORS = (AssertionError, ValueError, FloatingPointError, ZeroDivisionError, IndexError, KmxError)

NO_MASKS = "not applicable: dataset has no masks"


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


def class_scores(model: "torch.nn.Module", x: np.ndarray, y: np.ndarray, softmax: bool, device: str,
                 batch_size: int) -> np.ndarray:
    """``f(x)_y`` through Quantus's own model wrapper, so it matches the perturbed scores."""
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
    from quantus.functions.perturb_func import batch_baseline_replacement_by_indices

    flat = x.reshape(len(x), -1)
    everything = np.tile(np.arange(flat.shape[1]), (len(x), 1))
    out = batch_baseline_replacement_by_indices(flat, everything, perturb_baseline=perturb_baseline)
    return np.ascontiguousarray(out.reshape(x.shape).astype(np.float32))


def run_quantus(
    name: str,
    model: "torch.nn.Module",
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    s: np.ndarray | None,
    settings: QuantusSettings,
    seed: int,
    device: str = "cpu",
    explain_func: Callable | None = None,
    *,
    n_classes: int | None = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, list[str | None], dict[str, Any]]:
    """Score one explainer's maps with Quantus metric ``name``, one value per sample.

    Parameters
    ----------
    name : str
        Key of :data:`~.spec.QUANTUS_METRICS`.
    model : torch.nn.Module
        The model under explanation (k-means head module or CNN); put in eval mode here, already
        on ``device`` (Quantus moves inputs, not the model).
    x : float array (n, 3, H, W)
        Normalised inputs, square.
    y : int array (n,)
        Explained classes.
    a : float array (n, H, W)
        Attribution maps at input resolution (any sign; rescaled here per the spec's ``scaling``).
    s : 0/1 array (n, H, W) or None
        Object masks; None when the dataset has none.
    settings : QuantusSettings
    seed : int
        ``np.random.seed(seed)`` runs right before every Quantus call.
    explain_func : callable, optional
        Quantus-style ``explain_func(model, inputs, targets, **kw) -> (n, H, W)`` of the same
        explainer; needed by metrics with ``needs_explain_func``.
    n_classes : int, optional
        Number of classes (RandomLogit); default ``model``'s output width.

    Returns
    -------
    scores : float array (n,)
        NaN where a sample was not scored.
    reasons : list of str or None
        Why each NaN is missing (None for scored samples).
    extra : dict
        ``settings`` (what was run), ``seconds``, ``chance`` (per-sample chance level or None)
        and, for PixelFlipping, ``fractions`` (L+1,) and ``curves`` (n, L+1) (NaN rows for
        missing samples).
    """
    import torch

    spec = QUANTUS_METRICS.get(name)
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    y = np.asarray(y).astype(np.int64).ravel()
    a = np.asarray(a, dtype=np.float32)
    n = len(x)
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise ValueError(f"{name}: inputs must be square images (n, C, H, H), got {x.shape}")
    if a.shape != (n, *x.shape[2:]) or y.shape != (n,):
        raise ValueError(f"{name}: maps {a.shape} and targets {y.shape} must be (n, H, W) and (n,) "
                         f"for inputs {x.shape}")
    device = str(device)
    softmax = bool(settings.softmax)
    model.eval()
    if n_classes is None:
        with torch.no_grad():
            n_classes = int(model(torch.from_numpy(x[:1]).to(device)).shape[1])
    built = spec.build(settings, x.shape[2], n_channels=x.shape[1], n_classes=n_classes, seed=seed)
    run_settings = {**built.settings, "n_images": n, "softmax": softmax,
                    "map_scaling": SCALING_NOTES[spec.scaling]}
    scores = np.full(n, np.nan)
    reasons: list[str | None] = list(map_problems(a, spec.scaling))
    curves = None if built.fractions is None else np.full((n, len(built.fractions)), np.nan)
    extra: dict[str, Any] = {"settings": run_settings, "chance": None}
    if curves is not None:
        extra["fractions"] = built.fractions

    masks = None
    if spec.needs_masks:
        if s is None:
            extra["seconds"] = 0.0
            return scores, [NO_MASKS] * n, extra
        masks = (np.asarray(s) > 0).astype(np.uint8)
        if masks.shape != a.shape:
            raise ValueError(f"{name}: masks {masks.shape} must match the maps {a.shape}")
        extra["chance"] = spec.chance(masks) if spec.chance else None
        reasons = [r or m for r, m in zip(reasons, mask_problems(masks))]
    if spec.needs_explain_func:
        if explain_func is None:
            extra["seconds"] = 0.0
            return scores, ["no explanation function for this explainer"] * n, extra
        if n_classes < 2:
            extra["seconds"] = 0.0
            return scores, ["needs at least two classes"] * n, extra

    if spec.subset and n > settings.sanity_images:
        outside = f"outside the first {settings.sanity_images} images (evaluate.sanity.n_images)"
        reasons = [r if i < settings.sanity_images else outside for i, r in enumerate(reasons)]
        run_settings["n_images"] = settings.sanity_images
    start_time = time.perf_counter()
    idx = np.flatnonzero([r is None for r in reasons])
    a_scaled = SCALINGS[spec.scaling](a)
    efunc = rescaled_explain_func(explain_func, spec.scaling) if spec.needs_explain_func else None

    def call(ix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        s_batch = None if masks is None else masks[ix][:, None]
        np.random.seed(seed % 2**32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = built.metric(model=model, x_batch=x[ix], y_batch=y[ix],
                               a_batch=a_scaled[ix].copy()[:, None], s_batch=s_batch,
                               channel_first=True, explain_func=efunc, softmax=softmax,
                               device=device, batch_size=batch_size)
        reference = None
        if spec.needs_reference:
            reference = {"original": class_scores(model, x[ix], y[ix], softmax, device, batch_size)}
            if spec.needs_reference == "both":  # the curve does not end fully perturbed (RegionPerturbation)
                np.random.seed(seed % 2**32)
                x_base = fully_perturbed(x[ix], settings.perturb_baseline)
                reference["perturbed"] = class_scores(model, x_base, y[ix], softmax, device, batch_size)
        return built.finish(raw, reference)

    if idx.size:
        try:
            out, out_curves = call(idx)
            scores[idx] = out
            if curves is not None:
                curves[idx] = out_curves
        except SAMPLE_ERRORS:
            for i in idx:  # one bad sample must not cost the batch: retry each alone
                try:
                    out, out_curves = call(np.array([i]))
                    scores[i] = out[0]
                    if curves is not None:
                        curves[i] = out_curves[0]
                except SAMPLE_ERRORS as exc:
                    msg = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
                    reasons[i] = f"quantus {type(exc).__name__}: {msg}".rstrip(": ")
    for i in idx:
        if reasons[i] is None and not np.isfinite(scores[i]):
            scores[i] = np.nan
            reasons[i] = built.nan_reason or "undefined for this sample (Quantus returned NaN)"
    extra["seconds"] = time.perf_counter() - start_time
    if curves is not None:
        extra["curves"] = curves
    return scores, reasons, extra
