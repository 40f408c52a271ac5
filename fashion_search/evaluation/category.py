"""Retrieval evaluation (seed-001 protocol): same-class neighbours are relevant; P@5/10/20, mAP@20, latency."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fashion_search.core.catalog import CatalogRecord, load_catalog
from fashion_search.core.images import decode_image
from fashion_search.core.settings import Settings
from fashion_search.evaluation.features import ABLATION_VARIANTS, embed_all
from fashion_search.evaluation.metrics import (
    KS,
    average_precision,
    knn_relevance,
    precision_at,
    precision_per_query,
    precision_row,
)
from fashion_search.evaluation.significance import CONFIDENCE, RESAMPLES, Interval, mean_interval, paired_difference
from fashion_search.pipeline.ingest import Ingestor


@dataclass
class EvalResult:
    """Figures of one evaluation run."""

    mode: str
    catalog: str
    queries: str
    n_catalog: int
    n_queries: int
    precision: dict[str, float]
    map_at_20: float
    per_class: dict[str, dict[str, float]]
    median_query_ms: float
    p95_query_ms: float
    model: str
    failed: list[tuple[str, str]] = field(default_factory=list)
    query_expansion: int = 0
    category_vote: str = ""  # its settings in words where it re-ranked the lists ("" where off or in fine mode)

    def to_json(self) -> str:
        """Pretty JSON."""
        return json.dumps(self.__dict__, indent=2)






def _limit(records: list[CatalogRecord], per_class: int) -> list[CatalogRecord]:
    if per_class <= 0:
        return records
    counts: dict[str, int] = defaultdict(int)
    kept = []
    for rec in records:
        if counts[rec.category] < per_class:
            counts[rec.category] += 1
            kept.append(rec)
    return kept


def evaluate(
    settings: Settings, catalog_dir: str, queries_dir: str, mode: str = "simple", limit: int = 0
) -> EvalResult:
    """Index the catalog in a temporary Qdrant Edge index, query with every query image, score the lists."""
    from fashion_search.pipeline.components import temporary_pipeline

    catalog = _limit(load_catalog(catalog_dir), limit)
    queries = _limit(load_catalog(queries_dir), limit)
    if not catalog or not queries:
        raise ValueError("empty catalog or query folder (expected ImageFolder layout: <class>/<image>)")
    with temporary_pipeline(settings, "fs-eval-") as pipeline:
        local = pipeline.settings
        ingestor = Ingestor(pipeline, local)
        with tqdm(total=len(catalog), unit="img", desc=f"index catalog ({mode})") as bar:
            report = ingestor.ingest_records(catalog, with_garment=(mode == "fine"), on_progress=bar.update)
        pipeline.index.optimize()
        by_class: dict[str, list[tuple[list[bool], float]]] = defaultdict(list)
        latencies = []
        k_max = max(KS)
        for rec in tqdm(queries, unit="query", desc=f"query ({mode})"):
            image = decode_image(Path(rec.image_path).read_bytes(), local)
            outcome = pipeline.search(image, mode, k_max)
            latencies.append(outcome.timings_ms["total"])
            rel = [h.product.category == rec.category for h in outcome.hits]
            by_class[rec.category].append((rel, average_precision(rel, k_max)))
        model = (pipeline.embedder if mode == "fine" else pipeline.image_embedder).model_name
    all_lists = [r for rows in by_class.values() for r in rows]
    precision = {f"P@{k}": round(statistics.fmean(precision_at(r, k) for r, _ in all_lists), 4) for k in KS}
    per_class = {
        c: {
            **{f"P@{k}": round(statistics.fmean(precision_at(r, k) for r, _ in rows), 4) for k in KS},
            "n": len(rows),
        }
        for c, rows in sorted(by_class.items())
    }
    latencies.sort()
    return EvalResult(
        mode=mode, catalog=str(catalog_dir), queries=str(queries_dir), n_catalog=report.indexed,
        n_queries=len(all_lists), precision=precision,
        map_at_20=round(statistics.fmean(ap for _, ap in all_lists), 4), per_class=per_class,
        median_query_ms=round(statistics.median(latencies), 1),
        p95_query_ms=round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1),
        model=model, failed=report.failed, query_expansion=settings.query_expansion if mode != "fine" else 0,
        category_vote=vote_name(settings) if mode != "fine" and settings.category_vote_on else "",
    )


def to_markdown(result: EvalResult, command: str) -> str:
    """A Markdown section for docs/."""
    p = result.precision
    lines = [
        f"## Mode `{result.mode}` — model `{result.model}`"
        + (f", query expansion {result.query_expansion}" if result.query_expansion else "")
        + (f", category vote {result.category_vote}" if result.category_vote else ""),
        "",
        f"Command: `{command}`",
        "",
        f"Catalog {result.n_catalog} images, {result.n_queries} queries. "
        f"Median query latency {result.median_query_ms} ms (p95 {result.p95_query_ms} ms), 2-core CPU.",
        "",
        "| P@5 | P@10 | P@20 | mAP@20 |",
        "|---|---|---|---|",
        f"| {p['P@5']:.3f} | {p['P@10']:.3f} | {p['P@20']:.3f} | {result.map_at_20:.3f} |",
        "",
        "| class | n | P@5 | P@10 | P@20 |",
        "|---|---|---|---|---|",
    ]
    for c, row in result.per_class.items():
        lines.append(f"| {c} | {row['n']} | {row['P@5']:.3f} | {row['P@10']:.3f} | {row['P@20']:.3f} |")
    return "\n".join(lines) + "\n"








def ablation(settings: Settings, catalog_dir: str, queries_dir: str, limit: int = 0) -> dict[str, dict[str, float]]:
    """P@5/10/20 and mAP@20 of the four seed-001 feature variants, side by side in one run (exact cosine kNN), with
    P@10's bootstrap interval and each variant's paired P@10 gain over the one before it."""
    from fashion_search.services.embedder.model import GarmentEmbedder

    catalog = _limit(load_catalog(catalog_dir), limit)
    queries = _limit(load_catalog(queries_dir), limit)
    # The learned rows are the image vectors' model: the one simple and tag mode search.
    image = settings.image_embedder_settings()
    if image.embedder_model == "imagenet":
        image = image.model_copy(update={"embedder_model": Settings.model_fields["embedder_model"].default})
    embedders = {
        "imagenet": GarmentEmbedder(settings.model_copy(update={"embedder_model": "imagenet"})),
        "learned": GarmentEmbedder(image),
    }
    cat_vecs = embed_all(catalog, embedders, settings, catalog=True)
    q_vecs = embed_all(queries, embedders, settings)
    cat_labels = np.array([r.category for r in catalog])
    q_labels = np.array([r.category for r in queries])
    relevance = {v: knn_relevance(q_vecs[v], q_labels, cat_vecs[v], cat_labels) for v in ABLATION_VARIANTS}
    fused = ABLATION_VARIANTS[-1]
    if settings.query_expansion:
        relevance[f"{fused} + query expansion {settings.query_expansion}"] = knn_relevance(
            q_vecs[fused], q_labels, cat_vecs[fused], cat_labels, settings.query_expansion
        )
    if settings.category_vote_on:
        relevance[f"{list(relevance)[-1]} + category vote {vote_name(settings)}"] = voted_relevance(
            q_vecs[fused], q_labels, cat_vecs[fused], cat_labels, settings
        )
    return with_intervals(relevance)


def vote_name(settings: Settings) -> str:
    """The category vote's settings in words."""
    return (f"(depth {settings.category_vote_depth}, weight {settings.category_vote_weight:g}, "
            f"{settings.category_vote_candidates} candidates)")


