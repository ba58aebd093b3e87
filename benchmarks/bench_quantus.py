"""Quantus faithfulness metrics: wall time versus the model calls they need.

For each metric of ``evaluate.quantus`` that calls the model (FaithfulnessCorrelation,
PixelFlipping, RegionPerturbation, MonotonicityCorrelation, SymmetricMoRFLeRF, ROAD, and RandomLogit,
which re-explains; the grid metrics perturb the cells of the model's own grid, ``explained_grid``),
configured exactly as the ``evaluate`` stage configures it from params
(``kmx_eval.metrics.quantus.run_quantus``), this script

1. counts the backbone passes it makes: a forward pre-hook on the backbone's first convolution
   (every forward, ``features`` or explanation of the model passes through it exactly once)
   records each call and its batch size;
2. times one batched forward ``model(x[:b])`` for every batch size ``b`` it saw, in the same
   rounds as the metric (interleaved), and forms the model time the metric needs,
   ``T_model = sum_calls t(b_call)``;
3. reports ``ratio = T_wall / T_model`` (target <= 1.5: Quantus's own loop, perturbations and
   bookkeeping cost at most half of the model time) and the overhead share ``1 - T_model / T_wall``.

It also prints the model calls per image, the figure that ``bench_paper_projection.py`` derives
from the settings, so that the projection can be checked against a count, and, measured in the same
run, the wall time of SymmetricMoRFLeRF and ROAD as a ratio to PixelFlipping's (informational rows:
what adding them costs against the metric they sit beside).

The model is a k-means head (``KMeansHeadModule``, B234, standardize, 2 prototypes per class on an
untrained ResNet34: timing does not depend on training) or, with ``--model cnn``, the plain CNN;
images are seeded Gaussian noise at ``backbone.image_size`` and maps come from the ``margin``
explainer (``cam`` for the CNN). Defaults: ``params.yaml`` (96 px, n_images 48).

    .venv/bin/python benchmarks/bench_quantus.py             # default params, about a minute
    .venv/bin/python benchmarks/bench_quantus.py --quick     # resnet18, 32 px, 4 images
"""

from __future__ import annotations

import os
import sys
from collections import Counter

import _common as common

os.environ.setdefault("TQDM_DISABLE", "1")

TARGET = 1.5


class CallCounter:
    """Forward pre-hook that records the batch size of every backbone pass while ``active``."""

    def __init__(self):
        self.sizes: list[int] = []
        self.active = False

    def __call__(self, module, inputs):
        if self.active:
            self.sizes.append(int(inputs[0].shape[0]))

    def start(self) -> None:
        self.sizes, self.active = [], True

    def stop(self) -> list[int]:
        self.active = False
        return list(self.sizes)


def build(args, params):
    """The model under explanation, its maps and its explain_func, on seeded noise images."""
    import numpy as np
    import torch

    from kmx_eval.explain import build_explainer, quantus_explain_func
    from kmx_eval.heads import KMeansHead, KMeansHeadModule
    from kmx_eval.models.backbone import build_backbone
    from kmx_eval.models.blocks import BlockExtractor, BlockStats, combine, pool
    from kmx_eval.config import FeaturesConfig
    from kmx_eval.models.combination import parse_combination

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    size, n, n_classes = args.image_size, args.n_images, args.n_classes
    x = torch.randn(n, 3, size, size, generator=gen)
    y = (torch.arange(n) % n_classes).numpy().astype(np.int64)
    backbone = build_backbone(args.architecture, n_classes, "none").eval()
    if args.model == "kmeans":
        comb = parse_combination(args.combination, weighting=FeaturesConfig().block_weighting)
        extractor = BlockExtractor(backbone, blocks=comb.blocks, logits=False).eval()
        # The head is fitted on other images than those evaluated (4 per class), as in the
        # pipeline: an evaluated image that is its own prototype scores exactly 0, which Quantus's
        # MonotonicityCorrelation cannot take in a batch (see README).
        per_class = 4
        x_fit = torch.randn(per_class * n_classes, 3, size, size, generator=gen)
        y_fit = np.arange(per_class * n_classes) % n_classes
        with torch.no_grad():
            acts = extractor(x_fit)
            stats = BlockStats.from_arrays(acts)
            z = pool(combine(acts, comb, "standardize", stats, "bilinear")).numpy()
        head = KMeansHead(n_prototypes=2, n_init=1, random_state=0).fit(z, y_fit)
        model = KMeansHeadModule.from_head(head, extractor, comb, "standardize", stats, "bilinear")
        explainer = build_explainer("margin", params.explain, 0)
    else:
        model = backbone
        explainer = build_explainer("cam", params.explain, 0)
    model.eval()
    maps = explainer.explain(model, x, y)
    return model, backbone, x.numpy(), y, maps, quantus_explain_func(explainer)


