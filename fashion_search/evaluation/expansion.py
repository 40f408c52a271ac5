"""Choosing the query-expansion depth where no reported figure is measured: the embedder's product holdout.

A `train embedder --holdout-only` model never saw its held-out share of train/ (in either stage), so those
products, searched against the rest of train/, tell how deep to expand without looking at validation/.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fashion_search.core.catalog import load_catalog
from fashion_search.core.settings import Settings
from fashion_search.evaluation.features import ABLATION_VARIANTS, embed_all
from fashion_search.evaluation.metrics import expanded_queries, knn_relevance, precision_per_query, precision_row
from fashion_search.evaluation.significance import CONFIDENCE, Interval, paired_difference

SCORE = "P@10"  # the seed-001 headline figure
# A shopper who uploads a catalog photo must get that product first: deep expansion pulls the query towards the
# average of its neighbours and can push the exact match down, so a depth qualifies only if every held-out photo,
# added to the catalog, still comes first for itself.
SELF_FIRST = "self@1"


def check_holdout_meta(meta: dict[str, object]) -> None:
    """ValueError unless the weights were trained with --holdout-only, on the trainer's current split share."""
    from fashion_search.datasets.splits import HOLDOUT

    if not meta.get("holdout_only"):
        raise ValueError("these weights were trained on every product; train them with --holdout-only")
    if meta.get("holdout_share") != HOLDOUT:
        share = meta.get("holdout_share")
        raise ValueError(f"these weights held out {share} of the products, the trainer now holds out {HOLDOUT}")


def holdout_mask(categories: Sequence[str], meta: dict[str, object]) -> np.ndarray:
    """The held-out products of a --holdout-only model (the split its trainer drew), as a boolean mask."""
    from fashion_search.datasets.splits import split_products

    check_holdout_meta(meta)
    classes = sorted(set(categories))
    return split_products(np.array([classes.index(c) for c in categories]), int(meta["seed"]))  # type: ignore[arg-type]


@dataclass
class HoldoutVectors:
    """Every train photo embedded by a --holdout-only model: as a query and as a catalog entry, with its class and
    whether the model held it out."""

    queries: np.ndarray
    catalog: np.ndarray
    labels: np.ndarray
    held: np.ndarray


def holdout_vectors(settings: Settings, catalog_dir: str, weights: Path) -> HoldoutVectors:
    """The 542-d vectors of a --holdout-only model's train photos (ValueError for other weights)."""
    from fashion_search.services.embedder.model import GarmentEmbedder

    meta = torch.load(weights, map_location="cpu", weights_only=True)["meta"]
    check_holdout_meta(meta)
    records = load_catalog(catalog_dir)
    held = holdout_mask([r.category for r in records], meta)
    update = {"embedder_model": meta["variant"], "embedder_weights": weights}
    embedder = GarmentEmbedder(settings.model_copy(update=update))
    fused = ABLATION_VARIANTS[-1]
    vecs = embed_all(records, {"learned": embedder}, settings)[fused]
    # Catalog-only mirror averaging gives the catalog side its own vectors.
    catalog = (
        embed_all(records, {"learned": embedder}, settings, catalog=True)[fused]
        if settings.mirror_averaging == "catalog" else vecs
    )
    return HoldoutVectors(vecs, catalog, np.array([r.category for r in records]), held)


def expansion_sweep(
    settings: Settings, catalog_dir: str, weights: Path, depths: Sequence[int]
) -> tuple[dict[int, dict[str, float]], int, int]:
    """P@5/10/20 and mAP@20 of the held-out products against the fitted ones, per depth, with each depth's paired
    P@10 difference from the chosen one (bootstrap interval); also (held out, fitted)."""
    v = holdout_vectors(settings, catalog_dir, weights)
    vecs, catalog, labels, held = v.queries, v.catalog, v.labels, v.held
    per_query: dict[int, np.ndarray] = {}
    table: dict[int, dict[str, float]] = {}
    for d in depths:
        rel = knn_relevance(vecs[held], labels[held], catalog[~held], labels[~held], d)
        per_query[d] = precision_per_query(rel)
        table[d] = precision_row(rel) | {SELF_FIRST: self_first(vecs[held], catalog, np.flatnonzero(held), d)}
    chosen = best_depth(table)
    for d in depths:
        if d != chosen:
            table[d] |= paired_difference(per_query[chosen], per_query[d]).fields("ΔP@10")
    return table, int(held.sum()), int((~held).sum())


def self_first(queries: np.ndarray, catalog: np.ndarray, own: np.ndarray, expand: int) -> float:
    """Share of queries whose own catalog entry (catalog[own[i]]) ranks first after expansion."""
    queries = expanded_queries(queries, catalog, expand)
    return round(float(((queries @ catalog.T).argmax(axis=1) == own).mean()), 4)


def best_depth(table: dict[int, dict[str, float]]) -> int:
    """Among depths that keep every exact match first, the best P@10; the shallowest of equals."""
    keep = [d for d in table if table[d][SELF_FIRST] >= 1.0] or [min(table)]
    return min(keep, key=lambda d: (-table[d][SCORE], d))


def expansion_markdown(table: dict[int, dict[str, float]], held: int, fitted: int, weights: Path, command: str) -> str:
    """Markdown table of a sweep, naming the chosen depth."""
    lines = [
        "## Query expansion depth, chosen on the embedder's product holdout", "",
        f"Command: `{command}` — weights `{weights}` (trained with `--holdout-only`): {held} held-out products "
        f"searched against the {fitted} it was trained on, exact cosine kNN; {SELF_FIRST}: share of held-out photos, "
        f"added to the catalog, that still come first for themselves. Chosen depth (best {SCORE} among depths "
        f"with {SELF_FIRST} = 1, shallowest of equals): **{best_depth(table)}**. ΔP@10: paired difference from the "
        f"chosen depth on the same queries, {CONFIDENCE:.0%} bootstrap interval (one that holds 0 is within chance).",
        "", f"| depth | P@5 | P@10 | P@20 | mAP@20 | {SELF_FIRST} | ΔP@10 vs chosen [CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for depth, row in table.items():
        delta = Interval.from_fields(row, "ΔP@10")
        lines.append(f"| {depth} | {row['P@5']:.3f} | {row['P@10']:.4f} | {row['P@20']:.3f} | {row['mAP@20']:.3f} "
                     f"| {row[SELF_FIRST]:.3f} | {delta.signed() if delta else 'chosen'} |")
    return "\n".join(lines) + "\n"
