"""Photo + words (`fashion-search eval text`): does the `text` of a search, fused with the photo's match by
reciprocal-rank fusion, raise category precision when it names the query's category, and the share of results of a
colour when it names that colour? Catalog titles are "<colour> <category>", the colour read from each photo."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from fashion_search.core.catalog import CatalogRecord, load_catalog
from fashion_search.core.images import decode_image
from fashion_search.core.settings import Settings
from fashion_search.evaluation.significance import paired_difference
from fashion_search.pipeline.ingest import Ingestor

TOP_K = 10
# The centre of a product photo is the garment; its edges are often floor, wall or hanger.
CENTRE = 0.5
SIDE = 48  # the centre is read at this size: enough pixels for a vote, cheap
# PIL's HSV scale is 0..255 for hue, saturation and value.
DARK_V, GREY_S, WHITE_V = 55, 45, 190
HUES = ((15, "red"), (40, "orange"), (70, "yellow"), (165, "green"), (255, "blue"), (300, "purple"), (340, "pink"))


def pixel_colours(hsv: np.ndarray) -> np.ndarray:
    """A colour name per pixel of an (N, 3) HSV array (PIL scale) by fixed hue, saturation and value bands."""
    h = hsv[:, 0].astype(np.float32) * 360.0 / 256.0
    s, v = hsv[:, 1].astype(np.int32), hsv[:, 2].astype(np.int32)
    names = np.full(len(hsv), "red", dtype=object)  # hue 340..360 wraps to red
    for top, name in reversed(HUES):
        names[h < top] = name
    # Dim oranges are browns; pale warm tones are beige.
    names[(names == "orange") & (v < 140)] = "brown"
    names[np.isin(names, ("orange", "yellow")) & (s < 90) & (v >= 140)] = "beige"
    names[s < GREY_S] = np.where(v[s < GREY_S] >= WHITE_V, "white", "grey")
    names[v < DARK_V] = "black"
    return names


def photo_colour(image: Image.Image) -> str:
    """The colour most pixels of the photo's centre region have (pixel_colours' names)."""
    w, h = image.size
    box = (int(w * (1 - CENTRE) / 2), int(h * (1 - CENTRE) / 2), int(w * (1 + CENTRE) / 2), int(h * (1 + CENTRE) / 2))
    centre = image.convert("RGB").crop(box).resize((SIDE, SIDE)).convert("HSV")
    names = pixel_colours(np.asarray(centre).reshape(-1, 3))
    return str(Counter(names.tolist()).most_common(1)[0][0])


def _per_class(records: list[CatalogRecord], per_class: int) -> tuple[list[CatalogRecord], list[CatalogRecord]]:
    """The first per_class records of each category, and the rest (per_class <= 0: all, none)."""
    if per_class <= 0:
        return records, []
    counts: dict[str, int] = defaultdict(int)
    first, rest = [], []
    for rec in records:
        counts[rec.category] += 1
        (first if counts[rec.category] <= per_class else rest).append(rec)
    return first, rest


def titled(records: list[CatalogRecord], settings: Settings) -> list[CatalogRecord]:
    """The records with titles "<colour> <category>" (the colour read from each photo) and no other words."""
    out = []
    for rec in tqdm(records, unit="img", desc="colour of each catalog photo"):
        colour = photo_colour(decode_image(Path(rec.image_path).read_bytes(), settings))
        out.append(replace(rec, title=f"{colour} {rec.category}", tags=[], attributes={}, brand=""))
    return out


@dataclass
class TextEval:
    """What the queries and the catalog were, and the figures (see to_markdown)."""

    catalog: str
    queries: str
    n_catalog: int
    n_queries: int
    colours: list[str]
    catalog_colours: dict[str, int]
    fusion: str
    rows: dict[str, dict[str, float]]

    def to_json(self) -> str:
        """Pretty JSON."""
        return json.dumps(self.__dict__, indent=2)


class _PerQuery:
    """A model call answered once per query photo: a query's searches differ only in their words, so the photo's
    detections and vector are computed for its first search and replayed for the others (clear() between photos)."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self.call, self.answer = call, None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.answer is None:
            self.answer = self.call(*args, **kwargs)
        return self.answer

    def clear(self) -> None:
        self.answer = None


