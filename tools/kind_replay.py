"""Record fine mode's candidates once (each garment's nearest catalog garments before kind evidence), then replay
kind-evidence rules on them: category P@10 of product photos and street-to-shop Recall@1 of generated scenes.

    python tools/kind_replay.py record --catalog DIR --queries DIR --scenes DIR --out cache.pkl
    python tools/kind_replay.py replay cache.pkl     # the shipped settings' kind_keep_margin against none
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fashion_search.core.catalog import load_catalog
from fashion_search.core.images import decode_image
from fashion_search.core.settings import Settings


def record(args: argparse.Namespace) -> None:
    """One ingest of the catalog; every fine search's re-ranking inputs kept per query."""
    import fashion_search.pipeline.search_pipeline as sp
    from fashion_search.datasets.scenes import load_scenes
    from fashion_search.pipeline.components import temporary_pipeline
    from fashion_search.pipeline.ingest import Ingestor

    calls: list[dict[str, Any]] = []
    original = sp.rerank_by_kind

    def recording(hits, detection, image_shares, size, settings):  # type: ignore[no-untyped-def]
        calls.append({
            "hits": [(h.product.product_id, h.product.category, float(h.score)) for h in hits],
            "det": (detection.category, float(detection.score), detection.box.to_list()),
            "shares": dict(image_shares), "size": tuple(size),
        })
        return original(hits, detection, image_shares, size, settings)

    sp.rerank_by_kind = recording
    settings = Settings().model_copy(update={"kind_candidates": args.candidates})
    catalog = load_catalog(args.catalog)
    out: dict[str, Any] = {"queries": [], "scenes": []}
    t0 = time.time()
    with temporary_pipeline(settings, "fs-replay-") as pipeline:
        local = pipeline.settings
        Ingestor(pipeline, local).ingest_records(catalog, with_garment=True)
        pipeline.index.optimize()
        print(f"ingested {len(catalog)} in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        for rec in load_catalog(args.queries) if args.queries else []:
            calls.clear()
            image = decode_image(Path(rec.image_path).read_bytes(), local)
            pipeline.search(image, "fine", 20)
            out["queries"].append({"category": rec.category, "garments": list(calls)})
        print(f"queries done {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        for scene in load_scenes(args.scenes)[: args.limit or None] if args.scenes else []:
            calls.clear()
            image = decode_image(Path(scene["image_path"]).read_bytes(), local)
            scale = sp.prepare(image, local).width / image.width
            pipeline.search(image, "fine", 10)
            objects = [(o["product_id"], o["category"], [v * scale for v in o["box"]]) for o in scene["objects"]]
            out["scenes"].append({"objects": objects, "garments": list(calls)})
            if args.every and len(out["scenes"]) % args.every == 0:
                _dump(out, args.out)  # a run cut short still leaves its first scenes
        print(f"scenes done {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    _dump(out, args.out)


def _dump(out: dict[str, Any], path: str) -> None:
    """Write the cache (through a temporary file, so that a reader never sees half of it)."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        pickle.dump(out, fh)
    Path(tmp).replace(path)


def load(path: str) -> dict[str, Any]:
    """A recorded cache."""
    with open(path, "rb") as fh:
        return pickle.load(fh)


def _garment(g: dict[str, Any]) -> tuple[list[Any], Any]:
    from fashion_search.core.domain import Box, Detection, Hit, Product

    hits = [Hit(Product(product_id=p, category=c), s) for p, c, s in g["hits"]]
    return hits, Detection(Box(*g["det"][2]), g["det"][0], g["det"][1])


def scene_first(data: dict[str, Any], settings: Settings) -> np.ndarray:
    """1 per scene garment whose matching detection (IoU >= 0.5) lists its own product first, else 0."""
    from fashion_search.core.domain import Box
    from fashion_search.pipeline.kinds import rerank_by_kind

    out = []
    for scene in data["scenes"]:
        firsts = []
        for g in scene["garments"]:
            hits, det = _garment(g)
            firsts.append(rerank_by_kind(hits, det, g["shares"], g["size"], settings)[0].product.product_id)
        boxes = [Box(*g["det"][2]) for g in scene["garments"]]
        for pid, _, truth in scene["objects"]:
            ious = [b.iou(Box(*truth)) for b in boxes]
            best = int(np.argmax(ious)) if ious else -1
            out.append(float(best >= 0 and ious[best] >= 0.5 and firsts[best] == pid))
    return np.array(out)


def query_precision(data: dict[str, Any], settings: Settings) -> np.ndarray:
    """P@10 per recorded product photo: its garments' re-ranked lists merged as fine mode merges them."""
    from fashion_search.pipeline.kinds import rerank_by_kind
    from fashion_search.pipeline.search_pipeline import _merge

    out = []
    for q in data["queries"]:
        if q["garments"]:
            lists = [rerank_by_kind(*_garment(g), g["shares"], g["size"], settings)[:20] for g in q["garments"]]
            top = _merge(lists, 10)
            out.append(float(np.mean([h.product.category == q["category"] for h in top])))
    return np.array(out)


def replay_main(args: argparse.Namespace) -> None:
    """Street R@1 (and P@10 where queries were recorded) of the plain ranking, main's ungated kind evidence and
    the configured gate, with paired intervals against the ungated rule."""
    from fashion_search.evaluation.significance import mean_interval, paired_difference

    data = load(args.cache)
    shipped = Settings()
    rules = {
        "plain nearest garments": shipped.model_copy(
            update={"kind_own_weight": 0.0, "kind_label_weight": 0.0, "kind_image_weight": 0.0}),
        "kind evidence, ungated": shipped.model_copy(update={"kind_keep_margin": float("inf")}),
        f"kind evidence, kind_keep_margin {shipped.kind_keep_margin:g}": shipped,
    }
    first = {name: scene_first(data, s) for name, s in rules.items()}
    precision = {name: query_precision(data, s) for name, s in rules.items()}
    ungated = first["kind evidence, ungated"]
    print(f"{len(data['scenes'])} scenes, {len(ungated)} garments; {len(data['queries'])} product photos")
    for name, r1 in first.items():
        p10 = f"P@10 {precision[name].mean():.4f}  " if len(precision[name]) else ""
        print(f"{name}: {p10}R@1 {mean_interval(r1)} ({int(r1.sum())}); vs ungated "
              f"{paired_difference(ungated, r1).signed()}")


def main() -> None:
    """CLI."""
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--catalog", required=True)
    r.add_argument("--queries", default="")
    r.add_argument("--scenes", default="")
    r.add_argument("--limit", type=int, default=0)
    r.add_argument("--candidates", type=int, default=50)
    r.add_argument("--every", type=int, default=0, help="also write the cache after every N scenes")
    r.add_argument("--out", required=True)
    p = sub.add_parser("replay")
    p.add_argument("cache")
    args = ap.parse_args()
    record(args) if args.cmd == "record" else replay_main(args)


if __name__ == "__main__":
    main()
