"""Projected cost of studies (``profiles/paper.yaml`` and ``paper_synthetic.yaml`` by default) on this machine.

Measures unit costs on a few batches, per image size and architecture the study uses:

- ``t_fwd``: eval forward of the backbone (no gradient), seconds per image;
- ``t_embed``: the embedding-cache pass (``extract_embedding_cache``), seconds per image;
- ``t_train``: a training step (forward, cross-entropy, backward, fused AdamW), seconds per image;
- ``t_grad``: forward + backward to the input (what captum's Grad-CAM and IG do), per image;
- ``t_prep``: building the dataset with its source (synthetic: a small sample, scaled; cub: two
  classes of the tree at ``path``, or, without it, a small tree of noise JPEGs at CUB's image size),
  per image;
- the k-means head, the linear probe and MiniBatchKMeans of the concept model on embeddings of
  the study's shapes (on a subset of classes, scaled: k-means per class is linear in the classes,
  the probe's lbfgs ~ quadratic, N x C; the probe figure is the roughest);

then multiplies them by the study's counts (cub: read from the tree at ``path``, or, without it,
CUB-200-2011's official split scaled to ``classes``), per seed (``n_tr``/``n_te``: training/test images,
``n_ev = min(explain.n_images, n_te)``, ``S`` combinations)::

    prepare      (n_tr + n_te) t_prep
    train        epochs n_tr t_train + n_te t_fwd
    embed        (n_tr + n_te) t_embed
    fit          per S: head + probe + 2 n_concept t_fwd + MiniBatchKMeans(n_concept x L vectors)
    explain      per S: n_ev (k-means explainers + predict + concept map) t_fwd
    explain_cnn  n_ev (predict + cam) t_fwd + n_ev (gradcam + ig_steps [IG]) t_grad
    evaluate     per S and CNN: n_ev x (explainers) x P x t_fwd x overhead  (+ RandomLogit re-explains)

where ``P`` is the number of model passes per image the faithfulness metrics make, derived from
``evaluate.faithfulness`` exactly as ``kmx_eval.metrics.quantus`` configures them:
FaithfulnessCorrelation ``nr_runs + 1``, PixelFlipping ``steps + 1``, RegionPerturbation
``regions + 1``, MonotonicityCorrelation ``steps x repeats + 1`` (``bench_quantus.py`` counts them
with a hook and checks the same numbers). ``overhead`` is Quantus's own cost on top of the model
(``--quantus-overhead``, default 1.1 from ``bench_quantus.py``).

It prints hours per stage and the total for each profile next to the same projection for
``params.yaml``, whose real run ``bench_pipeline.py`` times: the ratio of the two checks the model.

    .venv/bin/python benchmarks/bench_paper_projection.py            # the paper profiles vs params.yaml
    .venv/bin/python benchmarks/bench_paper_projection.py --quick    # batches of 2, one round (rough)
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import _common as common

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

STAGES = ("prepare", "train", "embed", "fit", "explain", "explain_cnn", "evaluate", "evaluate_cnn")


def load_study(path: str, notes: list[str]):
    """Load a params file; a synthetic dataset with more parts than styles is projected with fewer parts.

    The number of parts per object changes only the drawing in ``prepare``, not what any other
    stage costs, so such a profile can still be projected; the adjustment is printed.
    """
    import yaml

    from kmx_eval.validation import load_params, parse_params
    from kmx_eval.errors import ParamsError

    try:
        return load_params(path)
    except ParamsError as exc:
        from kmx_eval.data.synthetic import N_STYLES

        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        changed = []
        for name, ds in raw.get("datasets", {}).items():
            if ds.get("source") == "synthetic":
                n_classes, n_parts = int(ds.get("n_classes", 6)), int(ds.get("n_parts", 3))
                if n_classes * n_parts > N_STYLES:
                    ds["n_parts"] = max(1, N_STYLES // n_classes)
                    changed.append(f"datasets.{name}.n_parts {n_parts} -> {ds['n_parts']}")
        if not changed:
            raise
        notes.append(f"{path} does not validate ({exc}); projected with {', '.join(changed)}")
        print(f"warning: {notes[-1]}", file=sys.stderr)
        return parse_params(raw, source=f"{path} (adjusted)")


# ------------------------------------------------------------------------------- unit costs
def backbone_units(architecture: str, size: int, n_classes: int, batch: int, args) -> dict[str, float]:
    """Seconds per image of forward, embedding-cache pass, train step and input-gradient pass."""
    import torch
    from torch import nn

    from kmx_eval.models.backbone import build_backbone
    from kmx_eval.models.blocks import BlockExtractor
    from kmx_eval.models.embeddings import extract_embedding_cache

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build_backbone(architecture, n_classes, "none").to(device)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    y = (torch.arange(batch) % n_classes).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))
    criterion = nn.CrossEntropyLoss()
    taps = BlockExtractor(model, logits=True)
    cache_x = torch.randn(batch, 3, size, size, generator=gen)
    half = common.TensorImages(cache_x, torch.arange(batch) % n_classes)

    def forward():
        model.eval()
        with torch.no_grad():
            model(x)

    def embed():
        extract_embedding_cache(taps, half, half, batch_size=batch, device=device)

    def train_step():
        model.train()
        loss = criterion(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    def grad():
        model.eval()
        xg = x.detach().requires_grad_(True)
        model(xg).gather(1, y[:, None]).sum().backward()
        model.zero_grad(set_to_none=True)

    times = common.interleaved({"fwd": forward, "embed": embed, "train": train_step, "grad": grad},
                               repeats=args.repeats, warmup=1, sync=sync, min_time=args.min_time)
    per_call = {"fwd": batch, "embed": 2 * batch, "train": batch, "grad": batch}
    return {k: common.median(v) / per_call[k] for k, v in times.items()}


#: CUB-200-2011's official split (train_test_split.txt): images per split, and its classes.
CUB_TRAIN, CUB_TEST, CUB_CLASSES = 5994, 5794, 200
#: CUB's images are at most 500 px on a side; most are 500 x 333..375.
CUB_IMAGE = (500, 375)


def cub_counts(ds_cfg, notes: list[str]) -> tuple[int, int, int]:
    """Classes, training and test images of a cub entry: from its tree, else the official split."""
    from kmx_eval.data.cub import read_tree, select_classes
    from kmx_eval.errors import KmxError

    try:
        tree = read_tree(ds_cfg.path)
    except KmxError as exc:
        n = (CUB_CLASSES if ds_cfg.classes is None else ds_cfg.classes if isinstance(ds_cfg.classes, int)
             else len(ds_cfg.classes))
        note = (f"cub: no tree at {ds_cfg.path} ({str(exc)[:80]}...); counts from CUB-200-2011's official "
                f"split scaled to {n} classes")
        if note not in notes:
            notes.append(note)
        return n, round(CUB_TRAIN * n / CUB_CLASSES), round(CUB_TEST * n / CUB_CLASSES)
    chosen = set(select_classes(tree, ds_cfg.classes, "cub"))
    kept = [i for i in tree.images if tree.labels[i] in chosen]
    n_tr = sum(tree.train[i] for i in kept)
    return len(chosen), n_tr, len(kept) - n_tr


def fake_cub(root: Path, per_class: int = 4) -> Path:
    """A two-class tree in CUB's layout, noise JPEGs at CUB's image size, with segmentations."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    cub, lines = root / "CUB_200_2011", {"images": [], "image_class_labels": [], "train_test_split": [],
                                          "bounding_boxes": []}
    (cub / "parts").mkdir(parents=True)
    (root / "segmentations").mkdir()
    locs = []
    for i in range(1, 2 * per_class + 1):
        c = (i - 1) // per_class + 1
        rel = f"00{c}.Bird{c}/Bird{c}_{i}.jpg"
        for folder, suffix in ((cub / "images", ".jpg"), (root / "segmentations", ".png")):
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        w, h = CUB_IMAGE
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(cub / "images" / rel, quality=90)
        Image.fromarray(rng.choice(np.array([0, 153, 255], dtype=np.uint8), (h, w))).save(
            (root / "segmentations" / rel).with_suffix(".png"))
        lines["images"].append(f"{i} {rel}")
        lines["image_class_labels"].append(f"{i} {(i - 1) // per_class + 1}")
        lines["train_test_split"].append(f"{i} {i % 2}")
        lines["bounding_boxes"].append(f"{i} 50 40 300 200")
        locs += [f"{i} {p} {60 + 10 * p} 80 1" for p in range(1, 16)]
    for name, rows in lines.items():
        (cub / f"{name}.txt").write_text("\n".join(rows) + "\n")
    (cub / "parts" / "parts.txt").write_text("".join(f"{p} part{p}\n" for p in range(1, 16)))
    (cub / "parts" / "part_locs.txt").write_text("\n".join(locs) + "\n")
    return cub


