"""Implementations of the CLI subcommands."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tqdm import tqdm

from fashion_search.core.settings import Settings

if TYPE_CHECKING:
    from fashion_search.gateway.keys import ApiKeys

log = logging.getLogger(__name__)


def _command_line() -> str:
    return "fashion-search " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _print_evaluation(args: argparse.Namespace, text: str, section: str, json_text: str) -> int:
    """Print an evaluation's Markdown (its JSON with --json); with --output, write it into that file's section."""
    from fashion_search.evaluation.metrics import write_section

    print(json_text if args.json else text)
    if args.output:
        write_section(Path(args.output), section, text, "Evaluation")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run one part of the system in this process."""
    target = args.target
    from fashion_search.core.observability import start_metrics_server

    if target == "gateway":
        import uvicorn

        from fashion_search.gateway.app import create_app
        from fashion_search.gateway.auth import check_exposure

        log.warning("%s", check_exposure(settings))
        start_metrics_server(settings.gateway_metrics_port, settings)
        # log_config=None: uvicorn's loggers go through the process's structured log setup; the gateway logs each
        # request itself (with its request id), so uvicorn's access log would only repeat it.
        uvicorn.run(create_app(settings), host=settings.bind_host, port=settings.gateway_port, log_config=None,
                    access_log=False)
    elif target == "worker":
        from fashion_search.workers.celery_app import celery_app
        from fashion_search.workers.metrics import register_queue_depth

        register_queue_depth(settings)
        start_metrics_server(settings.worker_metrics_port, settings)

        # solo pool: one batch at a time per process (the models use every core); scale with more workers.
        celery_app.worker_main(["worker", "--loglevel=INFO", "--pool=solo", "-n", "fashion-worker@%h"])
    elif target == "image-embedder":
        from fashion_search.services.embedder.server import serve

        if not settings.separate_image_embedder:
            print('error: FS_IMAGE_EMBEDDER_MODEL is "same": image vectors come from the embedder service',
                  file=sys.stderr)
            return 2

        # The embedder server again, on the image vectors' model and port (FS_IMAGE_EMBEDDER_*).
        serve(settings.image_embedder_settings())
    else:
        import importlib

        importlib.import_module(f"fashion_search.services.{target}.server").serve(settings)
    return 0


def _ingest_local(records: list, settings: Settings) -> int:
    from fashion_search.pipeline.components import build_pipeline
    from fashion_search.pipeline.ingest import Ingestor

    pipeline = build_pipeline(settings)
    try:
        with tqdm(total=len(records), unit="product", desc="ingest") as bar:
            report = Ingestor(pipeline, settings).ingest_records(records, on_progress=bar.update)
        pipeline.index.optimize()
    finally:
        pipeline.index.close()
    return _print_ingest_report(report)


def _print_ingest_report(report: object, verb: str = "indexed") -> int:
    """Print what an ingest or reindex wrote and what it refused (and why); exit status 1 if it refused all."""
    indexed = getattr(report, "indexed", 0)
    failed = getattr(report, "failed", None)
    if failed is None:  # a job's report: refusals with their records
        failed = [(r["product_id"], r["reason"]) for r in getattr(report, "refused", [])]
    print(f"{verb} {indexed} products; {len(failed)} refused")
    for pid, why in failed[:20]:
        print(f"  {pid}: {why}")
    duplicates = [d if isinstance(d, dict) else d.to_dict() for d in getattr(report, "duplicates", None) or []]
    if duplicates:
        print(f"{len(duplicates)} duplicate another product's photo")
        for d in duplicates[:20]:
            print(f"  {d['product_id']}: {d['kind']} duplicate of {d['duplicate_of']} (cosine distance "
                  f"{float(d['distance']):.4f}){', skipped' if d['skipped'] else ''}")
    return 0 if indexed or not failed else 1


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """Load a catalog in-process, or through Celery as a job when a broker is configured."""
    from fashion_search.core.catalog import CatalogError, load_catalog

    if args.retry_refused:
        return _retry_refused(args, settings)
    if not args.path:
        print("error: give a catalog path (or --retry-refused JOB_ID)", file=sys.stderr)
        return 2
    try:
        records = load_catalog(args.path)
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not settings.broker_url or args.sync:
        return _ingest_local(records, settings)
    return _ingest_queue(records, args.wait, settings)


