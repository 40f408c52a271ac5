"""Record fine mode's candidates once (each garment's nearest catalog garments before kind evidence), then replay
kind-evidence rules on them: category P@10 of product photos and street-to-shop Recall@1 of generated scenes.

    python tools/kind_replay.py record --catalog DIR --queries DIR --scenes DIR --out cache.pkl
    python tools/kind_replay.py replay cache.pkl
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path
from typing import Any

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


def replay_main(args: argparse.Namespace) -> None:
    """Print the rules' figures on a cache (see kind_sweep.py for the sweep itself)."""
    data = load(args.cache)
    print(len(data["queries"]), "queries,", len(data["scenes"]), "scenes", file=sys.stderr)


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
