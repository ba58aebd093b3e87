"""Backbones (placeholder registry; filled by the models module)."""
from kmx_eval.registry import Registry

ARCHITECTURES = Registry("backbone architecture")
