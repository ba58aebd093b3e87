"""Metrics of docs/METHOD.md, section 4: arrays in, numbers (or per-sample vectors) out.

- :mod:`.accuracy`: top-1 accuracy and agreement with the CNN, as per-sample 0/1 vectors.
- :mod:`.prototype_fidelity`: proximity ratio (Euclidean, cosine), class purity@m, decision
  agreement without offsets, diversity (the scale-free ``diversity_scaled`` and KMEx's own
  ``diversity_kmex``) - for k-means and linear prototypes in the same space z_S.
- :mod:`.quantus`: one declarative spec per Quantus metric in the
  :data:`~.quantus.QUANTUS_METRICS` registry (category, direction, needs, invariances), plain
  settings, and :func:`~.quantus.run_quantus`, which scores each sample or says why it could not.
- :mod:`.concept_fidelity`: purity, adjusted Rand index and normalised mutual information of
  concept maps against part maps (or object masks).
- :mod:`.parts`: the part pointing game and concept-part alignment against annotated part
  locations (keypoints, such as CUB-200-2011's).
- :mod:`.bootstrap`: percentile bootstrap intervals and paired differences over samples; across
  seeds, images resampled as clusters, seed-level spread; Wilson intervals for proportions.
- :mod:`.tidy`: the tidy table format of ``metrics.csv``, ``samples.csv`` and ``curves.csv``.
- :mod:`.evaluation`: the ``evaluate`` stage's tables assembled from arrays.

Submodules are imported on use: ``kmx_eval.config`` imports the Quantus registry at start-up and
must not pay for torch, pandas or Quantus.
"""
