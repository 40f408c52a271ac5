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

from fashion_search.core.catalog import CatalogRecord, load_catalog
from fashion_search.core.domain import Box
from fashion_search.core.images import decode_image
from fashion_search.core.settings import Settings
from fashion_search.core.vectors import mirror_averaged
from fashion_search.datasets.scenes import load_scenes
from fashion_search.evaluation.expansion import check_holdout_meta, holdout_mask
from fashion_search.evaluation.metrics import knn_relevance, precision_per_query, precision_row
from fashion_search.evaluation.scenes import MATCH_IOU, TOP_K, matching
from fashion_search.evaluation.significance import CONFIDENCE, Interval, paired_difference, summed_difference
from fashion_search.pipeline.search_pipeline import SearchPipeline, prepare

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
        from fashion_search.services.embedder.model import combine

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
        cutouts.extend(pipeline.garment_cutouts(img, matched)[0])  # one segmenter call per scene, as fine mode makes
    return cutouts, owners, total


def instance_hits(
    queries: np.ndarray, owners: np.ndarray, gallery: np.ndarray, total: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per garment, by exact cosine kNN: 1 if its own product ranks first, and 1 if within the top TOP_K; garments
    never detected (the last total − len(queries)) are 0 in both. Their means are R@1 and R@10."""
    first, within = np.zeros(total), np.zeros(total)
    if len(queries):
        top = np.argsort(-(queries @ gallery.T), axis=1)[:, :TOP_K]
        first[: len(queries)] = top[:, 0] == owners
        within[: len(queries)] = (top == owners[:, None]).any(axis=1)
    return first, within


def instance_recall(first: np.ndarray, within: np.ndarray) -> dict[str, float]:
    """R@1 / R@10 from instance_hits (0 for no garments)."""
    return {"R@1": round(float(first.mean()), 4) if first.size else 0.0,
            "R@10": round(float(within.mean()), 4) if within.size else 0.0}


@dataclass
class Holdout:
    """The product holdout of --holdout-only weights: the train photos (held-out mask), and fine mode's cut-outs of
    the held-out products' scene garments (detector and segmenter do not depend on the embedder's weights)."""

    records: list[CatalogRecord]
    held: np.ndarray
    cutouts: list[Image.Image]
    owners: np.ndarray  # each cut-out's product, as an index into the held-out records
    total: int  # scene garments of held-out products, detected or not
    scenes: int

    @property
    def labels(self) -> np.ndarray:
        """Each record's category."""
        return np.array([r.category for r in self.records])


def holdout_meta(weights: Path) -> dict[str, Any]:
    """The training metadata stored with a weights file."""
    return torch.load(weights, map_location="cpu", weights_only=True)["meta"]


def fit_settings(settings: Settings, weights: Path) -> Settings:
    """Settings whose embedder is the given weights file (variant from its metadata)."""
    return settings.model_copy(update={"embedder_model": holdout_meta(weights)["variant"], "embedder_weights": weights})


def load_holdout(settings: Settings, catalog_dir: str, scenes_dir: str, weights: Path, scene_limit: int = 0) -> Holdout:
    """The holdout the weights' trainer drew, and fine mode's cut-outs of its garments in the scenes."""
    from fashion_search.pipeline.components import temporary_pipeline

    records: list[CatalogRecord] = load_catalog(catalog_dir)
    held = holdout_mask([r.category for r in records], holdout_meta(weights))
    held_ids = {r.product_id: i for i, r in enumerate(r for r, h in zip(records, held, strict=True) if h)}
    scenes = [s for s in load_scenes(scenes_dir) if any(o["product_id"] in held_ids for o in s["objects"])]
    scenes = scenes[: scene_limit or None]
    with temporary_pipeline(fit_settings(settings, weights), "fs-embedding-holdout-") as pipeline:
        cutouts, owners, total = street_garments(pipeline, scenes, held_ids)
    return Holdout(records, held, cutouts, np.array(owners, dtype=int), total, len(scenes))


def holdout_views(settings: Settings, holdout: Holdout, weights: Path) -> tuple[ViewFeatures, ViewFeatures]:
    """Features of the holdout's catalog photos and street cut-outs (and mirror images) by the given weights."""
    from fashion_search.services.embedder.model import GarmentEmbedder

    local = fit_settings(settings, weights)
    embedder = GarmentEmbedder(local)
    batch = max(1, local.ingest_batch_size)
    photos = (prepare(decode_image(Path(r.image_path).read_bytes(), local), local)
              for r in tqdm(holdout.records, unit="img", desc="embed catalog photos"))
    return view_features(embedder, photos, batch), view_features(embedder, holdout.cutouts, batch)


