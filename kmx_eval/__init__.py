"""kmx-eval: a reproducible benchmark of k-means post-hoc self-explanations (KMEx) of CNNs.

The package is the library; the DVC stages in ``stages/`` only wire files to its functions.

- :mod:`kmx_eval.data`     dataset sources (synthetic, digits, imagefolder, hf) and their on-disk form
- :mod:`kmx_eval.models`   the backbone, its blocks B1..B4 and block combinations F_S, z_S
- :mod:`kmx_eval.heads`    the k-means head (KMEx), the linear head seen as an SEM, the linear probe
- :mod:`kmx_eval.explain`  concept maps, gradient-free attribution maps and post-hoc baselines
- :mod:`kmx_eval.metrics`  accuracy, prototype fidelity, Quantus metrics, concept fidelity, bootstrap
- :mod:`kmx_eval.report`   tables, figures and the self-contained HTML report
"""

__version__ = "0.1.0"

# A stage process (``python stages/<name>.py``) pins its CPU kernels to backbone.numerics here,
# before any module imports numpy or torch: each library picks its kernels once, when it loads.
# Any other process (tests, benchmarks) is left as it is. See kmx_eval/numerics.py.
from kmx_eval import numerics as _numerics  # noqa: E402  (imports neither numpy nor torch)

_numerics.pin_stage_process()