def _title_colour(title: str) -> str:
    return title.split(" ", 1)[0]


def evaluate_text(
    settings: Settings, catalog_dir: str, queries_dir: str = "", limit: int = 0, holdout: int = 0,
    n_colours: int = 5, variants: dict[str, Settings] | None = None,
) -> TextEval:
    """Index the titled catalog (simple mode), then search with each query photo alone, with its category's name,
    and with each of the n_colours commonest catalog colours; per fusion setting in variants (default: settings).

    holdout > 0: the first holdout photos per class of the catalog folder are the queries, the rest the catalog
    (for choosing settings without the validation photos); limit > 0: at most that many per class of each."""
    from fashion_search.pipeline.components import temporary_pipeline

    records = load_catalog(catalog_dir)
    if holdout > 0:
        queries, catalog = _per_class(records, holdout)
    else:
        catalog, queries = records, load_catalog(queries_dir)
    catalog, queries = _per_class(catalog, limit)[0], _per_class(queries, limit)[0]
    if not catalog or not queries:
        raise ValueError("empty catalog or query folder (expected ImageFolder layout: <class>/<image>)")
    catalog = titled(catalog, settings)
    counts = Counter(_title_colour(r.title) for r in catalog)
    colours = [c for c, _ in counts.most_common(n_colours)]
    variants = variants or {"configured": settings}
    lists: dict[tuple[str, str, str], list[list[str]]] = defaultdict(list)  # (variant, text kind, colour) -> titles
    categories: list[str] = []
    with temporary_pipeline(settings, "fs-eval-text-") as pipeline:
        Ingestor(pipeline, pipeline.settings).ingest_records(catalog, with_garment=False)
        pipeline.index.optimize()  # type: ignore[attr-defined]
        index_settings = pipeline.index.settings  # type: ignore[attr-defined]
        detect, embed = _PerQuery(pipeline.detect), _PerQuery(pipeline.image_embedder.embed)
        pipeline.detect = detect  # type: ignore[method-assign]
        pipeline.image_embedder.embed = embed  # type: ignore[method-assign]
        for rec in tqdm(queries, unit="query", desc="query"):
            detect.clear()
            embed.clear()
            image = decode_image(Path(rec.image_path).read_bytes(), pipeline.settings)
            categories.append(rec.category)

            def titles(text: str | None, image: Image.Image = image) -> list[str]:
                hits = pipeline.search(image, "simple", TOP_K, text=text).hits
                return [h.product.title for h in hits]

            lists[("photo", "photo", "")].append(titles(None))
            for name, variant in variants.items():
                # Only the index reads the fusion settings: the same pipeline answers with each.
                pipeline.index.settings = index_settings.model_copy(update=_fusion_fields(variant))  # type: ignore[attr-defined]
                lists[(name, "category", "")].append(titles(rec.category))
                for colour in colours:
                    lists[(name, "colour", colour)].append(titles(colour))
            pipeline.index.settings = index_settings  # type: ignore[attr-defined]
    cats = np.array(categories)
    return TextEval(
        catalog=str(catalog_dir), queries=f"first {holdout} per class of the catalog" if holdout > 0 else queries_dir,
        n_catalog=len(catalog), n_queries=len(queries), colours=colours, catalog_colours=dict(counts.most_common()),
        fusion="; ".join(f"{n}: {fusion_name(v)}" for n, v in variants.items()),
        rows=_rows(lists, cats, colours, list(variants)),
    )


FUSION_FIELDS = ("fusion_candidates", "fusion_text_weight")


def _fusion_fields(settings: Settings) -> dict[str, object]:
    return {f: getattr(settings, f) for f in FUSION_FIELDS}


def fusion_name(settings: Settings) -> str:
    """The fusion settings in words."""
    return f"{settings.fusion_candidates} candidates each, words weighted {settings.fusion_text_weight:g}"


def _precision(titles: list[list[str]], cats: np.ndarray) -> np.ndarray:
    """Each query's share of its top 10 whose title ends in its category (missing results count as misses)."""
    return np.array([sum(t.split(" ", 1)[1] == c for t in ts) / TOP_K for ts, c in zip(titles, cats, strict=True)])


