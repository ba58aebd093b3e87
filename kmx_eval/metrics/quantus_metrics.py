"""Quantus metrics (placeholder registry; filled by the metrics module)."""
from kmx_eval.registry import Registry

QUANTUS_METRICS = Registry("Quantus metric")
