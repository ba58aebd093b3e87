"""Metrics of METHOD.md section 4."""
