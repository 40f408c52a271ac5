"""Street-to-shop evaluation: generated scenes are the queries, each garment must find its own product."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fashion_search.core.catalog import CatalogRecord, load_catalog
from fashion_search.core.domain import Box
from fashion_search.core.images import decode_image
from fashion_search.core.settings import Settings
from fashion_search.datasets.scenes import load_scenes
from fashion_search.evaluation.significance import CONFIDENCE, Interval, mean_interval, paired_difference
from fashion_search.pipeline.ingest import Ingestor
from fashion_search.pipeline.search_pipeline import prepare

MATCH_IOU = 0.5
TOP_K = 10


def matching(boxes: Sequence[Box], truth: Box) -> int | None:
    """Index of the box overlapping the true garment most, if by IoU ≥ MATCH_IOU (the garment counts as detected)."""
    if not boxes:
        return None
    best = max(range(len(boxes)), key=lambda i: boxes[i].iou(truth))
    return best if boxes[best].iou(truth) >= MATCH_IOU else None


def kinds_shown(kinds: set[str], hits: Sequence[Any]) -> int:
    """How many of a scene's garment kinds are among the categories of its results."""
    return len(kinds & {h.product.category for h in hits})


def _rank(ids: list[str], product_id: str) -> int | None:
    return ids.index(product_id) + 1 if product_id in ids else None


def street_to_shop(
    settings: Settings, scenes_dir: str, catalog_dirs: list[str], limit: int = 0
) -> dict[str, Any]:
    """Recall@1/@10 per garment for simple mode (whole scene) and fine mode (the detection matching the garment)."""
    from fashion_search.pipeline.components import temporary_pipeline

    scenes = load_scenes(scenes_dir)[: limit or None]
    catalog: list[CatalogRecord] = [rec for d in catalog_dirs for rec in load_catalog(d)]
    with temporary_pipeline(settings, "fs-s2s-") as pipeline:
        local = pipeline.settings
        with tqdm(total=len(catalog), unit="img", desc="index catalog") as bar:
            Ingestor(pipeline, local).ingest_records(catalog, with_garment=True, on_progress=bar.update)
        ranks: dict[str, list[int | None]] = {"simple": [], "fine": [], "fine-merged": []}
        detected, latencies = 0, {"simple": [], "fine": []}
        # Scenes of several garment kinds: how many of their kinds each mode's first TOP_K results show.
        shown: dict[str, list[tuple[int, int]]] = {"simple": [], "tag": [], "fine": []}
        suggested = 0
        for scene in tqdm(scenes, unit="scene", desc="query scenes"):
            image = decode_image(Path(scene["image_path"]).read_bytes(), local)
            # Boxes come back in the working size's coordinates; scale ground truth the same way.
            scale = prepare(image, local).width / image.width
            simple = pipeline.search(image, "simple", TOP_K)
            fine = pipeline.search(image, "fine", TOP_K)
            latencies["simple"].append(simple.timings_ms["total"])
            latencies["fine"].append(fine.timings_ms["total"])
            simple_ids = [h.product.product_id for h in simple.hits]
            kinds = {obj["category"] for obj in scene["objects"]}
            if len(kinds) > 1:
                tag = pipeline.search(image, "tag", TOP_K)
                for mode, outcome in (("simple", simple), ("tag", tag), ("fine", fine)):
                    shown[mode].append((kinds_shown(kinds, outcome.hits), len(kinds)))
                suggested += simple.suggested_mode == "fine"
            merged_ids = [h.product.product_id for h in fine.hits]
            for obj in scene["objects"]:
                pid = obj["product_id"]
                gt = Box(*(v * scale for v in obj["box"]))
                ranks["simple"].append(_rank(simple_ids, pid))
                ranks["fine-merged"].append(_rank(merged_ids, pid))
                found = matching([g.detection.box for g in fine.garments], gt)
                if found is not None:
                    detected += 1
                    ranks["fine"].append(_rank([h.product.product_id for h in fine.garments[found].hits], pid))
                else:
                    ranks["fine"].append(None)
    n = len(ranks["simple"])
    first = {mode: np.array([r == 1 for r in rs], dtype=np.float64) for mode, rs in ranks.items()}
    table = {
        mode: {
            "recall@1": round(float(first[mode].mean()), 4),
            "recall@10": round(sum(1 for r in rs if r is not None) / n, 4),
        } | mean_interval(first[mode]).fields("recall@1", with_value=False)
        for mode, rs in ranks.items()
    }
    table["fine"] |= paired_difference(first["simple"], first["fine"]).fields("Δrecall@1 vs simple")
    return {
        "scenes": len(scenes), "garments": n, "catalog": len(catalog), "catalog_dirs": catalog_dirs,
        "detected_iou50": round(detected / n, 4) if n else 0.0, "recall": table,
        "median_ms": {m: round(statistics.median(v), 1) for m, v in latencies.items()},
        "model": pipeline.vectors_model(), "detector": settings.detector_model,
        "catalog_garment": settings.catalog_garment, "max_garments": settings.max_garments,
        "multi_kind_scenes": len(shown["fine"]),
        "kinds_covered": {m: round(float(np.mean([k / n for k, n in v])), 4) if v else 0.0 for m, v in shown.items()},
        "one_kind_only": {m: round(float(np.mean([k <= 1 for k, _ in v])), 4) if v else 0.0 for m, v in shown.items()},
        "suggested_fine": round(suggested / len(shown["fine"]), 4) if shown["fine"] else 0.0,
    }


def street_to_shop_markdown(result: dict[str, Any], command: str) -> str:
    """Markdown section for docs/EVALUATION.md."""
    lines = [
        f"## Street-to-shop (generated scenes → own product), detector `{result['detector']}`, "
        f"catalog garment `{result['catalog_garment']}`", "",
        f"Command: `{command}`", "",
        f"{result['scenes']} scenes, {result['garments']} garments, catalog of {result['catalog']} products; "
        f"model `{result['model']}`. Fine mode matches each detected garment against the catalog's "
        f"`{result['catalog_garment']}` vectors, at most {result['max_garments']} garments per scene: a "
        f"garment counts only if a detection overlaps it with IoU ≥ "
        f"{MATCH_IOU} (detected: {result['detected_iou50']:.3f}). Median latency: simple "
        f"{result['median_ms']['simple']} ms, fine {result['median_ms']['fine']} ms.", "",
        f"Recall@1 intervals: {CONFIDENCE:.0%} percentile bootstrap over the garments; fine mode's gain over simple "
        f"mode is paired (the same garments).", "",
        "| mode | Recall@1 [CI] | Recall@10 | Recall@1 gain over simple [CI] |", "|---|---|---|---|",
    ]
    for mode, row in result["recall"].items():
        recall, gain = Interval.from_fields(row, "recall@1"), Interval.from_fields(row, "Δrecall@1 vs simple")
        lines.append(f"| {mode} | {recall or format(row['recall@1'], '.3f')} | {row['recall@10']:.3f} "
                     f"| {gain.signed() if gain else '—'} |")
    if result.get("multi_kind_scenes"):
        lines += [
            "", f"Scenes of several garment kinds ({result['multi_kind_scenes']}): the share of their kinds among "
            f"each mode's first {TOP_K} results, and how often those show one kind only. Simple mode suggested fine "
            f"mode in {result['suggested_fine']:.1%} of them.", "",
            "| mode | kinds covered | one kind only |", "|---|---|---|",
        ]
        lines += [f"| {m} | {result['kinds_covered'][m]:.3f} | {result['one_kind_only'][m]:.3f} |"
                  for m in result["kinds_covered"]]
    return "\n".join(lines) + "\n"
