"""``python -m kmx_eval.launch`` is ``kmx-eval`` (launch, collect)."""

from kmx_eval.launch.cli import main

raise SystemExit(main())