def prepare_unit(ds_cfg, size: int) -> tuple[float | None, str]:
    """Seconds per image to build and save the dataset (``None`` when not projectable offline)."""
    from kmx_eval.data import prepare_dataset, save_prepared
    from kmx_eval.errors import KmxError

    if ds_cfg.source == "cub":
        from kmx_eval.data.cub import read_tree

        with tempfile.TemporaryDirectory() as tmp:
            try:
                read_tree(ds_cfg.path)
                small = ds_cfg.model_copy(update={"classes": 2})  # the real tree: two of its classes
            except KmxError:
                small = ds_cfg.model_copy(update={"path": str(fake_cub(Path(tmp))), "segmentations": None,
                                                  "classes": None})
            n = sum(cub_counts(small, [])[1:])
            t0 = common.now()
            save_prepared(prepare_dataset(small, size), Path(tmp) / "data" / "d")
            return (common.now() - t0) / n, ""
    if ds_cfg.source == "synthetic":
        small = ds_cfg.model_copy(update={"n_classes": min(ds_cfg.n_classes, 4), "train_per_class": 4,
                                          "test_per_class": 2})
        n = small.n_classes * 6
    elif ds_cfg.source == "digits":
        small, n = ds_cfg, 1797
    else:
        return None, f"source {ds_cfg.source!r} is not projected (needs its data)"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = common.now()
        save_prepared(prepare_dataset(small, size), Path(tmp) / "data" / "d")
        return (common.now() - t0) / n, ""


