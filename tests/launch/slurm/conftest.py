"""The real-cluster tests run only under `make test-slurm` (KMX_TEST_SLURM=1): they drive a SLURM
cluster for many minutes, and `make test` must not collect them twice its own time."""

import os

collect_ignore_glob = [] if os.environ.get("KMX_TEST_SLURM") == "1" else ["test_*.py"]
