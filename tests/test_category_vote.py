"""Category-vote re-ranking: the array rule, the pipeline's simple and tag modes, and its sweep on the holdout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.domain import Hit, Product
from fashion_search.evaluation.vote import (
    OFF,
    best_setting,
    vote_candidates,
    vote_markdown,
    vote_self_first,
    vote_sweep,
)
from fashion_search.pipeline.reranking import NO_CATEGORY, category_vote_scores, rerank_hits, vote_order
from fashion_search.pipeline.search_pipeline import SearchPipeline
from tests.conftest import make_settings, two_pipelines

A, B = 0, 1


def test_the_majority_category_moves_up_and_strays_move_down() -> None:
    scores = np.array([[0.90, 0.86, 0.81, 0.79, 0.60, 0.55]])
    labels = np.array([[A, B, B, B, A, B]])
    # Depth 4: B holds 3 of the 4 votes, A 1; weight 0.2 adds 0.15 to B, 0.05 to A.
    rescored = category_vote_scores(scores, labels, 4, 0.2)
    assert rescored[0] == pytest.approx([0.95, 1.01, 0.96, 0.94, 0.65, 0.70])
    assert vote_order(scores, labels, 4, 0.2)[0].tolist() == [1, 2, 0, 3, 5, 4]
    # Off: the search's order, scores untouched.
    for depth, weight in [(0, 0.2), (4, 0.0)]:
        assert category_vote_scores(scores, labels, depth, weight).tolist() == scores.tolist()
        assert vote_order(scores, labels, depth, weight)[0].tolist() == list(range(6))


def test_candidates_without_a_category_neither_vote_nor_gain() -> None:
    scores = np.array([[0.9, 0.8, 0.7]])
    labels = np.array([[NO_CATEGORY, NO_CATEGORY, A]])
    assert category_vote_scores(scores, labels, 3, 0.3)[0] == pytest.approx([0.9, 0.8, 0.8])


def test_a_depth_beyond_the_candidates_counts_the_candidates_there_are() -> None:
    scores, labels = np.array([[0.5, 0.4]]), np.array([[A, B]])
    assert category_vote_scores(scores, labels, 10, 1.0)[0] == pytest.approx([1.0, 0.9])
    assert category_vote_scores(np.zeros((1, 0)), np.zeros((1, 0), dtype=int), 5, 1.0).shape == (1, 0)


def _hit(pid: str, category: str, score: float) -> Hit:
    return Hit(Product(product_id=pid, category=category), score)


def test_rerank_hits_orders_by_the_new_scores_and_reports_them() -> None:
    hits = [_hit("a1", "dress", 0.9), _hit("b1", "shirt", 0.86), _hit("b2", "shirt", 0.78), _hit("x", "", 0.7)]
    out = rerank_hits(hits, 3, 0.3)
    assert [h.product.product_id for h in out] == ["b1", "a1", "b2", "x"]
    assert [h.score for h in out] == pytest.approx([1.06, 1.0, 0.98, 0.7])
    assert [h.product.product_id for h in rerank_hits(hits, 0, 0.3)] == ["a1", "b1", "b2", "x"]
    assert rerank_hits([], 3, 0.3) == []


@pytest.fixture(scope="module")
def pipelines(
    tmp_path_factory: pytest.TempPathFactory, shared_models: dict, small_records: list[CatalogRecord]
) -> Iterator[tuple[SearchPipeline, SearchPipeline]]:
    """Two pipelines over one index: without the category vote and with depth 5, weight 0.1."""
    update = {"category_vote_depth": 5, "category_vote_weight": 0.1, "category_vote_candidates": 30}
    tmp = tmp_path_factory.mktemp("vote")
    with two_pipelines(tmp, shared_models, small_records, {"category_vote_depth": 0}, update) as pair:
        yield pair


def test_simple_mode_reranks_the_candidates_the_index_returns(
    pipelines: tuple[SearchPipeline, SearchPipeline], small_records: list[CatalogRecord]
) -> None:
    plain, voting = pipelines
    rec = small_records[13]
    photo = Image.open(rec.image_path).convert("RGB")
    candidates = plain.search(photo, "simple", 30).hits
    top = voting.search(photo, "simple", 8).hits
    # The 8 shown are the best 8 of the 30 candidates by the vote, whichever rank they had in the search.
    assert [(h.product.product_id, round(h.score, 5)) for h in top] == [
        (h.product.product_id, round(h.score, 5)) for h in rerank_hits(candidates, 5, 0.1)[:8]
    ]
    assert [h.score for h in top] == sorted((h.score for h in top), reverse=True)
    assert top[0].product.product_id == rec.product_id


def test_tag_mode_votes_within_its_category_filter_and_fine_mode_does_not_vote(
    pipelines: tuple[SearchPipeline, SearchPipeline], small_records: list[CatalogRecord]
) -> None:
    plain, voting = pipelines
    photo = Image.open(small_records[2].image_path).convert("RGB")
    tagged = voting.search(photo, "tag", 6, category="shoes")
    assert tagged.hits and {h.product.category for h in tagged.hits} == {"shoes"}
    fine_plain, fine_voting = plain.search(photo, "fine", 6), voting.search(photo, "fine", 6)
    assert [(h.product.product_id, round(h.score, 4)) for h in fine_plain.hits] == [
        (h.product.product_id, round(h.score, 4)) for h in fine_voting.hits
    ]


def test_self_first_drops_when_the_vote_outweighs_an_exact_match() -> None:
    # The query's own photo (catalog[0], class A) has three near neighbours of class B.
    catalog = np.array([[1.0, 0.0], [0.96, 0.28], [0.96, 0.28], [0.96, 0.28]], dtype=np.float32)
    labels = np.array([A, B, B, B])
    own = np.array([0])
    candidates = vote_candidates(catalog[:1], catalog, labels, 0, 4)
    assert vote_self_first(*candidates, own, 4, 0.02) == 1.0
    assert vote_self_first(*candidates, own, 4, 0.5) == 0.0


def test_best_setting_keeps_exact_matches_first_and_prefers_no_vote_on_a_tie() -> None:
    row = {"P@10 pick": 0.8, "self@1": 1.0}
    assert best_setting({OFF: row, (5, 0.1): row}) == OFF
    assert best_setting({OFF: row, (5, 0.1): {**row, "P@10 pick": 0.9}}) == (5, 0.1)
    assert best_setting({OFF: row, (5, 0.1): {"P@10 pick": 0.9, "self@1": 0.99}}) == OFF


def test_sweep_picks_on_one_half_and_judges_on_the_other(
    tmp_path: Path, holdout_weights: Path, small_catalog_dir: Path
) -> None:
    settings = make_settings(tmp_path, category_vote_candidates=20)
    result = vote_sweep(settings, str(small_catalog_dir), holdout_weights, depths=[3], vote_weights=[0.05, 0.5])
    assert (result["held"], result["fitted"], result["pick"]) == (10, 30, 5)
    assert set(result["rows"]) == {OFF, (3, 0.05), (3, 0.5)}
    for row in result["rows"].values():
        # The halves' P@10 average to the whole's (equal halves).
        assert (row["P@10 pick"] + row["P@10 confirm"]) / 2 == pytest.approx(row["P@10"], abs=1e-3)
        assert 0.0 <= row["self@1"] <= 1.0
    chosen = result["chosen"]
    assert chosen == best_setting(result["rows"])
    gain = result["confirm_gain"]["ΔP@10"]
    assert gain == pytest.approx(
        result["rows"][chosen]["P@10 confirm"] - result["rows"][OFF]["P@10 confirm"], abs=2e-4
    )
    assert result["adopt"] == (chosen != OFF and gain >= 0.005)
    text = vote_markdown(result, holdout_weights, "fashion-search eval-vote")
    assert "| off | 0 |" in text and "| 3 | 0.5 |" in text


def test_eval_names_the_vote_it_ranked_with(tmp_path: Path, small_catalog_dir: Path) -> None:
    from fashion_search.evaluation.category import evaluate, to_markdown

    vote = {"category_vote_depth": 5, "category_vote_weight": 0.1, "category_vote_candidates": 30}
    result = evaluate(make_settings(tmp_path, **vote), str(small_catalog_dir), str(small_catalog_dir), limit=2)
    assert result.category_vote == "(depth 5, weight 0.1, 30 candidates)"
    assert "category vote (depth 5" in to_markdown(result, "fashion-search eval").splitlines()[0]
    # Two products per class, each query's own photo among them: P@5 lies between 1/5 (itself) and 2/5.
    assert result.n_queries == 20 and 0.2 <= result.precision["P@5"] <= 0.4
