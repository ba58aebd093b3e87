"""Device selection: ``auto`` picks CUDA when present, ``cuda`` without a GPU is a clear error."""

from __future__ import annotations

import torch

from kmx_eval.errors import UnavailableError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """Map the params value ``auto`` / ``cpu`` / ``cuda`` to a :class:`torch.device`."""
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


def autocast(device: torch.device, enabled: bool):
    """Mixed precision context: bfloat16 autocast on CUDA when enabled, a no-op otherwise."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=bool(enabled and device.type == "cuda"))
