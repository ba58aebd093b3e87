"""Feature extraction (blocks B1..B4, a block combination, the embedding cache) versus the bare backbone.

Measures, on the same batches, in eval mode without gradients:

- ``BlockExtractor`` taps ``A_1..A_4`` and the logits in one forward (torchvision
  ``create_feature_extractor``) versus the bare torchvision forward ``model(x)``;
- the combined map and pooled embedding of B234, ``z_S = pool(combine(A, "B234", standardize))``,
  through an extractor that taps only B2..B4, as the k-means head module does;
- the k-means head's class scores (``KMeansHeadModule.forward``, what Quantus calls for every
  perturbed image) from the pooled ``z_S`` through the pooling weights, versus the same scores
  from the combined map ``F_S`` (``scores_from_features(features(x))``, the former forward);
- the embedding-cache pass (``kmx_eval.models.embeddings.extract_embedding_cache``: every block,
  every grid, ``none`` and ``l2``, block statistics) versus ``model(x)`` over the same images with
  the same batch size.

Each ratio is a throughput ratio, ``median_r t_bare(r) / t_variant(r)`` over interleaved rounds;
target >= 0.9 (taps and the cache cost at most ~10% on top of the forward the backbone needs anyway).

    .venv/bin/python benchmarks/bench_features.py            # resnet34, 96 and 224 px, batch 32
    .venv/bin/python benchmarks/bench_features.py --quick    # resnet18, 64 px, batch 8 (seconds)
"""

from __future__ import annotations

import os
import sys

import _common as common

os.environ.setdefault("TQDM_DISABLE", "1")  # the cache pass has progress bars; keep the table readable

TARGET = 0.9


