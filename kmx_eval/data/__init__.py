"""Dataset sources (placeholder registry; filled by the data module)."""
from kmx_eval.registry import Registry

SOURCES = Registry("dataset source")
