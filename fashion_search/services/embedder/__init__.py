"""Embedder service: garment image → L2-normalised vector (EfficientNet-Lite0 features + seed-001 colour)."""
