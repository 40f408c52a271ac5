"""The argument parser of `fashion-search`: each verb (and each verb of a group) says what it does in one line."""

from __future__ import annotations

import argparse

SERVE_TARGETS = ("gateway", "detector", "segmenter", "embedder", "image-embedder", "search", "worker")
MODES = ("simple", "fine", "tag")
KEY_SCOPES = ("search", "catalog", "admin")  # the gateway's scopes (fashion_search.gateway.keys.SCOPES)
# Each trainer is a module with main(argv); `fashion-search train X --help` shows its own options.
TRAINERS = {
    "detector": ("fashion_search.services.detector.training.train", "the detector's heads on generated scenes"),
    "segmenter": ("fashion_search.services.segmenter.training.train", "the segmenter's mask net on generated scenes"),
    "embedder": ("fashion_search.services.embedder.training.train", "the garment embedder on photos and scenes"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fashion-search", description="Visual fashion search: photo in, matching catalog products out.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="index the bundled sample catalog (once) and serve the page and API")
    demo.add_argument("--catalog", help="catalog to index instead of the bundled sample")
    demo.add_argument("--no-serve", action="store_true", help="index only, then exit")

    serve = sub.add_parser("serve", help="run one part of the system as its own process")
    serve.add_argument("target", choices=SERVE_TARGETS)

    ingest = sub.add_parser("ingest", help="load a catalog: a folder of images, or a CSV/JSONL file")
    ingest.add_argument("path", nargs="?", default="")
    ingest.add_argument("--sync", action="store_true", help="ingest in-process even if a broker is configured")
    ingest.add_argument("--wait", action="store_true", help="with a broker: follow the job until it is done")
    ingest.add_argument("--retry-refused", metavar="JOB_ID", default="", help="re-run a job's refused records")

    rx = sub.add_parser(
        "reindex", help="recompute the vectors of indexed products from their stored images (after a model change)",
    )
    rx.add_argument("product_ids", nargs="*", metavar="PRODUCT_ID", help="only these products (default: all)")
    rx.add_argument("--queue", action="store_true", help="send batches to the Celery workers (needs FS_BROKER_URL)")
    rx.add_argument("--wait", action="store_true", help="with --queue: wait for all tasks to finish")
    rx.add_argument(
        "--rebuild", action="store_true",
        help="build a complete new collection (current models and index settings) while search serves the old one, "
             "then switch atomically and drop the old one",
    )

    tr = sub.add_parser("train", help="train a model's shipped weights (options after the model go to its trainer)")
    tr_sub = tr.add_subparsers(dest="verb", required=True)
    for name, (_, about) in sorted(TRAINERS.items()):
        # Everything after the model (--help too) is the trainer's own: main() hands it over.
        tr_sub.add_parser(name, help=about, add_help=False)

    evals = sub.add_parser("eval", help="measure retrieval and model quality (one verb per evaluation)")
    eval_sub = evals.add_subparsers(dest="verb", required=True)
    ev = eval_sub.add_parser("category", help="category precision of an ImageFolder catalog against query images")
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

    ex = eval_sub.add_parser("expansion", help="choose FS_QUERY_EXPANSION on the embedder's product holdout")
    ex.add_argument("--catalog", default="../shared/data/clothing-small/train", help="the embedder's train photos")
    ex.add_argument("--weights", required=True, help="embedder weights trained with --holdout-only")
    ex.add_argument("--depths", default="0,1,2,3,5,10,20", help="comma-separated depths to try")
    ex.add_argument("--json", action="store_true", help="print the figures as JSON")
    ex.add_argument("--output", help="also write the figures to this Markdown file")

    ev = eval_sub.add_parser("vote", help="choose the category vote on the embedder's product holdout")
    ev.add_argument("--catalog", default="../shared/data/clothing-small/train", help="the embedder's train photos")
    ev.add_argument("--weights", required=True, help="embedder weights trained with --holdout-only")
    ev.add_argument("--seed", type=int, default=0, help="seed of the pick/confirm split of the held-out products")
    ev.add_argument("--json", action="store_true", help="print the figures as JSON")
    ev.add_argument("--output", help="also write the figures to this Markdown file")

    es = eval_sub.add_parser(
        "embedding", help="choose FS_COLOR_WEIGHT and FS_MIRROR_AVERAGING on the embedder's product holdout",
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

    s2s = eval_sub.add_parser("scenes", help="street-to-shop Recall@1/@10 on generated scenes, simple vs fine")
    _scene_options(s2s)
    s2s.add_argument("--catalog", action="append", required=True, help="ImageFolder catalog (repeatable)")

    em = eval_sub.add_parser("models", help="detector mAP@0.5 and segmenter mIoU on generated scenes")
    _scene_options(em)
    em.add_argument("--photos", default="",
                    help="held-out product photos: also count the garments fine mode finds in each")

    et = eval_sub.add_parser(
        "text", help="photo + words: category P@10 and colour share, photo alone against fused with text",
    )
    et.add_argument("--catalog", required=True, help="ImageFolder catalog, titled \"<colour> <category>\" here")
    et.add_argument("--queries", default="", help="query photos (ImageFolder); or --holdout")
    et.add_argument("--holdout", type=int, default=0,
                    help="instead of --queries: the first N catalog photos per class are the queries")
    et.add_argument("--limit", type=int, default=0, help="at most N catalog and query photos per class (0 = all)")
    et.add_argument("--colours", type=int, default=5, help="search with each of the N commonest catalog colours")
    et.add_argument("--text-weights", default="",
                    help="comma-separated FS_FUSION_TEXT_WEIGHT values to compare (default: the configured one)")
    et.add_argument("--candidates", default="",
                    help="comma-separated FS_FUSION_CANDIDATES values to compare with each weight")
    et.add_argument("--json", action="store_true", help="print the figures as JSON")
    et.add_argument("--output", help="also write the figures to this Markdown file")

    cf = eval_sub.add_parser("confidence", help="fit each mode's match confidence (FS_CONFIDENCE_FIT) on train photos")
    cf.add_argument("--catalog", required=True, help="train photos (ImageFolder): the catalog and the fit queries")
    cf.add_argument("--per-class", type=int, default=20, help="catalog photos per class")
    cf.add_argument("--fit-per-class", type=int, default=10, help="fit queries per class (the next photos)")
    cf.add_argument("--queries", default="", help="other photos to check the fit on (ImageFolder)")
    cf.add_argument("--limit", type=int, default=0, help="at most N check queries per class (0 = all)")
    cf.add_argument("--json", action="store_true", help="print the figures as JSON")
    cf.add_argument("--output", help="also write the figures to this Markdown file")

    bench = sub.add_parser("bench", help="per-stage latency p50/p95 for simple and fine mode")
    bench.add_argument("--queries", type=int, default=0, help="number of queries (default: settings)")
    bench.add_argument("--output", default="", help="Markdown file (default: docs/BENCHMARKS.md)")
    bench.add_argument(
        "--ingest", action="store_true",
        help="instead: ingest products/s in-process, 1 and 2 Celery workers, unbatched and batched (needs a broker)",
    )
    bench.add_argument("--products", type=int, default=64, help="with --ingest: sample products per run")

    lt = sub.add_parser(
        "loadtest", help="concurrent searches against the real topology on loopback: req/s, p50/p99, 5xx and 503",
    )
    lt.add_argument("--queries", default="../shared/data/clothing-small/validation",
                    help="a folder of photos; each uncached request sends a distinct one")
    lt.add_argument("--redis-url", default="", help="the cache's Redis URL, flushed per config (default: settings)")
    lt.add_argument("--configs", default="off,on,on2",
                    help="comma-separated: off / on (batching, 1 embedder replica), off2 / on2 (2 replicas)")
    lt.add_argument("--clients", default="1,4,16", help="comma-separated concurrent client counts")
    lt.add_argument("--modes", default="simple,fine", help="comma-separated search modes")
    lt.add_argument("--per-client", type=int, default=3, help="requests per client in a cell")
    lt.add_argument("--min-requests", type=int, default=8, help="fewest requests in a cell")
    lt.add_argument("--cap-s", type=float, default=60.0, help="no new request in a cell after this many seconds")
    lt.add_argument("--catalog-size", type=int, default=30, help="sample catalog products to index")
    lt.add_argument("--model-threads", type=int, default=1,
                    help="FS_TORCH_THREADS and FS_ONNX_THREADS of each model service (0: their defaults)")
    lt.add_argument("--note", default="", help="a sentence for the report (e.g. what else ran on the machine)")
    lt.add_argument("--output", default="", help="Markdown file (default: docs/BENCHMARKS.md)")
    lt.add_argument("--section", default="loadtest", help="the report's section key in that file")

    bi = sub.add_parser(
        "bench-index", help="the vector index at scale: latency, recall@10, memory per configuration and filter",
    )
    bi.add_argument("--n", type=int, default=100_000, help="vectors in the index (real catalog vectors + draws)")
    bi.add_argument("--queries", type=int, default=200, help="held-out queries per configuration and filter")
    bi.add_argument("--json", action="store_true", help="print the rows as JSON")
    bi.add_argument("--output", default="", help="Markdown file (default: docs/BENCHMARKS.md)")
    bi.add_argument("--no-output", action="store_true", help="do not write the table into a Markdown file")
    bi.add_argument("--configs", default="default,float32,int8,binary",
                    help="comma-separated: default (the shipped FS_INDEX_QUANTIZATION), float32, int8, binary "
                    "(quantized, float32 on disk); each quantization runs once")
    bi.add_argument("--efs", default="", help="comma-separated search ef values to measure on each build "
                    "(default: FS_HNSW_EF_SEARCH)")
    bi.add_argument("--oversamplings", default="", help="comma-separated rescoring oversampling factors to measure "
                    "on each quantized build (default: FS_QUANTIZATION_OVERSAMPLING)")
    bi.add_argument("--sweep", action="store_true", help="instead: sweep HNSW m, ef_construct and ef (float32)")

    snap = sub.add_parser("snapshot", help="back up and restore the index (stop the search service to restore)")
    snap_sub = snap.add_subparsers(dest="verb", required=True)
    snap_sub.add_parser("create", help="take a snapshot of the configured index")
    snap_sub.add_parser("list", help="list the snapshots of the configured index")
    sr = snap_sub.add_parser("restore", help="replace the configured index by a snapshot")
    sr.add_argument("name", help="a snapshot's name (from list) or path")

    keys = sub.add_parser("keys", help="API keys: create (printed once), list, revoke (FS_API_KEY_STORE)")
    keys_sub = keys.add_subparsers(dest="verb", required=True)
    kc = keys_sub.add_parser("create", help="create a key; prints it once, alone on the last line")
    kc.add_argument("--scope", action="append", required=True, choices=KEY_SCOPES,
                    help="search, catalog (product writes, ingest jobs) or admin (everything); repeatable")
    kc.add_argument("--name", default="", help="a name to list and revoke it by (default: generated)")
    keys_sub.add_parser("list", help="every key's name, scopes, creation time and state (never the key)")
    kr = keys_sub.add_parser("revoke", help="revoke a key, given the key itself or its name")
    kr.add_argument("key_or_name", metavar="KEY_OR_NAME")

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