def head_units(n_classes: int, per_class: int, dim: int, head_cfg, sub_classes: int) -> dict[str, float]:
    """Seconds of KMeansHead.fit and LinearProbe.fit for the study, measured on ``sub_classes`` classes."""
    import numpy as np

    from kmx_eval.heads import KMeansHead, LinearProbe

    rng = np.random.default_rng(0)
    c = min(n_classes, sub_classes)
    centres = rng.normal(0, 3, (c, 2 * head_cfg.n_prototypes, dim))
    y = np.repeat(np.arange(c), per_class)
    z = (centres[y, rng.integers(0, 2 * head_cfg.n_prototypes, len(y))] + rng.normal(0, 1, (len(y), dim))).astype(np.float32)
    t0 = common.now()
    KMeansHead(head_cfg.n_prototypes, n_init=head_cfg.n_init, max_iter=head_cfg.max_iter, random_state=0).fit(z, y)
    t_head = common.now() - t0
    t0 = common.now()
    LinearProbe(C=head_cfg.probe_C, max_iter=head_cfg.probe_max_iter, random_state=0).fit(z, y)
    t_probe = common.now() - t0
    scale = n_classes / c
    # k-means per class: linear in the classes; lbfgs on N x D x C: N and C both scale.
    return {"head": t_head * scale, "probe": t_probe * scale ** 2}


def concept_kmeans_unit(dim: int, concepts_cfg) -> float:
    """Seconds per sampled vector of MiniBatchKMeans.partial_fit with the study's settings."""
    import numpy as np
    from sklearn.cluster import MiniBatchKMeans

    rng = np.random.default_rng(0)
    n = max(concepts_cfg.batch_size, 4 * concepts_cfg.n_concepts) * 4
    v = rng.normal(0, 1, (n, dim)).astype(np.float32)
    km = MiniBatchKMeans(concepts_cfg.n_concepts, batch_size=concepts_cfg.batch_size, n_init=1, random_state=0)
    t0 = common.now()
    for start in range(0, n, concepts_cfg.batch_size):
        km.partial_fit(v[start:start + concepts_cfg.batch_size])
    return (common.now() - t0) / n


