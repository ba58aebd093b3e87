"""What each stage does with files: the one orchestration layer between the stages and the library.

The domain packages (:mod:`kmx_eval.data`, :mod:`~kmx_eval.models`, :mod:`~kmx_eval.heads`,
:mod:`~kmx_eval.explain`, :mod:`~kmx_eval.metrics`) take arrays and objects and return them; the
modules here load a stage's inputs, call them in order and hand back what the stage writes:

- :mod:`kmx_eval.pipeline.train` - one seed's backbone, trained or the user's checkpoint (``train``);
- :mod:`kmx_eval.pipeline.fit` - the heads and concept models of one combination (``fit``);
- :mod:`kmx_eval.pipeline.explain` - the maps file of a k-means head or the CNN (``explain``, ``explain_cnn``);
- :mod:`kmx_eval.pipeline.evaluate` - the explained model of one seed and every metric on it (``evaluate``).

Nothing is imported here, so that a stage's DVC deps list only the modules it runs
(tests/structure/test_dvc_deps.py); docs/ARCHITECTURE.md states the layer rule.
"""