def _colour_share(titles: list[list[str]], colour: str) -> np.ndarray:
    """Each query's share of its top 10 whose title starts with colour."""
    return np.array([sum(_title_colour(t) == colour for t in ts) / TOP_K for ts in titles])


def _rows(
    lists: dict[tuple[str, str, str], list[list[str]]], cats: np.ndarray, colours: list[str], variants: list[str],
) -> dict[str, dict[str, float]]:
    """Per variant: category P@10 photo alone / with the category's name, the colour share photo alone / with the
    colour's name (mean over the colours), each with the paired difference's bootstrap interval."""
    photo = lists[("photo", "photo", "")]
    base_p = _precision(photo, cats)
    rows: dict[str, dict[str, float]] = {}
    for name in variants:
        fused_p = _precision(lists[(name, "category", "")], cats)
        row = {"P@10 photo": round(float(base_p.mean()), 4), "P@10 photo + category": round(float(fused_p.mean()), 4)}
        row |= paired_difference(base_p, fused_p).fields("ΔP@10")
        base_c = np.mean([_colour_share(photo, c) for c in colours], axis=0)
        fused_c = np.mean([_colour_share(lists[(name, "colour", c)], c) for c in colours], axis=0)
        row |= {"colour share photo": round(float(base_c.mean()), 4),
                "colour share photo + colour": round(float(fused_c.mean()), 4)}
        row |= paired_difference(base_c, fused_c).fields("Δcolour share")
        # Does naming a colour cost the photo's category? P@10 of the colour-fused lists, mean over colours.
        row["P@10 photo + colour"] = round(statistics.fmean(
            float(_precision(lists[(name, "colour", c)], cats).mean()) for c in colours), 4)
        for c in colours:
            row[f"{c}: photo"] = round(float(_colour_share(photo, c).mean()), 4)
            row[f"{c}: photo + {c}"] = round(float(_colour_share(lists[(name, "colour", c)], c).mean()), 4)
        rows[name] = row
    return rows


def to_markdown(result: TextEval, command: str) -> str:
    """A Markdown section for docs/EVALUATION.md."""
    colours = ", ".join(f"{c} {n}" for c, n in result.catalog_colours.items())
    lines = [
        "## Photo + words (reciprocal-rank fusion of the photo's match and a BM25 match of the words)", "",
        f"Command: `{command}`", "",
        f"Catalog `{result.catalog}`: {result.n_catalog} photos titled \"<colour> <category>\" (simple mode); the "
        "colour is the commonest of fixed HSV bands over the centre half of each photo "
        f"(fashion_search/evaluation/text_fusion.py), the catalog's colours: {colours}. "
        f"Queries `{result.queries}`: {result.n_queries} photos, top {TOP_K}, each searched with the photo alone, "
        "with its category's name as text (category P@10: share of the results of its category), and with each of "
        f"the {len(result.colours)} commonest colours as text (colour share: share of the results whose title has "
        f"that colour, mean over {', '.join(result.colours)}). Fusion: {result.fusion}. Intervals: 95 % paired "
        "bootstrap over the queries.", "",
        "| fusion | P@10 photo | P@10 photo + category [Δ, CI] | colour share photo | photo + colour [Δ, CI] | "
        "P@10 photo + colour |", "|---|---|---|---|---|---|",
    ]
    for name, r in result.rows.items():
        lines.append(
            f"| {name} | {r['P@10 photo']:.3f} | {r['P@10 photo + category']:.3f} "
            f"[{r['ΔP@10']:+.3f}, {r['ΔP@10 low']:+.3f}..{r['ΔP@10 high']:+.3f}] | {r['colour share photo']:.3f} | "
            f"{r['colour share photo + colour']:.3f} [{r['Δcolour share']:+.3f}, {r['Δcolour share low']:+.3f}.."
            f"{r['Δcolour share high']:+.3f}] | {r['P@10 photo + colour']:.3f} |"
        )
    first = next(iter(result.rows.values()))
    lines += ["", "Per colour (first fusion row): " + "; ".join(
        f"{c} {first[f'{c}: photo']:.3f} → {first[f'{c}: photo + {c}']:.3f}" for c in result.colours) + "."]
    return "\n".join(lines) + "\n"
