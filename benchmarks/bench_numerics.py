"""What the portable numerics mode costs: a training step and a forward pass under each mode.

``backbone.numerics: portable`` pins torch (ATen), oneDNN, MKL, OpenBLAS and numpy to AVX2 kernels
(kmx_eval/numerics.py); ``native`` lets each library take this CPU's fastest. A mode is chosen
when the libraries load, so each mode runs in its own worker process, started with the mode's
environment before torch is imported. The parent asks the workers for one sample at a time,
round-robin (as benchmarks/_common.interleaved does in one process), so both modes see the same
load; ratio = median over rounds of t_portable / t_native (a cost: 1.0 = free).

Workload: the default study's backbone, ResNet18 from scratch at 96 px, AdamW; a training step
(forward, backward, optimiser step) on a batch of 32, and an eval forward of 64 images (the
embed, explain and evaluate stages' work). Each worker prints its digest of the weights after the
run: the portable digest is the one another AVX2 CPU should give for the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import _common as common

from kmx_eval import numerics

TARGET = 1.25  # portable is the default while it costs at most a quarter more


def worker(threads: int, batch: int, size: int) -> None:
    """A worker's loop: one line in (``train`` / ``forward`` / ``digest``), one line out."""
    import hashlib
    import time

    import torch
    import torchvision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    x_eval = torch.randn(2 * batch, 3, size, size)

    def train():
        model.train()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def forward():
        model.eval()
        with torch.no_grad():
            model(x_eval)

    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability()}), flush=True)
    for line in sys.stdin:
        what = line.strip()
        if what == "digest":
            data = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
            print(json.dumps({"digest": hashlib.sha256(data).hexdigest()[:16]}), flush=True)
            continue
        t0 = time.perf_counter()
        (train if what == "train" else forward)()
        print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


def start(mode: str, args) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ)
    numerics.pin(mode, env)  # before the worker imports torch
    proc = subprocess.Popen([sys.executable, __file__, "--worker", str(args.threads or 1), str(args.batch),
                             str(args.size)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())["capability"]


def ask(proc: subprocess.Popen, what: str) -> dict:
    proc.stdin.write(what + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*map(int, sys.argv[2:5]))
        return 0
    p = common.parser(__doc__)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=96)
    args = p.parse_args()
    if args.quick:
        args.batch, args.size = 4, 32
    repeats = args.repeats or (2 if args.quick else 7)
    env_before = common.environment()
    workers = {mode: start(mode, args) for mode in ("native", "portable")}
    checks, data = [], {"capability": {m: cap for m, (_, cap) in workers.items()}}
    try:
        for what in ("train", "forward"):
            times: dict[str, list[float]] = {m: [] for m in workers}
            for r in range(repeats + 1):  # round 0 warms up
                order = list(workers)[r % 2:] + list(workers)[:r % 2]
                for mode in order:
                    seconds = ask(workers[mode][0], what)["seconds"]
                    if r:
                        times[mode].append(seconds)
            ratio = common.paired_ratio(times["portable"], times["native"])
            label = "training step" if what == "train" else "eval forward"
            checks.append(common.Check(
                f"portable / native, {label} (batch {args.batch if what == 'train' else 2 * args.batch}, "
                f"{args.size} px)", ratio, "<=", TARGET,
                detail=f"native {common.spread(times['native'])}, portable {common.spread(times['portable'])}",
                data=times))
        data["digest"] = {m: ask(proc, "digest")["digest"] for m, (proc, _) in workers.items()}
    finally:
        for proc, _ in workers.values():
            proc.stdin.close()
            proc.wait(timeout=60)
    common.print_table(
        f"numerics modes, ResNet18, {args.threads or 1} thread(s): native dispatches to "
        f"{data['capability']['native']}, portable to {data['capability']['portable']}", checks,
        notes=[f"weights after the run: native {data['digest']['native']}, portable {data['digest']['portable']}",
               f"CPU: {numerics.cpu_model()}"])
    return common.finish(args, "numerics", checks, {"batch": args.batch, "size": args.size,
                                                    "repeats": repeats}, extra=data, env_before=env_before)


if __name__ == "__main__":
    raise SystemExit(main())