def _ingest_queue(records: list, wait: bool, settings: Settings) -> int:
    from fashion_search.workers.enqueue import enqueue_catalog, follow_job
    from fashion_search.workers.jobs import JobStore

    jobs = JobStore(settings)
    job_id = enqueue_catalog(records, settings, jobs)
    print(f"job {job_id}: queued {len(records)} products on {settings.broker_url}")
    if not wait:
        print(f"follow it with GET /v1/jobs/{job_id}")
        return 0
    report = follow_job(jobs, job_id)
    print(f"job {job_id}: {report.state}")
    return _print_ingest_report(report)


def _retry_refused(args: argparse.Namespace, settings: Settings) -> int:
    """Send a job's refused records again, as a new job."""
    if not settings.broker_url:
        print("error: --retry-refused needs a broker (FS_BROKER_URL)", file=sys.stderr)
        return 2
    from fashion_search.workers.enqueue import records_to_retry
    from fashion_search.workers.jobs import JobStore

    report = JobStore(settings).get(args.retry_refused)
    if report is None:
        print(f"error: no ingest job {args.retry_refused!r} (unknown, or expired)", file=sys.stderr)
        return 2
    records = records_to_retry(report)
    if not records:
        print(f"job {args.retry_refused} has no refused records to re-run")
        return 0
    return _ingest_queue(records, args.wait, settings)


def cmd_reindex(args: argparse.Namespace, settings: Settings) -> int:
    """Recompute indexed products' vectors in-process, or through Celery with --queue."""
    ids: list[str] | None = list(args.product_ids) or None
    if args.rebuild:
        if ids:
            print("error: --rebuild rebuilds every product; give no product ids", file=sys.stderr)
            return 2
        return _rebuild_queue(args.wait, settings) if args.queue else _rebuild(settings)
    if args.queue:
        return _reindex_queue(ids, args.wait, settings)
    from fashion_search.pipeline.components import build_pipeline
    from fashion_search.pipeline.ingest import Ingestor

    pipeline = build_pipeline(settings)
    try:
        total = len(set(ids)) if ids is not None else pipeline.index.stats().count
        with tqdm(total=total, unit="product", desc="reindex") as bar:
            report = Ingestor(pipeline, settings).reindex(ids, on_progress=bar.update)
        pipeline.index.optimize()
    finally:
        pipeline.index.close()
    return _print_ingest_report(report, "reindexed")


def _rebuild(settings: Settings) -> int:
    """Rebuild the whole collection in-process (through the search service when FS_SEARCH_URL is set)."""
    from fashion_search.pipeline.components import build_pipeline
    from fashion_search.pipeline.ingest import Ingestor
    from fashion_search.services.embedder.model import GarmentEmbedder
    from fashion_search.services.search.factory import make_stored_index

    # The served index opens with the dims it holds; the new collection gets the configured models' dims.
    index = make_stored_index(settings, GarmentEmbedder(settings).dim)
    pipeline = build_pipeline(settings, index=index)
    try:
        with tqdm(total=index.stats().count, unit="product", desc="rebuild") as bar:
            report = Ingestor(pipeline, settings).rebuild(on_progress=bar.update)
    finally:
        index.close()
    return _print_rebuild_report(report.version, report.passes, report.reason, report)


def _print_rebuild_report(version: int | None, passes: int, reason: str, report: object) -> int:
    """Print whether a rebuild switched (and to which version) and what it refused; exit status 1 if it did not."""
    _print_ingest_report(report, "rebuilt")
    if version is None:
        print(f"not switched: {reason}", file=sys.stderr)
        return 1
    print(f"switched to the new collection after {passes} pass(es); index version {version}")
    return 0


def _rebuild_queue(wait: bool, settings: Settings) -> int:
    """Send the rebuild to a Celery worker as one task (the worker's models compute the vectors)."""
    if not settings.broker_url:
        print("error: --queue needs a broker (FS_BROKER_URL)", file=sys.stderr)
        return 2
    from types import SimpleNamespace

    from fashion_search.workers.tasks import rebuild_index

    result = rebuild_index.delay()
    print(f"queued rebuild task {result.id} on {settings.broker_url}")
    if not wait:
        return 0
    out = result.get()
    report = SimpleNamespace(indexed=out["indexed"], failed=[tuple(f) for f in out["failed"]])
    return _print_rebuild_report(out["version"], out["passes"], out["reason"], report)


