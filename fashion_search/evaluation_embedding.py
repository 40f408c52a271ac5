"""Choosing the embedding's settings (colour weight, where mirror averaging applies) on the embedder's product holdout.

A `train embedder --holdout-only` model never saw its held-out share of train/ products, so two figures measured on
them say which setting to ship without looking at validation/: category P@10 (held-out photos against the fitted
ones, with the shipped query expansion) and street-to-shop R@1 (garments of held-out products in the train scenes,
detected and segmented by the shipped models, against the held-out product photos). Both goals count equally, as
in the trainer's choice of epochs. One forward pass per image and its mirror image serves every setting: mirror
averaging "off", "catalog" (catalog photos only, free at query time) or "both" (queries too).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from fashion_search.catalog import CatalogRecord, load_catalog
from fashion_search.datasets.scenes import load_scenes
from fashion_search.domain import Box
from fashion_search.evaluation import knn_relevance, precision_per_query, precision_row
from fashion_search.evaluation_expansion import holdout_mask
from fashion_search.evaluation_scenes import MATCH_IOU, TOP_K, matching
from fashion_search.images import decode_image
from fashion_search.pipeline import SearchPipeline, prepare
from fashion_search.settings import Settings
from fashion_search.significance import CONFIDENCE, Interval, summed_difference
from fashion_search.vectors import mirror_averaged

COLOR_WEIGHTS = (0.0, 0.2, 0.35, 0.5, 0.75, 1.0)
MIRRORS = ("off", "catalog", "both")  # cheapest first: "both" doubles a query's embedding work
SCORE = ("P@10", "R@1")  # summed: both goals count equally


@dataclass
class ViewFeatures:
    """Unit deep features and colour features of N images and of their mirror images: (N, 2, D) each."""

    deep: np.ndarray
    color: np.ndarray

    def vectors(self, color_weight: float, mirrored: bool) -> np.ndarray:
        """The search vectors the embedder would give with these settings."""
        from services.embedder.model import combine

        views = 2 if mirrored else 1
        deep = np.concatenate([self.deep[:, v] for v in range(views)])
        color = np.concatenate([self.color[:, v] for v in range(views)])
        return combine(deep, color, color_weight, mirrored)[1]


def view_features(embedder: Any, images: Iterable[Image.Image], batch: int) -> ViewFeatures:
    """Features of a stream of images and of their mirror images, a batch at a time."""
    deep: list[np.ndarray] = []
    color: list[np.ndarray] = []
    stream = iter(images)
    while chunk := list(itertools.islice(stream, batch)):
        d, c = embedder.features([*chunk, *(ImageOps.mirror(img) for img in chunk)])
        n = len(chunk)
        deep.append(np.stack([d[:n], d[n:]], axis=1))
        color.append(np.stack([c[:n], c[n:]], axis=1))
    return ViewFeatures(np.concatenate(deep), np.concatenate(color))


def street_garments(
    pipeline: SearchPipeline, scenes: list[dict[str, Any]], products: dict[str, int]
) -> tuple[list[Image.Image], list[int], int]:
    """Fine mode's cut-out of every scene garment of the given products (the detection overlapping it with IoU ≥
    MATCH_IOU, segmented onto white); its product index; and how many such garments the scenes hold in all."""
    settings = pipeline.settings
    cutouts: list[Image.Image] = []
    owners: list[int] = []
    total = 0
    for scene in tqdm(scenes, unit="scene", desc="detect and segment scenes"):
        wanted = [o for o in scene["objects"] if o["product_id"] in products]
        if not wanted:
            continue
        total += len(wanted)
        image = decode_image(Path(scene["image_path"]).read_bytes(), settings)
        img = prepare(image, settings)
        scale = img.width / image.width
        detections = pipeline.detect(img)
        matched = []
        for obj in wanted:
            found = matching([d.box for d in detections], Box(*(v * scale for v in obj["box"])))
            if found is not None:
                matched.append(detections[found])
                owners.append(products[obj["product_id"]])
        cutouts.extend(pipeline.garment_cutouts(img, matched))  # one segmenter call per scene, as fine mode makes
    return cutouts, owners, total


def instance_firsts(queries: np.ndarray, owners: np.ndarray, gallery: np.ndarray, total: int) -> np.ndarray:
    """Per garment, 1 if its own product ranks first by exact cosine kNN; garments never detected (the last
    total − len(queries)) are 0."""
    firsts = np.zeros(total)
    if len(queries):
        firsts[: len(queries)] = (queries @ gallery.T).argmax(axis=1) == owners
    return firsts


def instance_recall(queries: np.ndarray, owners: np.ndarray, gallery: np.ndarray, total: int) -> dict[str, float]:
    """R@1 / R@10 per garment by exact cosine kNN; garments never detected (total − len(queries)) count as misses."""
    if not len(queries):
        return {"R@1": 0.0, "R@10": 0.0}
    top = np.argsort(-(queries @ gallery.T), axis=1)[:, :TOP_K]
    return {"R@1": round(float((top[:, 0] == owners).sum() / total), 4),
            "R@10": round(float((top == owners[:, None]).any(axis=1).sum() / total), 4)}


def settings_sweep(
    settings: Settings, catalog_dir: str, scenes_dir: str, weights: Path, scene_limit: int = 0
) -> dict[str, Any]:
    """P@10 and street R@1 on the holdout for every colour weight × mirror averaging; the chosen one."""
    from fashion_search.components import temporary_pipeline

    meta = torch.load(weights, map_location="cpu", weights_only=True)["meta"]
    records: list[CatalogRecord] = load_catalog(catalog_dir)
    held = holdout_mask([r.category for r in records], meta)
    local = settings.model_copy(update={"embedder_model": meta["variant"], "embedder_weights": weights})
    held_ids = {r.product_id: i for i, r in enumerate(r for r, h in zip(records, held, strict=True) if h)}
    scenes = [s for s in load_scenes(scenes_dir) if any(o["product_id"] in held_ids for o in s["objects"])]
    scenes = scenes[: scene_limit or None]
    with temporary_pipeline(local, "fs-embedding-settings-") as pipeline:
        photos = (prepare(decode_image(Path(r.image_path).read_bytes(), local), local)
                  for r in tqdm(records, unit="img", desc="embed catalog photos"))
        batch = max(1, local.ingest_batch_size)
        catalog = view_features(pipeline.embedder, photos, batch)
        cutouts, owners, total = street_garments(pipeline, scenes, held_ids)
        street = view_features(pipeline.embedder, cutouts, batch)
    labels = np.array([r.category for r in records])
    owner_idx = np.array(owners, dtype=int)
    rows, per_query = [], []
    for mirror in MIRRORS:
        for weight in COLOR_WEIGHTS:
            gallery = catalog.vectors(weight, mirror_averaged(mirror, catalog=True))
            queries = catalog.vectors(weight, mirror_averaged(mirror, catalog=False))
            relevant = knn_relevance(queries[held], labels[held], gallery[~held], labels[~held], local.query_expansion)
            street_vecs = street.vectors(weight, mirror_averaged(mirror, catalog=False))
            instance = instance_recall(street_vecs, owner_idx, gallery[held], total)
            rows.append({"color_weight": weight, "mirror": mirror, **precision_row(relevant), **instance})
            firsts = instance_firsts(street_vecs, owner_idx, gallery[held], total)
            per_query.append((precision_per_query(relevant), firsts))
    default = {"color_weight": settings.color_weight, "mirror": settings.mirror_averaging}
    chosen = choose(rows, default)
    best = next(i for i, r in enumerate(rows) if all(r[k] == v for k, v in chosen.items()))
    for row, figures in zip(rows, per_query, strict=True):
        if row is not rows[best] and total:
            # Both query sets resampled on their own, each paired with the chosen setting's figures.
            row |= summed_difference(list(zip(per_query[best], figures, strict=True))).fields("Δsum")
    return {
        "rows": rows, "chosen": chosen, "default": default, "weights": str(weights),
        # What fits a query latency budget that has no room for a second forward pass.
        "chosen_query_cost_unchanged": choose([r for r in rows if r["mirror"] != "both"], default),
        "held_out_products": int(held.sum()), "fitted_products": int((~held).sum()), "scenes": len(scenes),
        "garments": total, "detected": len(owners), "query_expansion": local.query_expansion,
    }


def choose(rows: list[dict[str, Any]], default: dict[str, Any]) -> dict[str, Any]:
    """The setting with the best P@10 + R@1; the shipped default wins ties, then the cheaper mirror averaging."""
    def key(row: dict[str, Any]) -> tuple[float, bool, int]:
        is_default = row["color_weight"] == default["color_weight"] and row["mirror"] == default["mirror"]
        return round(sum(row[s] for s in SCORE), 4), is_default, -MIRRORS.index(row["mirror"])

    best = max(rows, key=key)
    return {"color_weight": best["color_weight"], "mirror": best["mirror"]}


def settings_markdown(result: dict[str, Any], command: str) -> str:
    """Markdown table of a sweep, naming the chosen setting."""
    chosen, cheap = result["chosen"], result["chosen_query_cost_unchanged"]
    lines = [
        "## Colour weight and mirror averaging, chosen on the embedder's product holdout", "",
        f"Command: `{command}` — weights `{result['weights']}` (trained with `--holdout-only`). Category: "
        f"{result['held_out_products']} held-out photos against the {result['fitted_products']} fitted ones, query "
        f"expansion {result['query_expansion']}, exact cosine kNN. Street-to-shop: {result['garments']} garments of "
        f"held-out products in {result['scenes']} train scenes ({result['detected']} detected with IoU ≥ "
        f"{MATCH_IOU}; the shipped detector and segmenter were trained on these scenes, which favours every row "
        f"alike) against the held-out product photos. Chosen (best P@10 + R@1): colour weight "
        f"**{chosen['color_weight']:g}**, mirror averaging **{chosen['mirror']}** (catalog: catalog photos only; "
        f"both: queries too); best that leaves a query's cost unchanged (mirror averaging off or catalog): colour "
        f"weight **{cheap['color_weight']:g}**, mirror averaging **{cheap['mirror']}**. Δ: each setting's P@10 + R@1 "
        f"less the chosen one's, {CONFIDENCE:.0%} bootstrap interval (each query set resampled on its own, paired "
        "with the chosen setting); one that holds 0 is within chance.", "",
        "| colour weight | mirror averaging | P@5 | P@10 | P@20 | mAP@20 | street R@1 | street R@10 | P@10 + R@1 "
        "| Δ vs chosen [CI] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        delta = Interval.from_fields(row, "Δsum")
        lines.append(
            f"| {row['color_weight']:g} | {row['mirror']} | {row['P@5']:.3f} | {row['P@10']:.4f} "
            f"| {row['P@20']:.3f} | {row['mAP@20']:.3f} | {row['R@1']:.4f} | {row['R@10']:.4f} "
            f"| {row['P@10'] + row['R@1']:.4f} | {delta.signed() if delta else 'chosen'} |"
        )
    return "\n".join(lines) + "\n"