def setting_figures(
    holdout: Holdout, catalog: ViewFeatures, street: ViewFeatures, weight: float, mirror: str, expansion: int
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """P@5/10/20, mAP@20, street R@1/R@10 at one colour weight and mirror averaging; per-query P@10 and per-garment
    firsts (what paired intervals resample)."""
    held, labels = holdout.held, holdout.labels
    gallery = catalog.vectors(weight, mirror_averaged(mirror, catalog=True))
    queries = catalog.vectors(weight, mirror_averaged(mirror, catalog=False))
    relevant = knn_relevance(queries[held], labels[held], gallery[~held], labels[~held], expansion)
    street_vecs = street.vectors(weight, mirror_averaged(mirror, catalog=False))
    firsts, within = instance_hits(street_vecs, holdout.owners, gallery[held], holdout.total)
    return precision_row(relevant) | instance_recall(firsts, within), precision_per_query(relevant), firsts


def _holdout_counts(holdout: Holdout, expansion: int) -> dict[str, Any]:
    return {
        "held_out_products": int(holdout.held.sum()), "fitted_products": int((~holdout.held).sum()),
        "scenes": holdout.scenes, "garments": holdout.total, "detected": len(holdout.owners),
        "query_expansion": expansion,
    }


def settings_sweep(
    settings: Settings, catalog_dir: str, scenes_dir: str, weights: Path, scene_limit: int = 0
) -> dict[str, Any]:
    """P@10 and street R@1 on the holdout for every colour weight × mirror averaging; the chosen one."""
    holdout = load_holdout(settings, catalog_dir, scenes_dir, weights, scene_limit)
    catalog, street = holdout_views(settings, holdout, weights)
    rows, per_query = [], []
    for mirror in MIRRORS:
        for weight in COLOR_WEIGHTS:
            row, precisions, firsts = setting_figures(holdout, catalog, street, weight, mirror,
                                                      settings.query_expansion)
            rows.append({"color_weight": weight, "mirror": mirror, **row})
            per_query.append((precisions, firsts))
    default = {"color_weight": settings.color_weight, "mirror": settings.mirror_averaging}
    chosen = choose(rows, default)
    best = next(i for i, r in enumerate(rows) if all(r[k] == v for k, v in chosen.items()))
    for row, figures in zip(rows, per_query, strict=True):
        if row is not rows[best] and holdout.total:
            # Both query sets resampled on their own, each paired with the chosen setting's figures.
            row |= summed_difference(list(zip(per_query[best], figures, strict=True))).fields("Δsum")
    return {
        "rows": rows, "chosen": chosen, "default": default, "weights": str(weights),
        # What fits a query latency budget that has no room for a second forward pass.
        "chosen_query_cost_unchanged": choose([r for r in rows if r["mirror"] != "both"], default),
        **_holdout_counts(holdout, settings.query_expansion),
    }


def compare_weights(
    settings: Settings, catalog_dir: str, scenes_dir: str, weights: Path, baseline: Path, scene_limit: int = 0
) -> dict[str, Any]:
    """Two --holdout-only weight files on the same holdout, photos and cut-outs, at the configured colour weight and
    mirror averaging: each one's figures, and weights − baseline per query with paired intervals."""
    mine, theirs = holdout_meta(weights), holdout_meta(baseline)
    check_holdout_meta(theirs)  # a baseline that saw the held-out products would be flattered
    for key in ("seed", "holdout_share"):
        if mine.get(key) != theirs.get(key):
            raise ValueError(f"the two weight files hold out different products ({key} {mine.get(key)} against "
                             f"{theirs.get(key)}): train both with the same --seed")
    holdout = load_holdout(settings, catalog_dir, scenes_dir, weights, scene_limit)
    if not holdout.total:
        raise ValueError("no scene garment of a held-out product: generate scenes from the same photos")
    weight, mirror = settings.color_weight, settings.mirror_averaging
    figures = [setting_figures(holdout, *holdout_views(settings, holdout, path), weight, mirror,
                               settings.query_expansion) for path in (baseline, weights)]
    (base_row, base_p10, base_firsts), (row, p10, firsts) = figures
    differences = (paired_difference(base_p10, p10).fields("ΔP@10")
                   | paired_difference(base_firsts, firsts).fields("ΔR@1")
                   | summed_difference([(base_p10, p10), (base_firsts, firsts)]).fields("Δsum"))
    return {
        "weights": str(weights), "baseline": str(baseline), "split_seed": mine.get("seed"), "color_weight": weight,
        "mirror": mirror, "rows": {"baseline": base_row, "weights": row}, "difference": differences,
        **_holdout_counts(holdout, settings.query_expansion),
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


def comparison_section(result: dict[str, Any]) -> str:
    """The Markdown section a comparison writes: one per holdout split, so judging a change on a second split keeps the
    first split's figures beside it."""
    seed = result.get("split_seed") or 0
    return "eval-embedding-comparison" + (f"-seed{seed}" if seed else "")


def comparison_markdown(result: dict[str, Any], command: str) -> str:
    """Markdown table of two weight files compared on one holdout."""
    diff = result["difference"]
    seed = result.get("split_seed") or 0
    lines = [
        "## Two embedder weight files compared on the product holdout" + (f", split seed {seed}" if seed else ""), "",
        f"Command: `{command}` — weights `{result['weights']}` against baseline `{result['baseline']}` (both "
        f"trained with `--holdout-only` on the same split, seed {seed}), colour weight {result['color_weight']:g}, "
        f"mirror averaging {result['mirror']}, query expansion {result['query_expansion']}. Category: "
        f"{result['held_out_products']} held-out photos against the {result['fitted_products']} fitted ones. "
        f"Street-to-shop: {result['garments']} garments of held-out products in {result['scenes']} scenes "
        f"({result['detected']} detected with IoU ≥ {MATCH_IOU}), the same cut-outs for both. Δ: weights less "
        f"baseline, per query, {CONFIDENCE:.0%} paired bootstrap interval; one that holds 0 is within chance.", "",
        "| weights | P@5 | P@10 | P@20 | mAP@20 | street R@1 | street R@10 | P@10 + R@1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | {row['P@5']:.3f} | {row['P@10']:.4f} | {row['P@20']:.3f} | {row['mAP@20']:.3f} "
                     f"| {row['R@1']:.4f} | {row['R@10']:.4f} | {row['P@10'] + row['R@1']:.4f} |")
    intervals = {key: Interval.from_fields(diff, key) for key in ("ΔP@10", "ΔR@1", "Δsum")}
    deltas = ", ".join(f"{key} {interval.signed()}" for key, interval in intervals.items() if interval)
    return "\n".join([*lines, "", f"Differences: {deltas}."]) + "\n"
