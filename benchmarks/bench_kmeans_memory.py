"""Memory of the concept model and the k-means head with 1x and 4x the training images; head fit time.

- Concept model (``kmx_eval.explain.concepts.ConceptModel.fit_stream``): MiniBatchKMeans on
  ``locations_per_image`` sampled per-location vectors of streamed maps ``F_S`` (N, D, H, W).
  Streaming means memory holds one batch of maps and at most ``batch_size`` vectors per model,
  whatever the number of training images, so the peak must not grow with it:
  ``peak(4x) / peak(1x) <= 1.2``.
- k-means head (``kmx_eval.heads.KMeansHead.fit``): holds the pooled embeddings ``z_S`` of the
  training split (``N x D`` float64), so its memory grows linearly by design; reported, no target.
- Fit time of ``KMeansHead`` versus scikit-learn's ``KMeans`` run per class on the same data, in
  the same (canonical) order, with the same seed, so both do identical k-means work (checked: the
  prototypes are equal) and the ratio ``t_head / t_sklearn`` is the head's own cost (validation,
  float64 copy, canonical sort): target <= 1.2.

Peak memory is measured two ways: ``tracemalloc`` (numpy and Python allocations, in this process,
peak reset before each fit) and, without ``--quick``, the peak resident set size of a fresh
subprocess per size (Linux ``VmHWM`` reset just before the fit, else ``ru_maxrss``), minus its RSS
just before the fit (imports and data excluded). Maps and embeddings are seeded Gaussian mixtures with the
shapes of the default study (B234 of ResNet34 at 96 px: D = 896 on a 12 x 12 grid; 6 classes x 200
training images).

    .venv/bin/python benchmarks/bench_kmeans_memory.py            # params.yaml sizes, subprocess RSS
    .venv/bin/python benchmarks/bench_kmeans_memory.py --quick    # tiny, tracemalloc only (seconds)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import _common as common

os.environ.setdefault("TQDM_DISABLE", "1")

TARGET_GROWTH = 1.2
TARGET_TIME = 1.2
FACTOR = 4


# ------------------------------------------------------------------------------- workloads
def feature_batches(n_images: int, spec: dict):
    """Stream of ``(F (b, D, g, g) float32 tensor, labels (b,))``: a Gaussian mixture per location.

    Drawn with torch's generator (not numpy) so that ``tracemalloc`` sees only what the concept
    model allocates, not the stream itself.
    """
    import torch

    gen = torch.Generator().manual_seed(spec["seed"])
    D, g, b, k = spec["dim"], spec["grid"], spec["feature_batch"], spec["true_concepts"]
    centres = 3.0 * torch.randn(k, D, generator=gen)
    for start in range(0, n_images, b):
        m = min(b, n_images - start)
        which = torch.randint(0, k, (m, g, g), generator=gen)
        F = centres[which].permute(0, 3, 1, 2) + torch.randn(m, D, g, g, generator=gen)
        yield F.contiguous(), torch.arange(start, start + m) % spec["n_classes"]


def embeddings(n: int, spec: dict):
    """Pooled embeddings ``z`` (n, D) float32 and labels: per class a mixture of 2H blobs."""
    import numpy as np

    rng = np.random.default_rng(spec["seed"])
    C, H, D = spec["n_classes"], spec["n_prototypes"], spec["dim"]
    centres = rng.normal(0.0, 3.0, (C, 2 * H, D))
    y = np.arange(n) % C
    z = centres[y, rng.integers(0, 2 * H, n)] + rng.normal(0.0, 1.0, (n, D))
    return z.astype(np.float32), y.astype(np.int64)


def fit_concepts(n_images: int, spec: dict):
    import numpy as np

    from kmx_eval.explain.concepts import ConceptModel

    model = ConceptModel(spec["n_concepts"], spec["scope"], random_state=0, batch_size=spec["concept_batch"])
    return model.fit_stream(feature_batches(n_images, spec), spec["locations_per_image"],
                            np.random.default_rng(0), progress=False)


def fit_head(z, y, spec: dict):
    from kmx_eval.heads import KMeansHead

    return KMeansHead(n_prototypes=spec["n_prototypes"], n_init=spec["n_init"],
                      max_iter=spec["max_iter"], random_state=0).fit(z, y)


def measure(kind: str, n: int, spec: dict) -> dict:
    """Peak traced memory (and seconds) of one fit; data for the head is made before tracing."""
    import tracemalloc

    z = y = None
    if kind == "head":
        z, y = embeddings(n, spec)
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = common.now()
    fitted = fit_concepts(n, spec) if kind == "concepts" else fit_head(z, y, spec)
    seconds = common.now() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    out = {"kind": kind, "n": n, "traced_peak_mib": peak / 2**20, "seconds": seconds}
    if kind == "concepts":
        out["vectors_seen"] = int(fitted.n_seen_.sum())
    return out


def _proc_status_mib(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status`` in MiB (Linux), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def child(spec_json: str) -> int:
    """Fresh-process measurement: peak RSS during one fit, minus the RSS just before it.

    On Linux the peak is ``VmHWM`` after resetting it to the current RSS (``/proc/self/clear_refs``
    = 5), because ``ru_maxrss`` survives ``exec`` and would report the parent's peak. Elsewhere
    ``ru_maxrss`` before and after the fit (bytes on macOS, KiB on Linux).
    """
    import resource

    job = json.loads(spec_json)
    kind, n, spec = job["kind"], job["n"], job["spec"]
    common.setup_threads(spec.get("threads"))
    # Import and allocate everything but the fit first, so the baseline includes them.
    import numpy as np  # noqa: F401
    import torch  # noqa: F401

    from kmx_eval.explain.concepts import ConceptModel  # noqa: F401
    from kmx_eval.heads import KMeansHead  # noqa: F401

    z = y = None
    if kind == "head":
        z, y = embeddings(n, spec)
    method = "ru_maxrss"
    before = _proc_status_mib("VmRSS")
    if before is not None:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")  # reset the peak (VmHWM) to the current RSS
            method = "VmHWM"
        except OSError:
            pass
    scale = (1 if sys.platform == "darwin" else 1024) / 2**20
    if method == "ru_maxrss":
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    t0 = common.now()
    if kind == "concepts":
        fit_concepts(n, spec)
    else:
        fit_head(z, y, spec)
    seconds = common.now() - t0
    peak = (_proc_status_mib("VmHWM") if method == "VmHWM"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)
    print(json.dumps({"kind": kind, "n": n, "rss_before_mib": before, "rss_peak_mib": peak,
                      "rss_increment_mib": peak - before, "seconds": seconds, "method": method}))
    return 0


def rss_in_subprocess(kind: str, n: int, spec: dict) -> dict:
    job = json.dumps({"kind": kind, "n": n, "spec": spec})
    proc = subprocess.run([sys.executable, __file__, "--child", job], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement subprocess ({kind}, n={n}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- the benchmark
def run(args, spec: dict) -> tuple[list[common.Check], dict]:
    import numpy as np
    from sklearn.cluster import KMeans

    checks: list[common.Check] = []
    results: dict = {}
    n_img, n_emb = args.concept_images, args.head_images

    # 1. Memory, tracemalloc, in this process (sizes interleaved: 1x, 4x, 1x, 4x ...).
    traced = {kind: {n: [] for n in sizes} for kind, sizes in
              (("concepts", (n_img, FACTOR * n_img)), ("head", (n_emb, FACTOR * n_emb)))}
    for _ in range(args.memory_repeats):
        for kind, sizes in traced.items():
            for n in sizes:
                sizes[n].append(measure(kind, n, spec))
    for kind, label, n1 in (("concepts", "ConceptModel.fit_stream", n_img), ("head", "KMeansHead.fit", n_emb)):
        small = common.median([m["traced_peak_mib"] for m in traced[kind][n1]])
        large = common.median([m["traced_peak_mib"] for m in traced[kind][FACTOR * n1]])
        unit = "images" if kind == "concepts" else "embeddings"
        extra = ""
        if kind == "concepts":
            seen = traced[kind][FACTOR * n1][0]["vectors_seen"]
            extra = f"; {seen} sampled vectors at {FACTOR}x"
        checks.append(common.Check(
            f"{label} peak traced memory, {FACTOR}x vs 1x {unit}", large / small,
            *(("<=", TARGET_GROWTH) if kind == "concepts" else (None, None)),
            detail=f"{small:.1f} MiB at {n1} {unit}, {large:.1f} MiB at {FACTOR * n1}{extra}"
                   + ("" if kind == "concepts" else
                      f"; linear by design: z_S is N x D float64 ({FACTOR * n1 * spec['dim'] * 8 / 2**20:.1f} MiB at {FACTOR}x)")))
        results[f"traced_{kind}"] = traced[kind]

    # 2. Memory, peak RSS of fresh subprocesses, one per size.
    if args.rss:
        for kind, label, n1 in (("concepts", "ConceptModel.fit_stream", n_img), ("head", "KMeansHead.fit", n_emb)):
            small, large = rss_in_subprocess(kind, n1, spec), rss_in_subprocess(kind, FACTOR * n1, spec)
            # An increment below the allocator's noise floor would make the ratio meaningless.
            floor = 1.0
            ratio = max(large["rss_increment_mib"], floor) / max(small["rss_increment_mib"], floor)
            checks.append(common.Check(
                f"{label} peak RSS increment (fresh process), {FACTOR}x vs 1x", ratio,
                *(("<=", TARGET_GROWTH) if kind == "concepts" else (None, None)),
                detail=f"+{small['rss_increment_mib']:.1f} MiB (peak {small['rss_peak_mib']:.0f} MiB) at {n1}, "
                       f"+{large['rss_increment_mib']:.1f} MiB (peak {large['rss_peak_mib']:.0f} MiB) at {FACTOR * n1}"))
            results[f"rss_{kind}"] = [small, large]

    # 3. Time: KMeansHead.fit versus scikit-learn's KMeans per class, identical work.
    z, y = embeddings(n_emb, spec)
    seed = np.random.RandomState(0).randint(np.iinfo(np.int32).max)  # what KMeansHead derives from 0
    z64 = z.astype(np.float64)
    # The head clusters each class's embeddings in canonical (sorted) order; give sklearn the same.
    per_class = [np.repeat(*np.unique(z64[y == c], axis=0, return_counts=True), axis=0) for c in np.unique(y)]

    def sklearn_loop():
        return [KMeans(n_clusters=spec["n_prototypes"], n_init=spec["n_init"], max_iter=spec["max_iter"],
                       random_state=seed).fit(Xc) for Xc in per_class]

    def head():
        return fit_head(z, y, spec)

    same = np.allclose(head().prototypes_, np.stack([km.cluster_centers_ for km in sklearn_loop()]))
    times = common.interleaved({"head": head, "sklearn": sklearn_loop}, repeats=args.repeats, warmup=1,
                               min_time=args.min_time)
    checks.append(common.Check(
        "KMeansHead.fit vs sklearn KMeans per class (same data, order, seed)",
        common.paired_ratio(times["head"], times["sklearn"]), "<=", TARGET_TIME,
        detail=f"head {common.spread(times['head'])}, sklearn {common.spread(times['sklearn'])}; "
               f"{n_emb} x {spec['dim']} embeddings, {spec['n_classes']} classes, H={spec['n_prototypes']}, "
               f"n_init={spec['n_init']}; identical prototypes: {same}"))
    results["fit_seconds"] = times
    results["identical_prototypes"] = bool(same)
    return checks, results


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2])
    p = common.parser(__doc__)
    p.add_argument("--params", default=str(common.REPO / "params.yaml"), help="params file (default params.yaml)")
    p.add_argument("--rss", action=__import__("argparse").BooleanOptionalAction, default=None,
                   help="also measure peak RSS in fresh subprocesses (default: on, off with --quick)")
    args = p.parse_args(argv)
    common.setup_threads(args.threads)
    from kmx_eval.validation import load_params

    params = load_params(args.params)
    c = params.explain.concepts
    # The first concept scope of the study (each scope is one more model of the same size).
    # Sizes of the default study: B234 of ResNet34 (C_2 + C_3 + C_4 = 128 + 256 + 512) on the grid
    # of B2 (stride 8); shapes' training split (6 classes x 200).
    image_size = params.backbone.image_size
    spec = {"seed": 0, "dim": 896, "grid": image_size // 8, "n_classes": 6, "true_concepts": 12,
            "feature_batch": params.features.batch_size, "n_concepts": c.n_concepts, "scope": c.scope[0],
            "locations_per_image": c.locations_per_image, "concept_batch": c.batch_size,
            "n_prototypes": params.head.n_prototypes, "n_init": params.head.n_init,
            "max_iter": params.head.max_iter, "threads": args.threads}
    args.concept_images, args.head_images = c.n_images, 1200
    if args.quick:
        spec.update(dim=128, grid=6, feature_batch=16, concept_batch=256, n_init=1)
        args.concept_images, args.head_images = 32, 120
    args.rss = (not args.quick) if args.rss is None else args.rss
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.memory_repeats = 1 if args.quick else 2
    args.min_time = 0.05 if args.quick else 0.5
    env_before = common.environment()
    checks, results = run(args, spec)
    common.print_table(
        f"k-means memory and time (concepts: {args.concept_images} vs {FACTOR * args.concept_images} images "
        f"of F_S {spec['dim']} x {spec['grid']}x{spec['grid']}; head: {args.head_images} vs "
        f"{FACTOR * args.head_images} embeddings of dim {spec['dim']})", checks,
        notes=["memory ratios are peak(4x) / peak(1x); time ratio is median over interleaved rounds "
               "of t(KMeansHead.fit) / t(sklearn KMeans loop)"])
    return common.finish(args, "bench_kmeans_memory", checks,
                         {**spec, "concept_images": args.concept_images, "head_images": args.head_images,
                          "factor": FACTOR, "rss": args.rss, "repeats": args.repeats}, results, env_before)


if __name__ == "__main__":
    sys.exit(main())
