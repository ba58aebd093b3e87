"""Backbones and their blocks: B1..B4 taps, block combinations F_S and pooled embeddings z_S."""
