"""Image features for the ablation and the holdout evaluations, computed once per photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.images import decode_image
from fashion_search.core.settings import Settings
from fashion_search.core.vectors import mirror_averaged

ABLATION_VARIANTS = ("imagenet-1280", "imagenet-1280+color", "learned-512", "learned-512+color (542)")


def embed_all(
    records: list[CatalogRecord], embedders: dict[str, object], settings: Settings, catalog: bool = False
) -> dict[str, np.ndarray]:
    """Every ablation variant's vectors for the records, from one forward pass per network; catalog records are
    mirror-averaged as ingest does it (settings.mirror_averaging)."""
    from fashion_search.pipeline.search_pipeline import prepare

    mirrored = mirror_averaged(settings.mirror_averaging, catalog)
    parts: dict[str, list[np.ndarray]] = {v: [] for v in ABLATION_VARIANTS}
    batch = max(1, settings.ingest_batch_size)
    for start in tqdm(range(0, len(records), batch), unit="batch", desc="ablation features"):
        images = [prepare(decode_image(Path(r.image_path).read_bytes(), settings), settings)
                  for r in records[start:start + batch]]
        for prefix, embedder in embedders.items():
            plain, fused = ABLATION_VARIANTS[0:2] if prefix == "imagenet" else ABLATION_VARIANTS[2:4]
            deep, both = embedder.embed_parts(images, mirrored)  # type: ignore[attr-defined]
            parts[plain].append(deep)
            parts[fused].append(both)
    return {v: np.concatenate(p) for v, p in parts.items() if p}
