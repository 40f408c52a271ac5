"""The `fashion-search` command: demo, serve, ingest, reindex, train, eval, bench, healthcheck."""

from __future__ import annotations

import argparse
import logging
import sys

SERVE_TARGETS = ("gateway", "detector", "segmenter", "embedder", "image-embedder", "search", "worker")
MODES = ("simple", "fine", "tag")
# Each trainer is a module with main(argv); `fashion-search train X --help` shows its own options.
TRAINERS = {
    "detector": "services.detector.train_detector",
    "segmenter": "services.segmenter.train_segmenter",
    "embedder": "services.embedder.train",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="fashion-search", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="index the bundled sample catalog (once) and serve the page and API")
    demo.add_argument("--catalog", help="catalog to index instead of the bundled sample")
    demo.add_argument("--no-serve", action="store_true", help="index only, then exit")

    serve = sub.add_parser("serve", help="run one part of the system as its own process")
    serve.add_argument("target", choices=SERVE_TARGETS)

    ingest = sub.add_parser("ingest", help="load a catalog: a folder of images, or a CSV/JSONL file")
    ingest.add_argument("path")
    ingest.add_argument("--sync", action="store_true", help="ingest in-process even if a broker is configured")
    ingest.add_argument("--wait", action="store_true", help="with a broker: wait for all tasks to finish")

    rx = sub.add_parser(
        "reindex", help="recompute the vectors of indexed products from their stored images (after a model change)",
    )
    rx.add_argument("product_ids", nargs="*", metavar="PRODUCT_ID", help="only these products (default: all)")
    rx.add_argument("--queue", action="store_true", help="send batches to the Celery workers (needs FS_BROKER_URL)")
    rx.add_argument("--wait", action="store_true", help="with --queue: wait for all tasks to finish")

    tr = sub.add_parser("train", help="train a model's shipped weights (options after the target go to its trainer)")
    tr.add_argument("target", choices=sorted(TRAINERS))
    tr.add_argument("options", nargs=argparse.REMAINDER, help="trainer options, e.g. --epochs 8")

    ev = sub.add_parser("eval", help="retrieval precision of an ImageFolder catalog against query images")
    ev.add_argument("--catalog", required=True)
    ev.add_argument("--queries", required=True)
    ev.add_argument("--mode", choices=MODES, default="simple")
    ev.add_argument("--json", action="store_true", help="print the figures as JSON")
    ev.add_argument("--limit", type=int, default=0, help="use at most N images per class (0 = all)")
    ev.add_argument("--output", help="also write the figures to this Markdown file")
    ev.add_argument(
        "--ablation", action="store_true",
        help="compare ImageNet / +color / learned 512 / learned 542 features side by side (exact kNN)",
    )

    ex = sub.add_parser("eval-expansion", help="choose FS_QUERY_EXPANSION on the embedder's product holdout")
    ex.add_argument("--catalog", default="../shared/data/clothing-small/train", help="the embedder's train photos")
    ex.add_argument("--weights", required=True, help="embedder weights trained with --holdout-only")
    ex.add_argument("--depths", default="0,1,2,3,5,10,20", help="comma-separated depths to try")
    ex.add_argument("--json", action="store_true", help="print the figures as JSON")
    ex.add_argument("--output", help="also write the figures to this Markdown file")

    ev = sub.add_parser("eval-vote", help="choose the category vote on the embedder's product holdout")
    ev.add_argument("--catalog", default="../shared/data/clothing-small/train", help="the embedder's train photos")
    ev.add_argument("--weights", required=True, help="embedder weights trained with --holdout-only")
    ev.add_argument("--seed", type=int, default=0, help="seed of the pick/confirm split of the held-out products")
    ev.add_argument("--json", action="store_true", help="print the figures as JSON")
    ev.add_argument("--output", help="also write the figures to this Markdown file")

    es = sub.add_parser(
        "eval-embedding", help="choose FS_COLOR_WEIGHT and FS_MIRROR_AVERAGING on the embedder's product holdout",
    )
    es.add_argument("--catalog", default="../shared/data/clothing-small/train", help="the embedder's train photos")
    es.add_argument("--scenes", default="data/scenes/train", help="scenes generated from the same photos")
    es.add_argument("--weights", required=True, help="embedder weights trained with --holdout-only")
    es.add_argument("--limit", type=int, default=0, help="use the first N scenes with held-out garments (0 = all)")
    es.add_argument(
        "--baseline", default="",
        help="instead of sweeping settings, compare --weights with these (same split) at the configured settings",
    )
    es.add_argument("--json", action="store_true", help="print the figures as JSON")
    es.add_argument("--output", help="also write the figures to this Markdown file")

    s2s = sub.add_parser("eval-scenes", help="street-to-shop Recall@1/@10 on generated scenes, simple vs fine")
    _scene_options(s2s)
    s2s.add_argument("--catalog", action="append", required=True, help="ImageFolder catalog (repeatable)")

    em = sub.add_parser("eval-models", help="detector mAP@0.5 and segmenter mIoU on generated scenes")
    _scene_options(em)
    em.add_argument("--photos", default="",
                    help="held-out product photos: also count the garments fine mode finds in each")

    bench = sub.add_parser("bench", help="per-stage latency p50/p95 for simple and fine mode")
    bench.add_argument("--queries", type=int, default=0, help="number of queries (default: settings)")
    bench.add_argument("--output", default="", help="Markdown file (default: docs/BENCHMARKS.md)")

    hc = sub.add_parser("healthcheck", help="exit 0 if the service at URL is healthy (grpc://host:port or http://...)")
    hc.add_argument("url")
    return parser


def _scene_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenes", required=True, help="a folder of generated scenes (fashion_search.datasets.scenes)")
    parser.add_argument(
        "--generate-from", default=None,
        help="photos to generate the scenes from when --scenes holds none yet (held-out photos only)",
    )
    parser.add_argument("--n", type=int, default=500, help="scenes to generate (with --generate-from)")
    parser.add_argument("--seed", type=int, default=2, help="generator seed (with --generate-from)")
    parser.add_argument("--limit", type=int, default=0, help="use the first N scenes (0 = all)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--output", help="also write the figures to this Markdown file")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fashion-search` command."""
    args = build_parser().parse_args(argv)
    from pydantic import ValidationError

    from fashion_search.settings import Settings, get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        # A bad FS_* variable is the operator's to fix: name it instead of printing a traceback.
        prefix = str(Settings.model_config.get("env_prefix", ""))
        errors = "; ".join(
            (f"{prefix}{'.'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "") + e["msg"] for e in exc.errors()
        )
        print(f"error: invalid settings: {errors}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from fashion_search import commands
    from fashion_search.domain import IndexLayoutError

    handler = getattr(commands, f"cmd_{args.command.replace('-', '_')}")
    try:
        return int(handler(args, settings) or 0)
    except IndexLayoutError as exc:
        # A configuration change, not a crash: say what to do instead of printing a traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
