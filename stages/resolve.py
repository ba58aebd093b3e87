"""resolve: validate params.yaml against every registry and this machine; write each stage's settings.

Runs first in ``dvc repro`` whenever params.yaml or its code changes (``make repro`` also runs it
before DVC reads dvc.yaml, so malformed params meet this validator, not DVC's templating): a wrong
key, name or size stops the study here, before any work. It writes
``resolved/<dataset>/<stage>[-<combination>].json``, the settings one
stage run reads with every default filled in (kmx_eval/stage_params.py); each stage lists its file
as a DVC dependency, so it reruns exactly when a value it reads changes, and a file rewritten
with the same content reruns nothing.
"""

from __future__ import annotations

import logging
import sys

from kmx_eval import io, paths
from kmx_eval.cli import stage
from kmx_eval.stage_params import resolved_settings, stage_runs
from kmx_eval.validation import all_registries, check_machine

log = logging.getLogger("kmx_eval")


@stage(registries=all_registries)
def main(params):
    """Validate params.yaml with every registry; write resolved/ (one JSON per stage run)."""
    check_machine(params)
    runs = stage_runs(params)
    # One atomic write per file (each is a dependency of its own stage, consistent on its own),
    # not one swap of the folder: an unchanged file keeps its bytes, and DVC reruns nothing for it.
    written = set()
    for name, dataset, combination in runs:
        target = paths.resolved_settings(name, dataset, combination)
        io.write_json(target, resolved_settings(params, name, dataset, combination))
        written.add(target)
    for stale in set(paths.RESOLVED_DIR.rglob("*.json")) - written:  # a dataset left the study
        stale.unlink()
    log.info("%d datasets, %d stage runs: settings resolved", len(params.datasets), len(runs))


if __name__ == "__main__":
    sys.exit(main())