def _reindex_queue(ids: list[str] | None, wait: bool, settings: Settings) -> int:
    if not settings.broker_url:
        print("error: --queue needs a broker (FS_BROKER_URL)", file=sys.stderr)
        return 2
    from fashion_search.pipeline.components import build_index
    from fashion_search.workers.enqueue import enqueue_reindex, wait_for

    # Only the listing needs the index here (no model is loaded); the workers open their own.
    index = build_index(settings)
    try:
        results, total = enqueue_reindex(index, settings, ids)
    finally:
        index.close()
    print(f"queued {len(results)} reindex tasks for {total} products on {settings.broker_url}")
    if not wait:
        return 0
    return _print_ingest_report(wait_for(results, total, desc="reindex (queue)"), "reindexed")


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Index the sample catalog once (reused on later runs) and serve the page and API in one process."""
    from fashion_search.core.catalog import CatalogError, load_catalog
    from fashion_search.pipeline.components import build_pipeline
    from fashion_search.pipeline.ingest import Ingestor

    pipeline = build_pipeline(settings)
    stats = pipeline.index.stats()
    if stats.count == 0:
        try:
            records = load_catalog(args.catalog or settings.sample_catalog)
        except CatalogError as exc:
            pipeline.index.close()
            print(f"error: {exc}", file=sys.stderr)
            return 2
        with tqdm(total=len(records), unit="product", desc="indexing sample catalog") as bar:
            report = Ingestor(pipeline, settings).ingest_records(records, on_progress=bar.update)
        pipeline.index.optimize()
        _print_ingest_report(report)
    else:
        print(f"reusing the index at {settings.index_path} ({stats.count} products, version {stats.version}); "
              "after a model upgrade, `fashion-search reindex` recomputes its vectors")
        if stale := pipeline.stale_index(stats):
            print(f"warning: {stale}", file=sys.stderr)
    if args.no_serve:
        pipeline.index.close()
        return 0
    import uvicorn

    from fashion_search.gateway.app import create_app

    for model in (pipeline.detector, pipeline.segmenter, pipeline.embedder, pipeline.image_embedder):
        load = getattr(model, "load", None)
        if callable(load):
            load()  # load now, so the first shopper does not wait for the weights
    from fashion_search.gateway.auth import check_exposure

    try:
        exposure = check_exposure(settings)
    except SystemExit:
        pipeline.index.close()
        raise
    print(f"search page: http://{settings.bind_host}:{settings.gateway_port}/  API docs: /docs  ({exposure})")
    uvicorn.run(create_app(settings, pipeline), host=settings.bind_host, port=settings.gateway_port, log_config=None,
                access_log=False)
    pipeline.index.close()
    return 0


def cmd_eval_category(args: argparse.Namespace, settings: Settings) -> int:
    """Precision@5/10/20 and mAP@20 of a catalog against query images."""
    from fashion_search.evaluation.category import ablation, ablation_markdown, evaluate, to_markdown

    if args.ablation:
        table = ablation(settings, args.catalog, args.queries, args.limit)
        text = ablation_markdown(table, _command_line(), f"catalog `{args.catalog}`, queries `{args.queries}`")
        return _print_evaluation(args, text, "eval-ablation", json.dumps(table, indent=2))
    result = evaluate(settings, args.catalog, args.queries, args.mode, args.limit)
    # A run on part of the folders (--limit) has its own section: it does not replace the figures of a full run.
    key = f"eval-{args.mode}" + (f"-limit{args.limit}" if args.limit else "")
    return _print_evaluation(args, to_markdown(result, _command_line()), key, result.to_json())


def cmd_eval_text(args: argparse.Namespace, settings: Settings) -> int:
    """Category P@10 and colour share of the results, photo alone against photo + text, per fusion setting."""
    from fashion_search.evaluation.text_fusion import evaluate_text, to_markdown

    try:
        weights = [float(w) for w in args.text_weights.split(",") if w.strip()] or [settings.fusion_text_weight]
        depths = [int(d) for d in args.candidates.split(",") if d.strip()] or [settings.fusion_candidates]
        variants = {
            f"weight {w:g}, {d} candidates": settings.model_copy(
                update={"fusion_text_weight": w, "fusion_candidates": d})
            for d in depths for w in weights
        }
        if min(weights) <= 0 or min(depths) < 1:
            raise ValueError("--text-weights must be above 0 and --candidates at least 1")
        if not args.queries and args.holdout <= 0:
            raise ValueError("give --queries or --holdout")
        result = evaluate_text(settings, args.catalog, args.queries, args.limit, args.holdout, args.colours, variants)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    key = "eval-text" + (f"-holdout{args.holdout}" if args.holdout > 0 else "") + (
        f"-limit{args.limit}" if args.limit else "")
    return _print_evaluation(args, to_markdown(result, _command_line()), key, result.to_json())


def cmd_eval_expansion(args: argparse.Namespace, settings: Settings) -> int:
    """Query-expansion depths on the embedder's product holdout."""
    from fashion_search.evaluation.expansion import best_depth, expansion_markdown, expansion_sweep

    try:
        depths = [int(d) for d in args.depths.split(",") if d.strip()]
        table, held, fitted = expansion_sweep(settings, args.catalog, Path(args.weights), depths)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = expansion_markdown(table, held, fitted, Path(args.weights), _command_line())
    figures = {"depths": table, "chosen": best_depth(table)}
    return _print_evaluation(args, text, "eval-expansion", json.dumps(figures, indent=2))