def run(args) -> tuple[list[common.Check], dict]:
    import numpy as np
    import torch

    from kmx_eval.validation import load_params, parse_params
    from kmx_eval.metrics.quantus import QUANTUS_METRICS, QuantusSettings, run_quantus

    if args.quick:
        import yaml

        from pathlib import Path

        raw = yaml.safe_load(Path(args.params).read_text(encoding="utf-8"))
        raw["evaluate"]["faithfulness"] = {**raw["evaluate"].get("faithfulness", {}),
                                           "nr_runs": 3, "n_steps": 4, "nr_samples": 1,
                                           "regions_evaluation": 3}
        params = parse_params(raw, source=f"{args.params} (--quick)")
    else:
        params = load_params(args.params)
    cfg = params.evaluate
    settings = QuantusSettings(softmax=cfg.softmax, top_k_fraction=cfg.top_k_fraction,
                               **cfg.faithfulness.model_dump())
    args.image_size = args.image_size or params.backbone.image_size
    args.n_images = args.n_images or params.explain.n_images
    names = args.metrics or [m for m in cfg.quantus
                             if QUANTUS_METRICS.get(m).category == "faithfulness"
                             or QUANTUS_METRICS.get(m).needs_explain_func]
    from bench_paper_projection import faithfulness_passes

    derived = faithfulness_passes(cfg, args.image_size)  # what the projection assumes
    model, backbone, x, y, maps, explain_func = build(args, params)
    from kmx_eval.explain.controls import explained_grid

    grid = explained_grid(model, torch.from_numpy(x[:1]))  # the cells the grid metrics perturb
    counter = CallCounter()
    first_conv = next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_pre_hook(counter)
    xt = torch.from_numpy(x)

    def unit(b: int):
        with torch.no_grad():
            model(xt[:b])

    checks, detail = [], {}
    for name in names:
        walls, model_times, sizes = [], [], None
        # Untimed warm-up on two images: Quantus imports and builds helpers on first use.
        run_quantus(name, model, x[:2], y[:2], maps[:2], None, settings=settings, seed=0, device="cpu",
                    explain_func=explain_func, n_classes=args.n_classes, batch_size=args.batch_size, grid=grid)
        for r in range(args.repeats):
            counter.start()
            t0 = common.now()
            scores, reasons, extra = run_quantus(name, model, x, y, maps, None, settings=settings, seed=0,
                                                 device="cpu", explain_func=explain_func, n_classes=args.n_classes,
                                                 batch_size=args.batch_size, grid=grid)
            wall = common.now() - t0
            calls = counter.stop()
            if sizes is not None and calls != sizes:
                raise RuntimeError(f"{name}: model calls differ between rounds ({len(sizes)} vs {len(calls)})")
            sizes = calls
            # One batched forward per batch size seen, timed right after the metric (same load).
            per_size = common.interleaved({b: (lambda b=b: unit(b)) for b in sorted(set(calls))},
                                          repeats=args.unit_repeats, warmup=1, min_time=args.min_time)
            t_unit = {b: common.median(v) for b, v in per_size.items()}
            walls.append(wall)
            model_times.append(sum(t_unit[b] for b in calls))
        hist = Counter(sizes)
        images = sum(sizes)
        ratio = common.paired_ratio(walls, model_times)
        overhead = 1.0 - common.median(model_times) / common.median(walls)
        scored = int(np.isfinite(scores).sum())
        missing = Counter(r for r in reasons if r)
        checks.append(common.Check(
            f"{name}: wall / (calls x batched forward)", ratio, "<=", TARGET,
            detail=(f"{len(sizes)} calls ({', '.join(f'{c} x {b}' for b, c in sorted(hist.items()))} images), "
                    f"{images / args.n_images:.1f} passes per image"
                    + (f" (projection formula: {derived[name]})" if name in derived else "")
                    + f"; wall {common.spread(walls)}, "
                    f"model {common.median(model_times):.3g} s; Quantus overhead {100 * overhead:.0f}% "
                    f"of wall; {scored}/{len(scores)} samples scored"
                    + (f" (missing: {dict(missing)})" if missing else "")
                    + f"; settings {extra.settings}"),
            data={"calls": len(sizes), "images": images, "passes_per_image": images / args.n_images,
                  "passes_per_image_derived": derived.get(name),
                  "batch_sizes": dict(hist), "wall_s": walls, "model_s": model_times,
                  "overhead_share": overhead, "settings": extra.settings}))
        detail[name] = checks[-1].data
    checks += cost_ratios(detail, reference="PixelFlipping", others=("SymmetricMoRFLeRF", "ROAD"))
    return checks, detail


