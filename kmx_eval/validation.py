"""Whole-file validation of ``params.yaml`` against every registry and against this machine.

:mod:`kmx_eval.config` is the schema alone; the names a params file gives (dataset sources,
architectures, explainers, Quantus metrics) are checked against registries that live with their
implementations. This module gathers all of them, for the ``resolve`` stage (which runs first in
every ``dvc repro``, so a wrong name stops the study before any work), for tests and for scripts.
A stage checks only the names it uses, so it does not import (and depend on) the rest.

:func:`check_machine` adds what only the machine can tell (a CUDA GPU, the memory a batch needs,
a checkpoint file), so that the ``resolve`` stage stops there too instead of a later stage.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmx_eval import config
from kmx_eval.data import SOURCES
from kmx_eval.errors import DataError, ParamsError, UnavailableError
from kmx_eval.explain import EXPLAINERS
from kmx_eval.metrics.quantus import QUANTUS_METRICS
from kmx_eval.models.backbone import ARCHITECTURES

log = logging.getLogger("kmx_eval")

#: Environment variable: "1" where the stages will run on other machines than this one.
OTHER_MACHINE = "KMX_EVAL_OTHER_MACHINE"
#: Bytes of one float32 value: training, embedding and explaining run in float32.
FLOAT32 = 4
GIB = 2**30


def all_registries() -> dict[str, Any]:
    """Every registry a params name refers to, keyed as :func:`kmx_eval.config.parse_params` expects."""
    return {"sources": SOURCES, "architectures": ARCHITECTURES, "explainers": EXPLAINERS,
            "quantus_metrics": QUANTUS_METRICS}


def parse_params(raw: Any, source: str = "params.yaml") -> config.Params:
    """:func:`kmx_eval.config.parse_params` with every name checked."""
    return config.parse_params(raw, source=source, registries=all_registries())


def load_params(path: str | Path = "params.yaml") -> config.Params:
    """:func:`kmx_eval.config.load_params` with every name checked."""
    return config.load_params(path, registries=all_registries())


@dataclass(frozen=True)
class Machine:
    """What :func:`check_machine` needs to know of the machine the study runs on."""

    cuda: bool
    #: Memory of the device the backbone runs on (RAM on CPU, the first GPU's memory on CUDA).
    memory_bytes: int

    @classmethod
    def this(cls) -> "Machine":
        import torch  # imported here: only the resolve stage asks about the hardware

        cuda = torch.cuda.is_available()
        if cuda:
            return cls(True, int(torch.cuda.get_device_properties(0).total_memory))
        return cls(False, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_machine(params: config.Params, machine: Machine | None = None) -> None:
    """Stop with one line when this machine cannot run ``params`` (checked by the resolve stage).

    - ``backbone.device: cuda`` without a CUDA GPU; ``mixed_precision`` with ``device: cpu`` (a
      contradiction: bfloat16 autocast is CUDA-only) is refused, with ``device: auto`` on a machine
      without CUDA it is a warning (the same params run mixed precision on a GPU machine);
    - each dataset's checkpoint: an existing file (``~`` expanded), not a folder;
    - memory: :func:`batch_memory` of every batch size against the device's memory.

    Where the stages run on other machines (``kmx-eval launch``'s jobs), the submitting node sets
    ``KMX_EVAL_OTHER_MACHINE=1``: the checks of CUDA and memory are then left to each job's own
    resolve run, and only the files are checked here.
    """
    files_only = os.environ.get(OTHER_MACHINE) == "1"
    machine = machine or (None if files_only else Machine.this())
    bb = params.backbone
    for name in params.datasets:
        cfg = params.backbone_for(name)
        if cfg.checkpoint is not None:
            check_checkpoint_file(cfg.checkpoint, _backbone_key(params, name, "checkpoint"))
    if bb.mixed_precision and bb.device == "cpu":
        raise ParamsError("backbone.mixed_precision: bfloat16 autocast runs on CUDA only, so with "
                          "device: cpu it would be ignored; set mixed_precision: false, or device: auto")
    if machine is None:
        return
    if bb.device == "cuda" and not machine.cuda:
        raise UnavailableError("backbone.device is 'cuda' but torch sees no CUDA GPU on this machine; "
                               "use device: auto (CUDA when present) or cpu")
    if bb.mixed_precision and not machine.cuda:
        log.warning("backbone.mixed_precision is ignored on this machine (no CUDA GPU): the study runs "
                    "in float32, and its numbers differ from a GPU run's")
    for name in params.datasets:
        batch_memory(params, name, machine.memory_bytes)


def check_checkpoint_file(path: str, where: str) -> Path:
    """The checkpoint's path, ``~`` expanded, when it is a file; else one line naming ``where``."""
    file = Path(path).expanduser()
    if file.is_dir():
        inside = sorted(p.name for p in file.iterdir() if p.suffix in (".safetensors", ".pt", ".pth", ".bin"))
        found = f" (it holds {', '.join(inside[:4])})" if inside else ""
        raise DataError(f"{where}: {path} is a folder{found}; give the file of the model's state dict "
                        f"(.safetensors, or a .pt/.pth saved with torch.save)")
    if not file.is_file():
        raise DataError(f"{where}: checkpoint {path} does not exist"
                        f"{f' (read as {file})' if str(file) != path else ''}")
    return file


def _backbone_key(params: config.Params, dataset: str, key: str) -> str:
    """The params key that sets ``key`` of ``dataset``'s backbone: its override, or the global one."""
    over = params.datasets[dataset].backbone.model_dump(exclude_none=True)
    return f"datasets.{dataset}.backbone.{key}" if key in over else f"backbone.{key}"


def batch_memory(params: config.Params, dataset: str, memory_bytes: int) -> None:
    """Refuse an image size or batch size whose batches cannot fit in ``memory_bytes``.

    The estimate is a lower bound: one image takes ``3 * image_size**2`` input values plus every
    block output of the architecture at that size (channels x grid, read off the meta device), in
    float32; training and explaining (gradients) keep that twice, embedding once. Layers inside a
    block, optimiser state and the prepared images come on top, so a batch refused here could never
    run, and one accepted may still need more.
    """
    cfg = params.backbone_for(dataset)
    arch = ARCHITECTURES.get(cfg.architecture)
    size = cfg.image_size
    per_image = FLOAT32 * (3 * size * size + sum(c * h * w for c, h, w in arch.shapes(size).values()))
    batches = (("backbone.batch_size", cfg.batch_size, 2, "training"),
               ("features.batch_size", params.features.batch_size, 1, "embedding"),
               ("explain.batch_size", params.explain.batch_size, 2, "explaining"))
    for key, batch, copies, what in batches:
        need = batch * copies * per_image
        if need <= memory_bytes:
            continue
        basis = (f"at least {need / GIB:,.1f} GiB for {what} a batch of {batch} images at {size} px "
                 f"(input and {arch.name}'s block outputs in float32{', forward and backward' if copies > 1 else ''}), "
                 f"more than this machine's {memory_bytes / GIB:,.1f} GiB")
        fits = memory_bytes // (copies * per_image)
        if fits >= 1:
            where = _backbone_key(params, dataset, "batch_size") if key.startswith("backbone") else key
            raise ParamsError(f"{where}: {batch} needs {basis}; at most {fits} images per batch fit")
        largest = int(size * (memory_bytes / (copies * per_image)) ** 0.5)
        raise ParamsError(f"{_backbone_key(params, dataset, 'image_size')}: {size} px needs {basis}; "
                          f"even one image needs {copies * per_image / GIB:,.1f} GiB: at most about "
                          f"{largest} px fits")