# ------------------------------------------------------------------------------- counts
def faithfulness_passes(ev, size: int) -> dict[str, int]:
    """Model passes per image of each faithfulness metric in ``ev.quantus`` (module docstring)."""
    from kmx_eval.metrics.quantus import (DETERMINISTIC_BASELINES, features_in_step,
                                                  patch_size)

    f = ev.faithfulness
    out = {}
    _, steps = features_in_step(3, size, size, f.n_steps)
    if "FaithfulnessCorrelation" in ev.quantus:
        out["FaithfulnessCorrelation"] = f.nr_runs + 1
    if "PixelFlipping" in ev.quantus:
        out["PixelFlipping"] = steps + 1  # + the unperturbed reference scores
    if "RegionPerturbation" in ev.quantus:
        n_patches = math.ceil(size / patch_size(size, f.patch_fraction)) ** 2
        out["RegionPerturbation"] = min(f.regions_evaluation, n_patches) + 1
    if "MonotonicityCorrelation" in ev.quantus:
        repeats = 1 if f.perturb_baseline in DETERMINISTIC_BASELINES else f.nr_samples
        out["MonotonicityCorrelation"] = steps * repeats + 1
    return out


def project(params, units_for, args, notes: list[str]) -> tuple[dict[str, float], dict]:
    """Seconds per stage kind for the whole study, and per-dataset details."""
    from kmx_eval.explain import explainer_names
    from kmx_eval.models.backbone import build_backbone
    from kmx_eval.models.blocks import block_channels

    stages: dict[str, float] = defaultdict(float)
    details: dict = {}
    seeds = len(params.seeds)
    ex, ev = params.explain, params.evaluate
    k_names = explainer_names(ex.explainers, "kmeans")
    c_names = explainer_names(ex.explainers, "cnn")
    for name, ds in params.datasets.items():
        bb = params.backbone_for(name)
        if ds.source == "synthetic":
            n_classes, n_tr, n_te = ds.n_classes, ds.n_classes * ds.train_per_class, ds.n_classes * ds.test_per_class
        elif ds.source == "digits":
            n_classes, n_te = 10, round(1797 * ds.test_fraction)
            n_tr = 1797 - n_te
        elif ds.source == "cub":
            n_classes, n_tr, n_te = cub_counts(ds, notes)
        else:
            details[name] = {"skipped": f"source {ds.source!r}: image counts unknown without its data"}
            continue
        u = units_for(bb.architecture, bb.image_size, n_classes, ds)
        channels = block_channels(build_backbone(bb.architecture, 2, "none"))
        n_ev = min(ex.n_images, n_te)
        passes = faithfulness_passes(ev, bb.image_size)
        p_total = sum(passes.values())
        cost = {"cam": u["fwd"], "gradcam": u["grad"], "saliency": u["grad"],
                "integrated_gradients": ex.ig_steps * u["grad"], "random": 0.0}
        random_logit = "RandomLogit" in ev.quantus
        s: dict[str, float] = defaultdict(float)
        s["prepare"] = (n_tr + n_te) * u["prep"] if u["prep"] is not None else float("nan")
        s["train"] = seeds * (bb.epochs * n_tr * u["train"] + n_te * u["fwd"])
        s["embed"] = seeds * (n_tr + n_te) * u["embed"]
        for comb in params.combination_list():
            dim = sum(channels[b] for b in comb.blocks)
            heads = u["heads"](n_classes, n_tr // n_classes, dim)
            n_concept = min(ex.concepts.n_images, n_tr)
            s["fit"] += seeds * (heads["head"] + heads["probe"] + 2 * n_concept * u["fwd"]
                                 + n_concept * ex.concepts.locations_per_image * u["concept_kmeans"](dim))
            s["explain"] += seeds * n_ev * (len(k_names) + 2) * u["fwd"]
            s["evaluate"] += seeds * n_ev * len(k_names) * (p_total * u["fwd"] * args.quantus_overhead
                                                            + (u["fwd"] if random_logit else 0.0))
        s["explain_cnn"] = seeds * n_ev * (u["fwd"] + sum(cost.get(n, u["fwd"]) for n in c_names))
        s["evaluate_cnn"] = seeds * n_ev * sum(p_total * u["fwd"] * args.quantus_overhead
                                               + (cost.get(n, u["fwd"]) if random_logit else 0.0)
                                               for n in c_names)
        for k, v in s.items():
            stages[k] += v
        details[name] = {"architecture": bb.architecture, "image_size": bb.image_size, "n_classes": n_classes,
                         "n_train": n_tr, "n_test": n_te, "n_evaluated": n_ev, "epochs": bb.epochs,
                         "faithfulness_passes_per_image": passes, "seconds": dict(s),
                         "units_s_per_image": {k: v for k, v in u.items() if not callable(v)}}
    return dict(stages), details


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__, threads=None)
    p.add_argument("--profile", nargs="+", help="the studies to project (default: profiles/paper.yaml "
                   "and profiles/paper_synthetic.yaml)",
                   default=[str(common.REPO / "profiles" / name) for name in ("paper.yaml", "paper_synthetic.yaml")])
    p.add_argument("--params", default=str(common.REPO / "params.yaml"), help="the reference study (default params.yaml)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--quantus-overhead", type=float, default=1.1,
                   help="Quantus wall time / model time (bench_quantus.py measures it; default 1.1)")
    p.add_argument("--measure-batch", type=int, default=None, help="images per measured batch (default 32; quick 2)")
    args = p.parse_args(argv)
    common.setup_threads(args.threads)
    from kmx_eval.validation import load_params

    notes: list[str] = []
    studies = {"params.yaml": load_params(args.params),
               **{Path(path).name: load_study(path, notes) for path in args.profile}}
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.min_time = 0.2 if args.quick else 1.0
    batch = args.measure_batch or (2 if args.quick else 32)
    env_before = common.environment()

    memo: dict = {}

    def units_for(architecture: str, size: int, n_classes: int, ds_cfg) -> dict:
        key = (architecture, size)
        if key not in memo:
            print(f"measuring {architecture} at {size} px (batch {batch}) ...", flush=True)
            memo[key] = backbone_units(architecture, size, 10, batch, args)
        u = dict(memo[key])
        pkey = (ds_cfg.source, ds_cfg.model_dump_json(), size)
        if pkey not in memo:
            memo[pkey] = ((None, "skipped with --quick") if args.quick and ds_cfg.source != "synthetic"
                          else prepare_unit(ds_cfg, size))
        u["prep"], _ = memo[pkey]
        study_head = current["params"].head
        concepts = current["params"].explain.concepts

        def heads(c, per_class, dim):
            hkey = ("heads", c, per_class, dim, study_head.model_dump_json())
            if hkey not in memo:
                memo[hkey] = head_units(c, per_class, dim, study_head, sub_classes=4 if args.quick else 10)
            return memo[hkey]

        def concept_kmeans(dim):
            ckey = ("concepts", dim, concepts.model_dump_json())
            if ckey not in memo:
                memo[ckey] = concept_kmeans_unit(dim, concepts)
            return memo[ckey]

        u["heads"], u["concept_kmeans"] = heads, concept_kmeans
        return u

    current: dict = {}
    projections, details = {}, {}
    for label, params in studies.items():
        current["params"] = params
        projections[label], details[label] = project(params, units_for, args, notes)

    labels = list(projections)
    width = max(len(s) for s in STAGES) + 2
    print(f"\nProjected cost on this machine ({args.device}, {common.environment().get('torch_threads')} threads)")
    print(f"{'stage':<{width}}" + "".join(f"{lab:>22}" for lab in labels))
    for stage in STAGES:
        print(f"{stage:<{width}}" + "".join(f"{_hours(projections[lab].get(stage, 0.0)):>22}" for lab in labels))
    totals = {lab: sum(v for v in projections[lab].values() if math.isfinite(v)) for lab in labels}
    print(f"{'total':<{width}}" + "".join(f"{_hours(totals[lab]):>22}" for lab in labels))
    checks = [common.Check(f"projected total, {lab}", totals[lab] / 3600, unit="h",
                           detail=", ".join(f"{k} {_hours(v).strip()}" for k, v in projections[lab].items()))
              for lab in labels]
    checks += [common.Check(f"projected {lab} / {labels[0]}", totals[lab] / totals[labels[0]],
                            detail="compare the params.yaml projection with bench_pipeline.py's measured total")
               for lab in labels[1:]]
    common.print_table("Projection summary", checks, notes=notes + [
        "unit costs measured on a few batches of noise images; counts from the params; "
        "stages not listed (report) and process start-up are not projected",
        "the paper profiles are meant for a GPU: this is what they would cost on this CPU"])
    return common.finish(args, "bench_paper_projection", checks,
                         {"profile": args.profile, "params": args.params, "device": args.device,
                          "quantus_overhead": args.quantus_overhead, "measure_batch": batch},
                         {"projection_s": projections, "details": details,
                          "units": {str(k): v for k, v in memo.items() if isinstance(v, dict)}}, env_before)


def _hours(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    if seconds < 3600:
        return f"{seconds / 60:8.1f} min"
    return f"{seconds / 3600:8.2f} h"


if __name__ == "__main__":
    sys.exit(main())