def cost_ratios(detail: dict, *, reference: str, others) -> list[common.Check]:
    """Informational rows: the wall time and the passes per image of each of ``others`` over those of
    ``reference``, from the rounds of this run (paired by round)."""
    if reference not in detail:
        return []
    ref = detail[reference]
    rows = []
    for name in others:
        if name in detail:
            d = detail[name]
            rows.append(common.Check(
                f"{name} / {reference}: wall time", common.paired_ratio(d["wall_s"], ref["wall_s"]), None, None,
                detail=(f"passes per image {d['passes_per_image']:.1f} vs {ref['passes_per_image']:.1f} "
                        f"(ratio {d['passes_per_image'] / ref['passes_per_image']:.2f}); wall "
                        f"{common.median(d['wall_s']):.3g} s vs {common.median(ref['wall_s']):.3g} s"),
                data={"wall_ratio": common.paired_ratio(d["wall_s"], ref["wall_s"]),
                      "passes_ratio": d["passes_per_image"] / ref["passes_per_image"]}))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--params", default=str(common.REPO / "params.yaml"), help="params file (default params.yaml)")
    p.add_argument("--model", choices=("kmeans", "cnn"), default="kmeans")
    p.add_argument("--architecture", default=None, help="default resnet34 (quick: resnet18)")
    p.add_argument("--combination", default="B234")
    p.add_argument("--image-size", type=int, default=None, help="default backbone.image_size of params")
    p.add_argument("--n-images", type=int, default=None, help="default explain.n_images of params")
    p.add_argument("--n-classes", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64, help="Quantus batch size (run_quantus default 64)")
    p.add_argument("--metrics", nargs="+", default=None, help="Quantus metric names (default: those that call the model)")
    args = p.parse_args(argv)
    common.setup_threads(args.threads)
    args.architecture = args.architecture or ("resnet18" if args.quick else "resnet34")
    if args.quick:
        args.image_size = args.image_size or 32
        args.n_images = args.n_images or 4
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.unit_repeats = 3
    args.min_time = 0.1 if args.quick else 0.5
    env_before = common.environment()
    checks, detail = run(args)
    settings = {k: getattr(args, k) for k in ("params", "model", "architecture", "combination", "image_size",
                                              "n_images", "n_classes", "batch_size", "repeats")}
    common.print_table(
        f"Quantus metrics vs the model calls they make ({args.model} head on {args.architecture}, "
        f"{args.image_size} px, {args.n_images} images)", checks,
        notes=["ratio = median over rounds of T_wall / sum over calls of t(one batched forward of that size)",
               "calls are backbone passes counted by a hook on the first convolution"])
    return common.finish(args, "bench_quantus", checks, settings, {"metrics": detail}, env_before)


if __name__ == "__main__":
    sys.exit(main())
