"""Explainers (placeholder registry; filled by the explain module)."""
from kmx_eval.registry import Registry

EXPLAINERS = Registry("explainer")