def voted_relevance(
    queries: np.ndarray, q_labels: np.ndarray, catalog: np.ndarray, cat_labels: np.ndarray, settings: Settings
) -> np.ndarray:
    """knn_relevance after query expansion and the category vote as settings configure them, (N, 20)."""
    from fashion_search.evaluation.vote import vote_candidates, vote_relevance

    classes = sorted({*cat_labels.tolist(), *q_labels.tolist()})
    to_int = np.vectorize(classes.index, otypes=[int])
    scores, labels, _ = vote_candidates(
        queries, catalog, to_int(cat_labels), settings.query_expansion, settings.category_vote_candidates
    )
    return vote_relevance(scores, labels, to_int(q_labels), settings.category_vote_depth, settings.category_vote_weight)












def with_intervals(relevance: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Each setting's precision row, plus its P@10's bootstrap interval and the paired P@10 difference (with its
    interval) from the setting listed before it: all settings ran on the same queries."""
    table: dict[str, dict[str, float]] = {}
    previous: np.ndarray | None = None
    for name, rel in relevance.items():
        per_query = precision_per_query(rel)
        ci = mean_interval(per_query)
        row = precision_row(rel) | ci.fields("P@10", with_value=False)
        if previous is not None:
            row |= paired_difference(previous, per_query).fields("ΔP@10")
        table[name] = row
        previous = per_query
    return table


def ablation_markdown(table: dict[str, dict[str, float]], command: str, n_catalog: str) -> str:
    """Markdown table of an ablation run."""
    lines = [
        "## Ablation (seed-001 protocol, exact cosine kNN)", "", f"Command: `{command}` — {n_catalog}", "",
        f"Intervals: {CONFIDENCE:.0%} percentile bootstrap over the queries ({RESAMPLES} resamples); ΔP@10 is paired "
        "(the same queries), against the row above. A Δ interval that holds 0 is within chance on this query set.",
        "", "| features | P@5 | P@10 [CI] | P@20 | mAP@20 | ΔP@10 vs row above [CI] |", "|---|---|---|---|---|---|",
    ]
    for variant, row in table.items():
        ci, delta = Interval.from_fields(row, "P@10"), Interval.from_fields(row, "ΔP@10")
        lines.append(f"| {variant} | {row['P@5']:.3f} | {ci or format(row['P@10'], '.3f')} | {row['P@20']:.3f} "
                     f"| {row['mAP@20']:.3f} | {delta.signed() if delta else '—'} |")
    return "\n".join(lines) + "\n"
