"""Device selection: ``auto`` picks CUDA when present, ``cuda`` without a GPU is a clear error."""

from __future__ import annotations

import torch

from kmx_eval.errors import UnavailableError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str, threads: int | None = None) -> torch.device:
    """Map the params value ``auto`` / ``cpu`` / ``cuda`` to a :class:`torch.device`.

    ``threads`` (``backbone.threads``), when given, pins the CPU threads of torch and of the BLAS
    and OpenMP pools for the rest of the process (:func:`pin_threads`).
    """
    if threads is not None:
        pin_threads(threads)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UnavailableError(
                "backbone.device is 'cuda' but torch sees no CUDA GPU on this machine; "
                "use device: auto or cpu"
            )
        return torch.device("cuda")
    if name == "cpu":
        return torch.device("cpu")
    raise UnavailableError(f"backbone.device {name!r} is not one of {', '.join(DEVICES)}")


def pin_threads(threads: int) -> None:
    """Run torch and numpy's BLAS/OpenMP pools on ``threads`` threads from now on.

    A float sum split over threads is rounded differently for each split, so training's bytes
    (and those of some BLAS reductions) depend on the thread count. Pinning it, rather than taking
    the machine's core count, makes a run reproduce byte for byte on another machine of the same
    kind whatever its number of cores.
    """
    # threadpoolctl: only a stage that computes pins threads, and the resolve stage imports this module
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(int(threads))
    threadpool_limits(limits=int(threads))  # stays in force: the returned object is not used


def autocast(device: torch.device, enabled: bool):
    """Mixed precision context: bfloat16 autocast on CUDA when enabled, a no-op otherwise."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=bool(enabled and device.type == "cuda"))