def cmd_eval_vote(args: argparse.Namespace, settings: Settings) -> int:
    """Category-vote depths and weights on the embedder's product holdout, picked on one half, judged on the other."""
    from fashion_search.evaluation.vote import vote_markdown, vote_sweep

    try:
        result = vote_sweep(settings, args.catalog, Path(args.weights), seed=args.seed)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = vote_markdown(result, Path(args.weights), _command_line())
    rows = {f"{d}x{w:g}": row for (d, w), row in result["rows"].items()}
    return _print_evaluation(args, text, "eval-vote", json.dumps(result | {"rows": rows}, indent=2))


def cmd_eval_embedding(args: argparse.Namespace, settings: Settings) -> int:
    """Colour weight × mirror averaging on the embedder's product holdout, or two weight files compared on it."""
    from fashion_search.evaluation.embedding import (
        compare_weights,
        comparison_markdown,
        comparison_section,
        settings_markdown,
        settings_sweep,
    )

    try:
        if args.baseline:
            result = compare_weights(
                settings, args.catalog, args.scenes, Path(args.weights), Path(args.baseline), args.limit
            )
        else:
            result = settings_sweep(settings, args.catalog, args.scenes, Path(args.weights), args.limit)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = (comparison_markdown if args.baseline else settings_markdown)(result, _command_line())
    section = comparison_section(result) if args.baseline else "eval-embedding"
    return _print_evaluation(args, text, section, json.dumps(result, indent=2))


def _scenes(args: argparse.Namespace) -> Path:
    from fashion_search.datasets.scenes import ensure_scenes

    return ensure_scenes(args.scenes, args.generate_from, args.n, args.seed)


def cmd_eval_scenes(args: argparse.Namespace, settings: Settings) -> int:
    """Street-to-shop recall on generated scenes."""
    from fashion_search.evaluation.scenes import street_to_shop, street_to_shop_markdown

    result = street_to_shop(settings, str(_scenes(args)), args.catalog, args.limit)
    text = street_to_shop_markdown(result, _command_line())
    key = f"eval-street-to-shop-{settings.detector_model}-catalog-{settings.catalog_garment}"
    return _print_evaluation(args, text, key, json.dumps(result, indent=2))


def cmd_eval_models(args: argparse.Namespace, settings: Settings) -> int:
    """Detector mAP and segmenter mIoU on generated scenes."""
    from fashion_search.evaluation.models import evaluate_models, models_markdown

    result = evaluate_models(settings, str(_scenes(args)), args.limit, args.photos)
    text = models_markdown(result, _command_line())
    key = f"eval-models-{settings.detector_model}-{result['segmenter']}"
    return _print_evaluation(args, text, key, json.dumps(result, indent=2))


def cmd_snapshot_create(args: argparse.Namespace, settings: Settings) -> int:
    """Snapshot the configured local index (Edge, or qdrant-client on a directory or a server)."""
    from fashion_search.services.search.factory import make_local_index, stored_dim
    from fashion_search.services.search.snapshots import snapshot_dir

    dim = stored_dim(settings)
    if dim is None:
        print("error: there is no index to snapshot yet", file=sys.stderr)
        return 2
    index = make_local_index(settings, dim)
    try:
        print(index.snapshot(snapshot_dir(settings)))  # type: ignore[attr-defined]
    finally:
        index.close()
    return 0


