"""Synthetic training/evaluation data: garment cut-outs from catalog photos composed into street-like scenes."""
