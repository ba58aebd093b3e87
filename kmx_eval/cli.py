"""The entry-point wrapper shared by every stage script.

A stage is a function ``main(params, *names)``; :func:`stage` turns it into a command that reads
``--params`` (default ``params.yaml``), validates it, and turns every :class:`KmxError` (bad params,
bad data, no network, no GPU) into one line on stderr and exit status 2, without a traceback.
Anything else is a bug and keeps its traceback.
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

from kmx_eval import io
from kmx_eval.config import Params, load_params
from kmx_eval.errors import KmxError

EXIT_USER_ERROR = 2

log = logging.getLogger("kmx_eval")


def _one_line_warnings(message, category, filename, lineno, file=None, line=None):
    # Library warnings (sklearn, quantus) are kept but shown as one readable line each.
    print(f"kmx-eval: warning: {message}", file=file or sys.stderr)


def stage(fn: Callable[..., None]) -> Callable[[list[str] | None], int]:
    """Wrap ``fn(params, *names)`` as a command-line stage (see module docstring)."""
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
            params: Params = load_params(args.params)
            # A stage writes only under the output folders of the repository it runs in.
            with io.guard_outputs(os.getcwd()):
                fn(params, *(getattr(args, n) for n in names))
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