def cmd_snapshot_list(args: argparse.Namespace, settings: Settings) -> int:
    """List the stored snapshots (a Qdrant server's own, with FS_QDRANT_URL)."""
    from fashion_search.services.search.snapshots import list_snapshots

    if settings.index_backend == "qdrant" and settings.qdrant_url:
        from fashion_search.services.search.factory import make_local_index, stored_dim

        index = make_local_index(settings, stored_dim(settings) or 1)
        try:
            for name in index.server_snapshots():  # type: ignore[attr-defined]
                print(name)
        finally:
            index.close()
        return 0
    for snap in list_snapshots(settings):
        print(f"{snap.name}\t{snap.size_bytes}\t{snap.created}")
    return 0


def cmd_snapshot_restore(args: argparse.Namespace, settings: Settings) -> int:
    """Replace the configured index by a snapshot (the search service must be stopped for a local index)."""
    from fashion_search.services.search.factory import make_local_index, stored_dim
    from fashion_search.services.search.snapshots import find_snapshot

    try:
        if settings.index_backend == "edge":
            from fashion_search.services.search.edge_index import restore_snapshot

            version = restore_snapshot(settings.index_path, find_snapshot(settings, args.name))
        elif settings.qdrant_url:
            index = make_local_index(settings, stored_dim(settings) or 1)
            try:
                version = index.restore_server_snapshot(args.name)  # type: ignore[attr-defined]
            finally:
                index.close()
        else:
            from fashion_search.services.search.qdrant_index import default_location, restore_local_snapshot

            version = restore_local_snapshot(settings, default_location(settings), find_snapshot(settings, args.name))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"restored {args.name}: index version {version}")
    return 0


_Number = TypeVar("_Number", int, float)


def _at_least_one(text: str, kind: type[_Number]) -> list[_Number] | None:
    """A comma-separated list of numbers of at least 1 (empty: none given); None if any is not."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        return None
    return None if any(v < 1 for v in values) else values


def cmd_bench_index(args: argparse.Namespace, settings: Settings) -> int:
    """Build the index at --n vectors per configuration and print (and write) latency, recall and memory."""
    from fashion_search.evaluation.index_bench import CONFIGS, Row, rows_json, run_bench_index, to_markdown
    from fashion_search.evaluation.metrics import write_section

    if args.n < 1000 or args.queries < 10:
        print("error: --n must be at least 1000 and --queries at least 10", file=sys.stderr)
        return 2
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not configs or any(c not in CONFIGS for c in configs):
        print(f"error: --configs takes a comma-separated list of {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    if args.sweep:
        from fashion_search.evaluation.index_bench import run_sweep, sweep_markdown

        sweep = run_sweep(settings, args.n, args.queries)
        print(json.dumps(sweep, indent=2) if args.json else sweep_markdown(sweep, args.n, _command_line()))
        return 0
    efs = _at_least_one(args.efs, int)
    if efs is None:
        print("error: --efs takes a comma-separated list of positive integers", file=sys.stderr)
        return 2
    oversamplings = _at_least_one(args.oversamplings, float)
    if oversamplings is None:
        print("error: --oversamplings takes a comma-separated list of numbers of at least 1", file=sys.stderr)
        return 2
    path = Path(args.output) if args.output else settings.docs_dir / "BENCHMARKS.md"

    def finished(rows: list[Row], info: dict[str, object]) -> None:
        """Each build's rows as soon as it is done, so a stopped run keeps the builds it finished."""
        text = to_markdown(rows, info, _command_line())
        done = sum(r.quantization == rows[-1].quantization for r in rows)
        print("\n".join(text.splitlines()[-done:]), file=sys.stderr, flush=True)
        if not args.no_output:
            write_section(path, f"bench-index-{info['n']}", f"## Vector index at {info['n']:,} vectors\n\n{text}",
                          "Benchmarks")

    rows, info = run_bench_index(
        settings, args.n, args.queries, quantizations=configs, efs=efs, oversamplings=oversamplings, on_rows=finished,
    )
    print(rows_json(rows) if args.json else to_markdown(rows, info, _command_line()))
    return 0