def run(args) -> tuple[list[common.Check], dict]:
    import torch
    from torch.utils.data import DataLoader

    from kmx_eval.device import resolve_device
    from kmx_eval.heads import KMeansHeadModule
    from kmx_eval.models.backbone import build_backbone
    from kmx_eval.models.blocks import BlockExtractor, BlockStats, combine, pool
    from kmx_eval.config import FeaturesConfig
    from kmx_eval.models.combination import parse_combination
    from kmx_eval.models.embeddings import extract_embedding_cache

    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    checks: list[common.Check] = []
    per_size: dict = {}
    torch.manual_seed(0)
    model = build_backbone(args.architecture, n_classes=10, weights="none").to(device).eval()
    taps = BlockExtractor(model, blocks=(1, 2, 3, 4), logits=True).eval()
    comb = parse_combination(args.combination, weighting=FeaturesConfig().block_weighting)
    # The k-means head module taps only the combination's blocks and stops after the deepest one.
    comb_taps = BlockExtractor(model, blocks=comb.blocks, logits=False).eval()
    gen = torch.Generator().manual_seed(0)

    for size in args.sizes:
        x = torch.randn(args.batch_size, 3, size, size, generator=gen).to(device)
        with torch.no_grad():
            stats = BlockStats.from_arrays(comb_taps(x))

        def bare():
            with torch.no_grad():
                return model(x)

        def blocks():
            with torch.no_grad():
                return taps(x)

        def combination():
            with torch.no_grad():
                return pool(combine(comb_taps(x), comb, "standardize", stats, "bilinear"))

        # 10 classes x 5 prototypes in the space of the combination.
        dim = sum(comb_taps.channels.values())
        head = KMeansHeadModule(comb_taps, comb, "standardize", stats,
                                torch.randn(10, 5, dim, generator=gen), "bilinear").to(device)

        def head_pooled():
            with torch.no_grad():
                return head(x)

        def head_map():
            with torch.no_grad():
                return head.scores_from_features(head.features(x))

        times = common.interleaved({"bare": bare, "blocks": blocks, "combination": combination,
                                    "head_pooled": head_pooled, "head_map": head_map},
                                   repeats=args.repeats, warmup=1, sync=sync,
                                   min_time=args.min_time)
        ips = {k: args.batch_size / common.median(v) for k, v in times.items()}
        for key, label in (("blocks", "B1..B4 taps (BlockExtractor)"),
                           ("combination", f"{comb.name} combine+pool (standardize)")):
            checks.append(common.Check(
                f"{label} vs model(x), {size} px", common.paired_ratio(times["bare"], times[key]),
                ">=", TARGET,
                detail=f"model(x) {ips['bare']:.1f} img/s, {key} {ips[key]:.1f} img/s "
                       f"(batch {args.batch_size}, {args.repeats} rounds)"))
        checks.append(common.Check(
            f"{comb.name} k-means head forward (pooled z_S) vs model(x), {size} px",
            common.paired_ratio(times["bare"], times["head_pooled"]), ">=", TARGET,
            detail=f"head forward {ips['head_pooled']:.1f} img/s; through F_S {ips['head_map']:.1f} img/s"))
        checks.append(common.Check(
            f"{comb.name} k-means head forward: pooled z_S vs through F_S, {size} px",
            common.paired_ratio(times["head_map"], times["head_pooled"]), ">=", 1.0,
            detail="throughput ratio of the new forward over the former one (> 1: faster)"))

        # The embedding-cache pass over n images (train and test splits) versus model(x) over the
        # same images through the same DataLoader batching.
        n_train, n_test = args.cache_images
        xs = torch.randn(n_train + n_test, 3, size, size, generator=gen)
        labels = torch.arange(n_train + n_test) % 10
        train, test = common.TensorImages(xs[:n_train], labels[:n_train]), common.TensorImages(xs[n_train:], labels[n_train:])

        def cache():
            return extract_embedding_cache(taps, train, test, batch_size=args.batch_size,
                                           resize="bilinear", device=device)

        def bare_same_images():
            with torch.no_grad():
                for split in (train, test):
                    for xb, _, _ in DataLoader(split, batch_size=args.batch_size, shuffle=False):
                        model(xb.to(device))

        cache_times = common.interleaved({"bare": bare_same_images, "cache": cache},
                                         repeats=args.cache_repeats, warmup=1, sync=sync,
                                         min_time=args.min_time)
        n = n_train + n_test
        checks.append(common.Check(
            f"embedding cache pass vs model(x), {size} px", common.paired_ratio(cache_times["bare"], cache_times["cache"]),
            ">=", TARGET,
            detail=f"model(x) {n / common.median(cache_times['bare']):.1f} img/s, cache "
                   f"{n / common.median(cache_times['cache']):.1f} img/s over {n} images "
                   f"({n_train} train + {n_test} test, {args.cache_repeats} rounds)"))
        per_size[size] = {"seconds": times, "cache_seconds": cache_times, "images_per_second": ips}
    return checks, per_size


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--architecture", default=None, help="resnet18 | resnet34 | resnet50 (default resnet34; quick: resnet18)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="image sizes in px (default 96 224)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default 32)")
    p.add_argument("--combination", default="B234", help="block combination to combine and pool")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    args = p.parse_args(argv)
    common.setup_threads(args.threads)
    quick = args.quick
    args.architecture = args.architecture or ("resnet18" if quick else "resnet34")
    args.sizes = args.sizes or ([64] if quick else [96, 224])
    args.batch_size = args.batch_size or (8 if quick else 32)
    args.repeats = args.repeats or (3 if quick else 7)
    args.cache_repeats = max(2, args.repeats // 2) if not quick else 2
    args.cache_images = (8, 8) if quick else (2 * args.batch_size, args.batch_size)
    args.min_time = 0.25 if quick else 1.0  # seconds per timed sample (calls are repeated to fill it)
    env_before = common.environment()
    checks, per_size = run(args)
    settings = {k: getattr(args, k) for k in ("architecture", "sizes", "batch_size", "combination",
                                              "repeats", "cache_repeats", "cache_images", "min_time", "device")}
    common.print_table(
        f"Feature extraction vs the bare backbone ({args.architecture}, eval, no_grad, batch {args.batch_size})",
        checks, notes=["ratio = median over interleaved rounds of t(model(x)) / t(variant): "
                       "a throughput ratio, 1.0 = free"])
    return common.finish(args, "bench_features", checks, settings, {"per_size": per_size}, env_before)


if __name__ == "__main__":
    sys.exit(main())
