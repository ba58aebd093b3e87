"""Synthetic inputs of the report: tidy metrics, per-sample scores, curves, maps, images, a workspace.

Nothing here runs a model. The numbers follow a fixed, seeded pattern that makes the report's
claims checkable: more blocks localise better (B234 > B34 > B4 on RelevanceMassAccuracy) and
cost a little accuracy; ``digits`` has no masks, so its localisation rows are missing with a note.
The frames are built with :mod:`kmx_eval.metrics.tidy`, the writer the evaluate stages use.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from kmx_eval.metrics import tidy
from kmx_eval.metrics.evaluation import is_proportion

DATASETS = ("shapes", "digits")
COMBINATIONS = ("B4", "B34", "B234")
CNN = "cnn"
SEEDS = (0, 1)
N_CLASSES = 3
N_PROTOTYPES = 2
SIZE = 32
N_TRAIN, N_TEST, N_EVAL = 12, 8, 6
KMEANS_EXPLAINERS = ("margin", "margin_centred", "distance")
CNN_EXPLAINERS = ("cam", "gradcam", "integrated_gradients", "random")
#: metric -> (category, higher_is_better)
QUANTUS = {"PointingGame": ("localisation", True), "RelevanceMassAccuracy": ("localisation", True),
           "FaithfulnessCorrelation": ("faithfulness", True), "PixelFlipping": ("faithfulness", False),
           "Sparseness": ("complexity", True)}
NO_MASKS = "not applicable: dataset has no masks"

PARAMS = {
    "seeds": list(SEEDS),
    "datasets": {"shapes": {"source": "synthetic", "n_classes": N_CLASSES, "train_per_class": 4,
                            "test_per_class": 3},
                 "digits": {"source": "digits", "backbone": {"image_size": SIZE}}},
    "backbone": {"architecture": "resnet18", "image_size": SIZE},
    "combinations": list(COMBINATIONS),
    "explain": {"n_images": N_EVAL,
                "explainers": list(KMEANS_EXPLAINERS) + list(CNN_EXPLAINERS)},
    "evaluate": {"quantus": list(QUANTUS), "bootstrap": {"n_resamples": 50}, "compare": [["B4", "B234"]]},
    "report": {"gallery_images": 3, "fidelity_metric": "RelevanceMassAccuracy"},
}


def tidy_row(**kw):
    """One tidy metrics row of dataset d, combination B4, the margin map and metric M, changed by ``kw``."""
    base = dict(dataset="d", seed=0, combination="B4", kind="explainer", method="margin",
                category="localisation", metric="M", value=0.5, ci_low=0.4, ci_high=0.6, n=10,
                higher_is_better=True)
    base.update(kw)
    return tidy.row(**base)


def _level(comb: str) -> int:
    return len(comb) - 1  # B4 -> 1, B34 -> 2, B234 -> 3


def synthetic_frames(datasets=DATASETS, combinations=COMBINATIONS, seeds=SEEDS):
    """(metrics, samples, curves) of every dataset x (combinations + cnn) x seed."""
    rows, samples, curves = [], [], []
    sample_ids = np.arange(N_EVAL) * 2
    for d, ds in enumerate(datasets):
        masks = ds == "shapes"
        for seed in seeds:
            gen = np.random.default_rng([d, seed])
            for comb in list(combinations) + [CNN]:
                keys = dict(dataset=ds, seed=seed, combination=comb)
                level = 0 if comb == CNN else _level(comb)
                boot = dict(n_resamples=50, confidence=0.95, bootstrap_seed=seed)

                def add(values, sample_method=None, **k):
                    # Proportions get Wilson intervals, as in the evaluate stage.
                    rows.append(tidy.summary_row(values, **boot, **keys, **k,
                                                 proportion=is_proportion(k["kind"], k["metric"])))
                    if sample_method:
                        samples.extend(tidy.sample_rows(values, [None] * len(values),
                                                        np.arange(len(values)) * 2, **keys,
                                                        method=sample_method, metric=k["metric"]))

                # heads
                if comb == CNN:
                    add((gen.random(N_EVAL) < 0.97).astype(float), kind="head", method="cnn",
                        category="accuracy", metric="accuracy", higher_is_better=True)
                else:
                    for method, base in (("kmeans", 0.98 - 0.03 * level), ("probe", 0.97)):
                        p = np.clip(base + gen.normal(0, 0.005), 0, 1)
                        add(np.r_[np.ones(int(round(p * 40))), np.zeros(40 - int(round(p * 40)))],
                            sample_method=method, kind="head", method=method, category="accuracy", metric="accuracy",
                            higher_is_better=True)
                        add(np.ones(20) * (0.9 + 0.02 * (method == "probe")), kind="head", method=method,
                            category="agreement", metric="agreement", higher_is_better=True)
                # prototypes
                sets = (["linear", "linear_canonical", "class_means"] if comb == CNN
                        else ["kmeans", "probe", "probe_canonical", "class_means"]
                        + (["linear"] if comb == "B4" else []))
                for method in sets:
                    far = {"kmeans": 1.1, "class_means": 1.0}.get(method, 2.5 if method.endswith("_canonical") else 6.0)
                    add(far + gen.normal(0, 0.1, 6), kind="prototypes", method=method,
                        category="prototype_fidelity", metric="proximity", higher_is_better=False)
                    # per prototype, as the evaluate stage writes it: the report resamples seeds, then prototypes
                    add(0.8 * far + gen.normal(0, 0.1, 6), sample_method=method, kind="prototypes", method=method,
                        category="prototype_fidelity", metric="separation", higher_is_better=False)
                    add(np.clip(0.5 + 0.4 * (method == "kmeans") + gen.normal(0, 0.05, 6), 0, 1),
                        kind="prototypes", method=method, category="prototype_fidelity",
                        metric="purity", higher_is_better=True, chance=1 / N_CLASSES)
                # explainers
                methods = CNN_EXPLAINERS if comb == CNN else KMEANS_EXPLAINERS
                for m, method in enumerate(methods):
                    strength = (0.15 + 0.12 * level - 0.02 * m) if comb != CNN else (0.1 + 0.05 * (m < 3))
                    for metric, (category, hib) in QUANTUS.items():
                        ek = dict(kind="explainer", method=method, category=category, metric=metric,
                                  higher_is_better=hib)
                        if category == "localisation" and not masks:
                            rows.append(tidy.row(**keys, **ek, value=None, n=0, n_missing=N_EVAL,
                                                 chance=0.2, note=NO_MASKS))
                            samples.extend(tidy.sample_rows(np.full(N_EVAL, np.nan), [NO_MASKS] * N_EVAL,
                                                            sample_ids, **keys, method=method, metric=metric))
                            continue
                        v = np.clip(strength + gen.normal(0, 0.03, N_EVAL), 0, 1)
                        if metric == "PixelFlipping":
                            v = 1 - v
                        if metric == "PointingGame":  # a hit: 0/1 per image
                            v = (v > 0.3).astype(float)
                        add(v, sample_method=method, chance=0.2 if category == "localisation" else None,
                            **ek)
                    fractions = np.linspace(0, 1, 5)
                    curves.extend(tidy.curve_rows(fractions, np.exp(-(2 + 4 * strength) * fractions)
                                                  + gen.normal(0, 0.01, 5), **keys, method=method))
                # concepts
                if comb != CNN:
                    for metric in ("concept_purity_object", "concept_ari_object", "concept_nmi_object"):
                        for method in ("concepts_global", "oracle"):
                            add(np.clip(0.3 + 0.1 * level + 0.5 * (method == "oracle")
                                        + gen.normal(0, 0.05, N_EVAL), 0, 1),
                                kind="concepts", method=method, category="concept_fidelity",
                                metric=metric, higher_is_better=True, chance=0.0)
    return tidy.frame(rows), tidy.samples_frame(samples), tidy.curves_frame(curves)


def synthetic_images(n: int, seed: int, size: int = SIZE):
    """(images uint8 (n,H,W,3), masks uint8 0/255 (n,H,W), labels): a bright square on noise."""
    gen = np.random.default_rng(seed)
    images = gen.integers(0, 80, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    labels = np.arange(n) % N_CLASSES
    for i in range(n):
        y, x = gen.integers(0, size // 2, 2)
        images[i, y:y + size // 2, x:x + size // 2] = (np.array([220, 60, 60]) if labels[i] == 0 else
                                                       np.array([60, 200, 60]) if labels[i] == 1 else
                                                       np.array([60, 60, 220]))
        masks[i, y:y + size // 2, x:x + size // 2] = 255
    return images, masks, labels


def synthetic_maps(indices, masks, comb: str, explainers, seed: int, concepts: bool):
    """A maps file's arrays: signed maps that are larger on the mask, more so for more blocks."""
    gen = np.random.default_rng(seed + len(comb))
    n = len(indices)
    out = {"indices": np.asarray(indices, np.int64), "targets": np.arange(n) % N_CLASSES,
           "predictions": np.arange(n) % N_CLASSES}
    m = (masks[indices] > 0).astype(np.float32)
    for name in explainers:
        noise = gen.normal(0, 1, m.shape).astype(np.float32)
        out[name] = (m * (1 + len(comb)) + noise - (0.5 if name.startswith("margin") else -2.0)).astype(np.float32)
    if concepts:
        out["concepts_global"] = (m + (np.indices(m.shape[1:]).sum(0) > SIZE)[None]).astype(np.int16)
    return out


