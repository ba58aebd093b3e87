"""Scale-out: run a study's shards as separate jobs (SLURM or local processes) that share results
through a DVC remote, then collect them on one machine.

Nothing here schedules, queues or tracks jobs by itself: submitit submits the jobs and knows their
state (from SLURM's ``sacct``, or from the local processes and submitit's result pickles), and DVC
carries the results: every job pushes its outputs and its *run cache* (one record per stage run:
the hashes of its command, dependencies and params, and of its outputs) to the remote, and
``collect`` restores each stage from that record instead of running it again.

- :mod:`kmx_eval.launch.shards`    split the DAG of ``dvc.yaml`` into shards (per dataset, or per
  dataset x block combination)
- :mod:`kmx_eval.launch.runcache`  the DVC operations: remote, run-cache push of every output,
  restore-only of a shard's stages
- :mod:`kmx_eval.launch.job`       what one job does: a clean checkout of the commit, ``dvc repro
  --pull`` of its shard, push of the run cache and of every output it names
- :mod:`kmx_eval.launch.executors` the submitit executors (SLURM, local) and their parameters
- :mod:`kmx_eval.launch.status`    the state of each shard's latest job, read from submitit's folder
- :mod:`kmx_eval.launch.cli`       the ``kmx-eval launch`` and ``kmx-eval collect`` commands
"""
