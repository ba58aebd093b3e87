"""The entry-point wrapper shared by every stage script.

A stage is a function ``main(params, *names)``; :func:`stage` turns it into a command that reads
``--params`` (default ``params.yaml``), validates it, and turns every :class:`KmxError` (bad params,
bad data, no network, no GPU) into one line on stderr and exit status 2, without a traceback.
Anything else is a bug and keeps its traceback.

The stage receives a :class:`~kmx_eval.stage_params.StageParams` view: it may read only the params
its row of ``STAGE_SECTIONS`` declares, which is what its DVC dependency
``resolved/<dataset>/<stage>[-<combination>].json`` holds. The names ``dataset`` and
``combination`` of ``main``'s signature say which dataset and combination the run is for.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import logging
import os
import sys
import warnings
from typing import Callable

from kmx_eval import io, numerics, paths
from kmx_eval.config import load_params
from kmx_eval.data import SOURCES
from kmx_eval.errors import KmxError
from kmx_eval.stage_params import StageParams

EXIT_USER_ERROR = 2

log = logging.getLogger("kmx_eval")


def _one_line_warnings(message, category, filename, lineno, file=None, line=None):
    # Library warnings (sklearn, quantus) are kept but shown as one readable line each.
    print(f"kmx-eval: warning: {message}", file=file or sys.stderr)


def write_platform_record(params, prog: str, dataset: str | None, combination: str | None) -> None:
    """Write where this stage run's numbers were made to ``metrics/platform/`` (the report's
    ``reports/platform.json``): see :func:`kmx_eval.paths.platform_record`. The resolve stage
    computes nothing and writes none."""
    if prog == "resolve":
        return
    from kmx_eval.device import resolve_device  # here: imports torch, which must load after the pins

    cfg = params.backbone_for(dataset) if dataset else params.backbone
    record = numerics.platform_record(mode=cfg.numerics, device=resolve_device(cfg.device),
                                      threads=cfg.threads)
    io.write_json(paths.platform_record(prog, dataset, combination), record)


def stage(fn: Callable[..., None] | None = None, *,
          registries: Callable[[], dict] | None = None) -> Callable[[list[str] | None], int]:
    """Wrap ``fn(params, *names)`` as a command-line stage (see module docstring).

    ``registries`` returns the registries to check names against (default: the dataset sources
    only, which dataset entries need); the ``resolve`` stage passes all of them.
    """
    if fn is None:
        return functools.partial(stage, registries=registries)  # type: ignore[return-value]
    names = [p for p in inspect.signature(fn).parameters][1:]
    prog = os.path.basename(inspect.getfile(fn)).removesuffix(".py")

    @functools.wraps(fn)
    def main(argv: list[str] | None = None) -> int:
        parser = argparse.ArgumentParser(prog=f"stages/{prog}.py", description=(fn.__doc__ or "").strip())
        for name in names:
            parser.add_argument(name)
        parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO, format=f"[{prog}] %(message)s")
        warnings.showwarning = _one_line_warnings
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        try:
            # Dataset entries need their source's schema; the other registries' names are checked
            # by the resolve stage and where they are used.
            params = load_params(args.params,
                                 registries=registries() if registries else {"sources": SOURCES})
            numerics.check_pinned(params.backbone.numerics)
            values = {n: getattr(args, n) for n in names}
            view = StageParams(params, prog, values.get("dataset"), values.get("combination"))
            # A stage writes only under the output folders of the repository it runs in.
            with io.guard_outputs(os.getcwd()):
                fn(view, *values.values())
                write_platform_record(params, prog, values.get("dataset"), values.get("combination"))
        except KmxError as exc:
            print(f"kmx-eval {prog}: error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print(f"kmx-eval {prog}: interrupted; outputs are written atomically, rerun dvc repro",
                  file=sys.stderr)
            return 130
        return 0

    def entry(argv: list[str] | None = None) -> int:
        return main(argv)

    entry.run = main  # type: ignore[attr-defined]
    return entry
