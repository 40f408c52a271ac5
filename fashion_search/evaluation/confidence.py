"""Match confidence: fit score → P(result is of the query's kind) per mode on train photos (Platt scaling), and
check it on other query photos (reliability: Brier score, expected calibration error, the "good match" band)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fashion_search.core.catalog import CatalogRecord, load_catalog
from fashion_search.core.images import decode_image
from fashion_search.core.settings import Settings
from fashion_search.pipeline.ingest import Ingestor
from fashion_search.pipeline.kinds import match_confidence
from fashion_search.pipeline.search_pipeline import MODES

TOP_K = 10
BINS = 10
NEWTON_STEPS = 50
RIDGE = 1e-3  # keeps the fit finite where a mode's scores separate the two outcomes perfectly


def split_per_class(records: list[CatalogRecord], n_catalog: int, n_queries: int) -> tuple[list, list]:
    """The first n_catalog photos of each class as the catalog, the next n_queries as queries (a train holdout)."""
    by_class: dict[str, list[CatalogRecord]] = defaultdict(list)
    for rec in records:
        by_class[rec.category].append(rec)
    catalog = [r for c in sorted(by_class) for r in by_class[c][:n_catalog]]
    queries = [r for c in sorted(by_class) for r in by_class[c][n_catalog:n_catalog + n_queries]]
    return catalog, queries


def fit_platt(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(slope, offset) of the logistic regression of labels (0/1) on scores, by Newton's method."""
    x = np.stack([scores, np.ones_like(scores)], axis=1).astype(np.float64)
    y = labels.astype(np.float64)
    w = np.zeros(2)
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -60, 60)))
        grad = x.T @ (p - y) + RIDGE * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + RIDGE * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return round(float(w[0]), 3), round(float(w[1]), 3)


def reliability(confidence: np.ndarray, labels: np.ndarray, good: float) -> dict[str, float]:
    """Brier score, expected calibration error over BINS equal-width bins, and the "good match" band's size and
    precision."""
    bins = np.minimum((confidence * BINS).astype(int), BINS - 1)
    ece = sum(
        abs(confidence[bins == b].mean() - labels[bins == b].mean()) * (bins == b).mean()
        for b in range(BINS) if (bins == b).any()
    )
    in_band = confidence >= good
    return {
        "n": len(labels), "brier": round(float(np.mean((confidence - labels) ** 2)), 4), "ece": round(float(ece), 4),
        "good_share": round(float(in_band.mean()), 4),
        "good_precision": round(float(labels[in_band].mean()), 4) if in_band.any() else 0.0,
        "possible_precision": round(float(labels[~in_band].mean()), 4) if (~in_band).any() else 0.0,
    }


def _collect(pipeline: Any, queries: list[CatalogRecord], settings: Settings, desc: str) -> dict[str, list]:
    """(score, same kind) of every mode's first TOP_K results for each query photo."""
    rows: dict[str, list[tuple[float, bool]]] = {m: [] for m in MODES}
    for rec in tqdm(queries, unit="query", desc=desc):
        image = decode_image(Path(rec.image_path).read_bytes(), settings)
        for mode in MODES:
            for hit in pipeline.search(image, mode, TOP_K).hits:
                rows[mode].append((float(hit.score), hit.product.category == rec.category))
    return rows


def confidence_fit(
    settings: Settings, catalog_dir: str, n_catalog: int, n_fit: int, queries_dir: str = "", limit: int = 0,
) -> dict[str, Any]:
    """Fit each mode's score → confidence on a train split (catalog: n_catalog photos per class, fit queries: the
    next n_fit), then measure its reliability on those and, if given, on queries_dir (at most `limit` per class)."""
    from fashion_search.pipeline.components import temporary_pipeline

    catalog, fit_queries = split_per_class(load_catalog(catalog_dir), n_catalog, n_fit)
    checks = split_per_class(load_catalog(queries_dir), 0, limit or 10**9)[1] if queries_dir else []
    with temporary_pipeline(settings, "fs-confidence-") as pipeline:
        local = pipeline.settings
        with tqdm(total=len(catalog), unit="img", desc="index catalog") as bar:
            Ingestor(pipeline, local).ingest_records(catalog, with_garment=True, on_progress=bar.update)
        pipeline.index.optimize()
        fit_rows = _collect(pipeline, fit_queries, local, "fit queries")
        check_rows = _collect(pipeline, checks, local, "check queries") if checks else {}
    fits = {}
    for mode, rows in fit_rows.items():
        scores, labels = (np.array(v, dtype=np.float64) for v in zip(*rows, strict=True))
        fits[mode] = fit_platt(scores, labels)
    fitted = settings.model_copy(update={"confidence_fit": fits})
    result: dict[str, Any] = {
        "catalog": catalog_dir, "n_catalog": len(catalog), "n_fit_queries": len(fit_queries),
        "queries": queries_dir, "n_check_queries": len(checks), "fit": fits,
        "good_match_confidence": settings.good_match_confidence, "fit_reliability": {}, "check_reliability": {},
    }
    for name, table in (("fit_reliability", fit_rows), ("check_reliability", check_rows)):
        for mode, rows in table.items():
            scores, labels = (np.array(v, dtype=np.float64) for v in zip(*rows, strict=True))
            conf = np.array([match_confidence(s, mode, fitted) for s in scores])
            result[name][mode] = reliability(conf, labels, settings.good_match_confidence)
    return result


def confidence_markdown(result: dict[str, Any], command: str) -> str:
    """Markdown section for docs/EVALUATION.md."""
    lines = [
        "## Match confidence, fitted on train photos", "", f"Command: `{command}`", "",
        f"Catalog: {result['n_catalog']} photos of `{result['catalog']}`; fitted (Platt scaling: confidence = "
        f"sigmoid(slope × score + offset), per mode) on the first {TOP_K} results of {result['n_fit_queries']} other "
        f"photos of the same folder, \"same kind\" as the outcome; checked on {result['n_check_queries']} photos of "
        f"`{result['queries'] or '—'}` against the same catalog. A result is a \"good match\" from confidence "
        f"{result['good_match_confidence']:g} on. ECE: expected calibration error over {BINS} bins (0 = calibrated).",
        "", "| mode | slope | offset | fit ECE | fit Brier | check ECE | check Brier | check good share | "
        "check good precision | check possible precision |", "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, (slope, offset) in result["fit"].items():
        fit = result["fit_reliability"][mode]
        chk = result["check_reliability"].get(mode)
        tail = (f"{chk['ece']:.3f} | {chk['brier']:.3f} | {chk['good_share']:.3f} | {chk['good_precision']:.3f} | "
                f"{chk['possible_precision']:.3f}") if chk else "— | — | — | — | —"
        lines.append(f"| {mode} | {slope:g} | {offset:g} | {fit['ece']:.3f} | {fit['brier']:.3f} | {tail} |")
    return "\n".join(lines) + "\n"
