"""Choosing the category vote (depth and weight, pipeline/reranking.py) on the embedder's product holdout.

The held-out products of a `train embedder --holdout-only` model are split in two at random: the grid is searched on
one half (pick), and the chosen setting's gain over no vote is measured on the other (confirm). The vote is
adopted only if that gain reaches MIN_GAIN, so the figure that decides is not the one the grid was fitted to.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fashion_search.core.settings import Settings
from fashion_search.evaluation.expansion import SELF_FIRST, holdout_vectors
from fashion_search.evaluation.metrics import KS, expanded_queries, precision_per_query, precision_row
from fashion_search.evaluation.significance import CONFIDENCE, Interval, paired_difference
from fashion_search.pipeline.reranking import vote_order

DEPTHS = (5, 10, 20, 30)
WEIGHTS = (0.02, 0.05, 0.1, 0.2, 0.5)
OFF = (0, 0.0)
MIN_GAIN = 0.005  # P@10 on the confirm half, set before the first run


def vote_candidates(
    queries: np.ndarray, catalog: np.ndarray, labels: np.ndarray, expand: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query's n nearest catalog entries after query expansion (exact kNN), best first: scores, labels and
    catalog rows, each (queries, n)."""
    sims = expanded_queries(queries, catalog, expand) @ catalog.T
    top = np.argsort(-sims, axis=1)[:, :n]
    return np.take_along_axis(sims, top, axis=1), labels[top], top


def vote_relevance(
    scores: np.ndarray, labels: np.ndarray, q_labels: np.ndarray, depth: int, weight: float
) -> np.ndarray:
    """Whether each query's top-20 after the vote share its class, (queries, 20)."""
    order = vote_order(scores, labels, depth, weight)[:, : max(KS)]
    return np.take_along_axis(labels, order, axis=1) == q_labels[:, None]


def vote_self_first(
    scores: np.ndarray, labels: np.ndarray, rows: np.ndarray, own: np.ndarray, depth: int, weight: float
) -> float:
    """Share of queries whose own catalog entry (row own[i]) still ranks first after the vote, given their
    candidates in a catalog that holds them (vote_candidates: scores, labels, rows)."""
    first = np.take_along_axis(rows, vote_order(scores, labels, depth, weight)[:, :1], axis=1)[:, 0]
    return round(float((first == own).mean()), 4)


def vote_sweep(
    settings: Settings, catalog_dir: str, weights: Path, depths: Sequence[int] = DEPTHS,
    vote_weights: Sequence[float] = WEIGHTS, seed: int = 0,
) -> dict[str, Any]:
    """Every (depth, weight) and no vote on the held-out products against the fitted ones (query expansion and
    candidate count from settings): P@k and mAP@20 on all of them, P@10 on each half, self@1; the setting picked on
    one half and its paired gain over no vote on the other."""
    v = holdout_vectors(settings, catalog_dir, weights)
    classes = sorted(set(v.labels.tolist()))
    labels = np.array([classes.index(c) for c in v.labels])
    held = np.flatnonzero(v.held)
    fitted = ~v.held
    expand, n = settings.query_expansion, settings.category_vote_candidates
    scores, cand_labels, _ = vote_candidates(v.queries[held], v.catalog[fitted], labels[fitted], expand, n)
    # The same photos against the whole catalog, their own photos included: the candidates self@1 re-ranks.
    with_own = vote_candidates(v.queries[held], v.catalog, labels, expand, n)
    pick = np.zeros(len(held), dtype=bool)
    pick[np.random.default_rng(seed).permutation(len(held))[: len(held) // 2]] = True
    rows: dict[tuple[int, float], dict[str, float]] = {}
    per_query: dict[tuple[int, float], np.ndarray] = {}
    for setting in [OFF, *((d, w) for d in depths for w in vote_weights)]:
        rel = vote_relevance(scores, cand_labels, labels[held], *setting)
        per_query[setting] = precision_per_query(rel)
        rows[setting] = precision_row(rel) | {
            "P@10 pick": round(float(per_query[setting][pick].mean()), 4),
            "P@10 confirm": round(float(per_query[setting][~pick].mean()), 4),
            SELF_FIRST: vote_self_first(*with_own, held, *setting),
        }
    chosen = best_setting(rows)
    gain = paired_difference(per_query[OFF][~pick], per_query[chosen][~pick])
    return {
        "rows": rows, "chosen": chosen, "confirm_gain": gain.fields("ΔP@10"),
        "adopt": chosen != OFF and gain.value >= MIN_GAIN,
        "held": len(held), "fitted": int(fitted.sum()), "pick": int(pick.sum()), "expand": expand, "candidates": n,
    }


def best_setting(rows: dict[tuple[int, float], dict[str, float]]) -> tuple[int, float]:
    """Among settings that keep every exact match first, the best P@10 on the pick half; of equals, no vote, then
    the lightest weight and the shallowest depth."""
    keep = [s for s in rows if rows[s][SELF_FIRST] >= 1.0] or [OFF]
    return min(keep, key=lambda s: (-rows[s]["P@10 pick"], s != OFF, s[1], s[0]))


def vote_markdown(result: dict[str, Any], weights: Path, command: str) -> str:
    """Markdown table of a sweep, naming the pick and the confirm half's verdict."""
    chosen, gain = result["chosen"], Interval.from_fields(result["confirm_gain"], "ΔP@10")
    verdict = "adopt" if result["adopt"] else "do not adopt"
    name = "no vote" if chosen == OFF else f"depth {chosen[0]}, weight {chosen[1]:g}"
    lines = [
        "## Category vote, chosen on the embedder's product holdout", "",
        f"Command: `{command}` — weights `{weights}` (trained with `--holdout-only`): {result['held']} held-out "
        f"products searched against the {result['fitted']} it was trained on, exact cosine kNN, query expansion "
        f"{result['expand']}, {result['candidates']} candidates re-ranked. The held-out products are split at random: "
        f"the setting is picked on {result['pick']} of them (best P@10 among settings with {SELF_FIRST} = 1, the "
        f"share of held-out photos, added to the catalog, that still come first for themselves) and judged on the "
        f"other {result['held'] - result['pick']}: adopted if it gains at least {MIN_GAIN} P@10 there over no vote.",
        "", f"Picked: **{name}**; gain on the confirm half {gain.signed() if gain else '—'} ({CONFIDENCE:.0%} paired "
        f"bootstrap interval): **{verdict}**.",
        "", f"| depth | weight | P@5 | P@10 | P@20 | mAP@20 | P@10 pick half | P@10 confirm half | {SELF_FIRST} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (depth, weight), row in result["rows"].items():
        lines.append(
            f"| {depth or 'off'} | {weight:g} | {row['P@5']:.3f} | {row['P@10']:.4f} | {row['P@20']:.3f} "
            f"| {row['mAP@20']:.3f} | {row['P@10 pick']:.4f} | {row['P@10 confirm']:.4f} | {row[SELF_FIRST]:.3f} |"
        )
    return "\n".join(lines) + "\n"