def cmd_eval_confidence(args: argparse.Namespace, settings: Settings) -> int:
    """Fit each mode's match confidence on train photos and check it on others."""
    from fashion_search.evaluation.confidence import confidence_fit, confidence_markdown

    result = confidence_fit(settings, args.catalog, args.per_class, args.fit_per_class, args.queries, args.limit)
    return _print_evaluation(args, confidence_markdown(result, _command_line()), "eval-confidence",
                             json.dumps(result, indent=2))


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Per-stage latency table (or, with --ingest, the ingest-rate table), printed and written to docs/BENCHMARKS.md."""
    from fashion_search.evaluation.bench import run_bench, save_report, to_markdown

    output = Path(args.output) if args.output else settings.docs_dir / "BENCHMARKS.md"
    if args.ingest:
        from fashion_search.evaluation.metrics import write_section
        from fashion_search.workers.ingest_bench import ingest_markdown, run_ingest_bench

        try:
            rows, info = run_ingest_bench(settings, args.products)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        text = ingest_markdown(rows, info, _command_line())
        print(text)
        write_section(output, "bench-ingest", text, "Benchmarks")
        return 0

    table, info = run_bench(settings, args.queries or settings.bench_queries)
    text = to_markdown(table, info, _command_line())
    print(text)
    save_report(output, text)
    return 0


def cmd_loadtest(args: argparse.Namespace, settings: Settings) -> int:
    """Load table of the real topology on loopback, printed and written to docs/BENCHMARKS.md."""
    from fashion_search.evaluation.loadtest import CONFIGS, LoadTestPlan, run_loadtest, to_markdown
    from fashion_search.evaluation.metrics import write_section

    def listed(text: str) -> list[str]:
        return [part.strip() for part in text.split(",") if part.strip()]

    unknown = [c for c in listed(args.configs) if c not in CONFIGS]
    if unknown:
        print(f"error: unknown config {', '.join(unknown)}; use {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    plan = LoadTestPlan(
        configs=[CONFIGS[c] for c in listed(args.configs)], clients=[int(c) for c in listed(args.clients)],
        modes=listed(args.modes), per_client=args.per_client, min_requests=args.min_requests, cap_s=args.cap_s,
        catalog_size=args.catalog_size, model_threads=args.model_threads,
    )
    cells = run_loadtest(plan, Path(args.queries), args.redis_url or settings.redis_url)
    text = to_markdown(cells, plan, _command_line(), args.note)
    print(text)
    output = Path(args.output) if args.output else settings.docs_dir / "BENCHMARKS.md"
    write_section(output, args.section, text, "Benchmarks")
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    """Run one model's trainer with the remaining options (it writes the weights file and logs its figures)."""
    import importlib

    from fashion_search.cli.parser import TRAINERS

    importlib.import_module(TRAINERS[args.verb][0]).main(args.options)
    return 0


def cmd_healthcheck(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 if the service at the URL is healthy."""
    url: str = args.url
    if url.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return 0 if resp.status == 200 else 1
        except OSError:
            return 1
    from fashion_search.core.grpc_common import check_health

    return 0 if check_health(url, settings) else 1


def _key_command(settings: Settings, run: Callable[[ApiKeys], int]) -> int:
    """Run a keys verb over the configured store; a refused command or an unreachable store exits 2, saying why."""
    import redis

    from fashion_search.gateway.keys import ApiKeys, KeyCommandError

    try:
        return run(ApiKeys(settings))
    except KeyCommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except redis.RedisError as exc:
        print(f"error: the API key store at FS_REDIS_URL is unreachable: {exc}", file=sys.stderr)
    return 2


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create a key and print it once, alone on the last line (only its digest is stored)."""
    return _key_command(settings, lambda keys: _create_key(keys, args, settings))


def _create_key(keys: ApiKeys, args: argparse.Namespace, settings: Settings) -> int:
    key, record = keys.create(args.scope, args.name)
    print(f"created key {record.name!r} with scopes {','.join(record.scopes)} in the {settings.api_key_store} store; "
          "it is shown only now:")
    print(key)
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    """One line per key: name, scopes, created, state."""
    import datetime as dt

    def when(ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def show(keys: ApiKeys) -> int:
        for r in keys.list():
            state = "active" if r.revoked is None else f"revoked {when(r.revoked)}"
            print(f"{r.name}\t{','.join(r.scopes)}\tcreated {when(r.created)}\t{state}")
        return 0

    return _key_command(settings, show)


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke a key (the key itself or its name); takes effect on the next request."""
    def revoke(keys: ApiKeys) -> int:
        revoked = keys.revoke(args.key_or_name)
        print(f"revoked {len(revoked)} key(s): {', '.join(r.name for r in revoked) or 'already revoked'}")
        return 0

    return _key_command(settings, revoke)