def write_workspace(root: Path, params: dict = PARAMS, metrics_frames=None, stale: bool = True) -> None:
    """Every file the report stage reads, under ``root`` (the repository root of a run).

    With ``stale``, also leave outputs of a removed combination (B1234) and a removed seed (7)
    behind, as DVC does, so the test can check the report ignores them.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as HFImage
    from PIL import Image

    from kmx_eval import io, paths

    metrics, samples, curves = metrics_frames or synthetic_frames(
        datasets=tuple(params["datasets"]), combinations=tuple(params["combinations"]),
        seeds=tuple(params["seeds"]) + ((7,) if stale else ()))
    if stale:
        old = synthetic_frames(datasets=tuple(params["datasets"]), combinations=("B1234",), seeds=(0,))
    names = [f"class{c}" for c in range(N_CLASSES)]
    for ds in params["datasets"]:
        with_masks = ds == "shapes"
        splits = {}
        for split, n, seed in (("train", N_TRAIN, 1), ("test", N_TEST, 2)):
            images, masks, labels = synthetic_images(n, seed)
            cols = {"image": [Image.fromarray(im) for im in images], "label": labels.tolist()}
            feats = {"image": HFImage(), "label": ClassLabel(names=names)}
            if with_masks:
                cols["mask"] = [Image.fromarray(mk, mode="L") for mk in masks]
                feats["mask"] = HFImage()
            splits[split] = Dataset.from_dict(cols, features=Features(feats))
        DatasetDict(splits).save_to_disk(str(root / paths.prepared(ds)))
        _, test_masks, _ = synthetic_images(N_TEST, 2)
        indices = np.arange(N_EVAL)
        train = {}
        for seed in params["seeds"]:
            train[f"seed{seed}"] = {"test_accuracy": 0.97}
            io.write_json(root / paths.backbone_meta(ds, seed), {
                "architecture": "resnet18", "n_classes": N_CLASSES, "class_names": names,
                "image_size": SIZE, "weights": "none", "seed": seed, "epochs": 1,
                "test_accuracy": 0.97, "device": "cpu"})
        io.write_json(root / paths.train_metrics(ds), train)
        for comb in list(params["combinations"]) + [CNN] + (["B1234"] if stale else []):
            src = old if comb == "B1234" else (metrics, samples, curves)
            folder = root / paths.evaluation(ds, comb)
            for target, frame in zip((folder / "metrics.csv", folder / "samples.csv", root / paths.curves(ds, comb)), src):
                io.write_csv(target, frame[(frame["dataset"] == ds) & (frame["combination"] == comb)])
            io.write_json(folder / "settings.json", {"n_images": N_EVAL, "quantus": {
                "RelevanceMassAccuracy": {"map_scaling": "per-sample positive part", "softmax": False}}})
            explainers = CNN_EXPLAINERS if comb == CNN else KMEANS_EXPLAINERS
            for seed in params["seeds"]:
                io.save_npz(root / paths.maps_file(ds, comb, seed),
                            synthetic_maps(indices, test_masks, comb, explainers, seed, comb != CNN))
                if comb != CNN:
                    gen = np.random.default_rng(seed)
                    io.save_npz(root / paths.head_dir(ds, comb, seed) / "neighbours.npz", {
                        "kmeans": gen.integers(0, N_TRAIN, (N_CLASSES, N_PROTOTYPES)),
                        "kmeans_distance": gen.random((N_CLASSES, N_PROTOTYPES)),
                        "linear": gen.integers(0, N_TRAIN, N_CLASSES),
                        "linear_distance": 5 + gen.random(N_CLASSES),
                        "linear_source": np.array("cnn" if comb == "B4" else "probe")})
            if comb != CNN:
                io.write_json(root / paths.fit_metrics(ds, comb),
                              {f"seed{s}": {"kmeans_accuracy": 0.95, "probe_accuracy": 0.96}
                               for s in params["seeds"]})


def load_params(params: dict = PARAMS):
    from kmx_eval.validation import parse_params

    return parse_params(json.loads(json.dumps(params)))


def read_csv(path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=True)
