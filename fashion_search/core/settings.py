"""One typed settings object for every process, read from FS_* environment variables.

The fields are grouped by concern in the classes below; `Settings` inherits them all, so each is still one flat
`FS_<NAME>` variable and `settings.<name>`. docs/CONFIGURATION.md is generated from them
(`python -m fashion_search.core.settings_doc`); why a default is what it is lives in docs/decisions/.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parents[1]


# A model's dynamic batching: "auto" = on where the model runs on a GPU, off on the CPU.
BatchSwitch = Literal["auto", "on", "off"]

# The detection threshold of models that do not calibrate their own (their scores are CenterNet peaks).
DEFAULT_DETECTOR_MIN_SCORE = 0.25
# A rate limit as the `limits` library parses it: "120/minute", "10 per second", "1000/2 hours".
RATE_LIMIT_PATTERN = r"^\d+ ?(/|per) ?(\d+ )?(second|minute|hour|day)s?$"


class IndexSettings(BaseModel):
    """Storage and index: where data lives and how the vector index searches."""

    data_dir: Path = Field(default=Path("data"), description="Root folder of the on-disk index and stored photos.")
    collection: str = Field(default="products", description="Name of the vector collection (and of its folder).")
    sample_catalog: Path = Field(
        default=PACKAGE_DIR / "sample_catalog" / "catalog.jsonl",
        description="Catalog `fashion-search demo` indexes when the index is empty.",
    )
    index_backend: Literal["edge", "qdrant"] = Field(
        default="edge",
        description="`edge`: Qdrant Edge in-process; `qdrant`: qdrant-client (server URL or local path).",
    )
    qdrant_url: str = Field(default="", description="Qdrant server URL for `index_backend=qdrant` (empty: local path).")
    qdrant_api_key: str = Field(default="", description="API key sent to the Qdrant server (empty: none).")
    hnsw_m: int = Field(default=16, description="HNSW graph degree (links per node).")
    hnsw_ef_construct: int = Field(default=100, description="HNSW candidate list size while building the graph.")
    # 320: recall ≥ 0.95 and p50 ≤ 5 ms at 1M vectors, every filter: docs/decisions/2026-12-07-index-at-a-million.md.
    hnsw_ef_search: int = Field(default=320, description="HNSW candidate list size per search.")
    # Depth 1: best holdout P@10 among depths that keep a product's own photo first:
    # docs/decisions/2026-12-03-query-expansion-depth.md.
    query_expansion: int = Field(
        default=1, ge=0,
        description="Simple and tag mode search again with the query plus its N nearest catalog photos (0: off).",
    )
    # Off: the best setting gained +0.000 P@10 on the confirm half (docs/decisions/2026-12-04-category-vote-off.md).
    category_vote_depth: int = Field(
        default=0, ge=0, description="Category vote: how many first results vote on a category (0: off)."
    )
    category_vote_weight: float = Field(
        default=0.0, ge=0.0, description="Category vote: score bonus × the share of voters in a result's category."
    )
    category_vote_candidates: int = Field(
        default=50, ge=1, description="Category vote: results fetched and re-ranked (at least top_k)."
    )
    max_scroll_limit: int = Field(
        default=1000, description="Most products one scroll (listing) page may hold: bounds one call's work and size."
    )


class ModelSettings(BaseModel):
    """Models: which models run, their weights, and the settings that shape their vectors."""

    torch_threads: int = Field(
        default=0, description="Torch CPU threads (0: torch's default, or 1 where ONNX Runtime runs the networks)."
    )
    onnx_threads: int = Field(default=0, ge=0, description="Threads of each ONNX Runtime network (0: one per core).")
    onnx_cache: bool = Field(
        default=True, description="Keep exported ONNX graphs under data_dir/onnx (keyed by weights and code)."
    )
    torch_device: str = Field(
        default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="`auto`: the GPU if torch sees one, else the CPU; `cpu`, `cuda` or `cuda:N` to pin it.",
    )
    # docs/decisions/2026-12-07-onnx-runtime-on-cpu.md
    cpu_runtime: Literal["onnxruntime", "torchscript", "torch"] = Field(
        default="onnxruntime",
        description="On the CPU, what runs each model's fixed-size network: ONNX Runtime, frozen TorchScript or eager.",
    )
    embed_image_size: int = Field(
        default=224, description="Embedder input side in pixels (the models were trained at 224)."
    )
    # fashion-v3 (EfficientNet-Lite2) is trainable but not shipped:
    # docs/decisions/2026-12-04-embedder-lite2-not-shipped.md.
    embedder_model: Literal["fashion-v3", "fashion-v2", "fashion-v1-b8", "fashion-v1", "imagenet"] = Field(
        default="fashion-v2", description="Embedder of fine mode's garment vectors (docs/MODELS.md)."
    )
    embedder_weights: Path | None = Field(
        default=None, description="Embedder weight file (empty: the one shipped for embedder_model)."
    )
    # Led fashion-v2 as the image vector on two holdout splits:
    # docs/decisions/2026-12-05-image-embedder-fashion-v1-b8.md.
    image_embedder_model: Literal["same", "fashion-v3", "fashion-v2", "fashion-v1-b8", "fashion-v1"] = Field(
        default="fashion-v1-b8",
        description="Embedder of simple and tag mode's whole-image vectors; `same`: embedder_model's.",
    )
    image_embedder_weights: Path | None = Field(
        default=None, description="Image embedder weight file (empty: the one shipped for image_embedder_model)."
    )
    # 0.5 led 0.35 in two holdout retrains (docs/decisions/2026-12-03-colour-weight.md).
    color_weight: float = Field(
        default=0.5, description="Weight of the 30-d colour feature against the deep features (reindex after a change)."
    )
    # Off: `catalog` ties `off` at twice the ingest work, `both` is too slow:
    # docs/decisions/2026-12-03-mirror-averaging-off.md.
    mirror_averaging: Literal["off", "catalog", "both"] = Field(
        default="off",
        description="Average each vector with its mirror image's: `catalog` photos at ingest, or `both` (queries too).",
    )
    detector_model: Literal["centernet-v3", "centernet-v2", "centernet-v1", "v0"] = Field(
        default="centernet-v3", description="Garment detector of fine and tag mode (docs/MODELS.md)."
    )
    # Empty: centernet-v3's threshold chosen in training (docs/decisions/2026-12-03-detection-threshold.md).
    detector_min_score: float | None = Field(
        default=None,
        description="Detection threshold (empty: the model's own; models without one use 0.25).",
    )
    # Blend led photo in R@1 by +0.013 on fresh train scenes (docs/decisions/2026-12-04-catalog-garment-blend.md).
    catalog_garment: Literal["photo", "detection", "blend"] = Field(
        default="blend",
        description="Fine mode's catalog vector: the whole `photo`, its main `detection` cut out, or a `blend`.",
    )
    catalog_cutout_weight: float = Field(
        default=0.15, ge=0.0, le=1.0, description="Share of the cut-out's vector in a `blend` catalog vector."
    )
    # 0.3 gained R@1 +0.027 on the confirm half of fresh train scenes:
    # docs/decisions/2026-12-04-garment-colour-histogram.md.
    garment_colour_weight: float = Field(
        default=0.3, ge=0.0, le=1.0,
        description="Weight of the garment's HSV histogram in fine mode's garment vectors (0: off; reindex).",
    )
    detector_max_side: int = Field(default=640, description="`v0` detector: longest side its input is resized to.")
    # 4 lost garments the detector's spare boxes outscored; 5 keeps them (docs/decisions/2026-12-03-max-garments.md).
    max_garments: int = Field(
        default=5, ge=1, le=16, description="Most garments fine mode cuts, embeds and searches per query."
    )
    segmenter_model: Literal["masknet-v1", "grabcut"] = Field(
        default="masknet-v1", description="Garment segmenter: `masknet-v1` (trained) or `grabcut` (no weights)."
    )
    segmenter_weights: Path | None = Field(
        default=None, description="Segmenter weight file (empty: the one shipped with masknet-v1)."
    )
    segment_max_side: int = Field(default=192, description="GrabCut: longest side of the box crop (colour prior).")
    segment_iterations: int = Field(default=3, description="GrabCut: iterations per box.")
    # GrabCut's cost grows with pixels; 112 px keeps mean IoU 0.92 with 192 px:
    # docs/decisions/2026-11-23-grabcut-downscale.md.
    segment_grabcut_max_side: int = Field(
        default=112, description="GrabCut: longest side it runs at (mask upsampled to the box)."
    )


class ServingSettings(BaseModel):
    """Remote services and serving: model service addresses and the ports each server binds."""

    detector_url: str = Field(default="", description="Detector service address (empty: run it in-process).")
    segmenter_url: str = Field(default="", description="Segmenter service address (empty: run it in-process).")
    embedder_url: str = Field(default="", description="Embedder service address (empty: run it in-process).")
    image_embedder_url: str = Field(
        default="", description="Image embedder service address (empty: run it in-process)."
    )
    search_url: str = Field(default="", description="Search service address (empty: open the index in-process).")
    grpc_timeout_s: float = Field(default=15.0, description="Deadline of one gRPC call, seconds.")
    grpc_max_message_bytes: int = Field(
        default=64 * 1024 * 1024, description="Largest gRPC message sent or received, bytes."
    )
    # A service can be redeployed with new weights under a running gateway; its name keys the search cache.
    model_info_ttl_s: float = Field(
        default=30.0, description="Seconds a client trusts a remote model's name before asking again."
    )
    bind_host: str = Field(default="127.0.0.1", description="Address every server binds.")
    gateway_port: int = Field(default=8000, description="HTTP port of the gateway (and of `fashion-search demo`).")
    detector_port: int = Field(default=50051, description="gRPC port of the detector service.")
    segmenter_port: int = Field(default=50052, description="gRPC port of the segmenter service.")
    embedder_port: int = Field(default=50053, description="gRPC port of the embedder service.")
    search_port: int = Field(default=50054, description="gRPC port of the search service.")
    image_embedder_port: int = Field(default=50055, description="gRPC port of the image embedder service.")
    grpc_workers: int = Field(default=4, description="Threads each gRPC server handles calls with.")


class CacheQueueSettings(BaseModel):
    """Cache and queue: the Redis result cache and the Celery ingest queue."""

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis of the search result cache.")
    cache_enabled: bool = Field(default=True, description="Cache search answers in Redis.")
    cache_ttl_s: int = Field(default=3600, description="Seconds a cached search answer lives.")
    cache_timeout_s: float = Field(
        default=0.25, description="Seconds a Redis cache call may take before the search goes on without it."
    )
    broker_url: str = Field(
        default="", description="Celery broker; set, `fashion-search ingest` queues batches (empty: in-process)."
    )
    result_backend: str = Field(default="redis://127.0.0.1:6379/1", description="Celery result backend.")
    ingest_batch_size: int = Field(default=16, description="Products per ingest batch (in-process or one Celery task).")
    task_max_retries: int = Field(default=5, description="Retries of a failed Celery task.")


class InputLimitSettings(BaseModel):
    """Input limits: uploads beyond these are refused with 413."""

    max_upload_bytes: int = Field(default=15 * 1024 * 1024, description="Largest upload, bytes.")
    max_image_pixels: int = Field(default=40_000_000, description="Most pixels a decoded upload may have.")
    max_image_side: int = Field(default=12_000, description="Longest side a decoded upload may have, pixels.")
    work_max_side: int = Field(
        default=800, description="Every model works on the upload downscaled to this longest side, pixels."
    )


class ApiSettings(BaseModel):
    """API: the HTTP API's answers and logging."""

    default_top_k: int = Field(default=12, description="Results per search when the request names no top_k.")
    max_top_k: int = Field(default=100, description="Most results one search may ask for.")
    public_url: str = Field(default="", description="The gateway's public base URL (reserved: not read yet).")
    log_level: str = Field(default="INFO", description="Log level of every process.")


class EvaluationSettings(BaseModel):
    """Evaluation: the evaluation and benchmark commands."""

    docs_dir: Path = Field(default=Path("docs"), description="Folder `fashion-search bench` writes BENCHMARKS.md to.")
    bench_queries: int = Field(default=40, ge=1, description="Queries per mode in `fashion-search bench`.")


class BatchingSettings(BaseModel):
    """Serving under load: dynamic batching per model, back-pressure and request deadlines."""

    # --- serving under concurrency (dynamic batching, back-pressure, deadlines) ---
    # The gateway's time budget for one search, from the moment it starts the search: every gRPC call on its way gets
    # what is left of it (never more than grpc_timeout_s), and a model queue drops a request whose time ran out.
    request_deadline_s: float = Field(default=10.0, gt=0, description="per-search deadline carried to every call")
    # Longest wait between reconnection attempts to a service that went down: after a restart, calls succeed again
    # within this (gRPC's own default backs off up to 120 s).
    grpc_max_reconnect_backoff_ms: int = Field(default=2000, ge=100, description="most ms between reconnect tries")
    # What a 503 for a full model queue tells clients to wait (Retry-After, seconds).
    overload_retry_after_s: int = Field(default=1, ge=1, description="Retry-After of a 503 for a full model queue")
    # Per model: batch concurrent requests into one forward pass, at most max_batch_size items, waiting at most
    # max_queue_delay_ms for more once several are queued (a lone request never waits); "auto" batches where the model
    # runs on a GPU: on the 2-core CPU a batch cost more time per image than one image alone and the load test lost
    # throughput (docs/decisions/2026-12-07-dynamic-batching.md). Either way at most queue_size requests are admitted
    # (waiting or running); one more gets a 503 at once.
    detector_batching: BatchSwitch = Field(default="auto", description="batch detector requests: auto = on a GPU")
    detector_max_batch_size: int = Field(default=8, ge=1, description="most images per detector forward pass")
    detector_max_queue_delay_ms: float = Field(default=2.0, ge=0, description="longest wait for a fuller batch")
    detector_queue_size: int = Field(default=64, ge=1, description="most detector requests admitted at once")
    segmenter_batching: BatchSwitch = Field(default="auto", description="batch segmenter requests: auto = on a GPU")
    segmenter_max_batch_size: int = Field(default=16, ge=1, description="most box crops per segmenter pass")
    segmenter_max_queue_delay_ms: float = Field(default=2.0, ge=0, description="longest wait for a fuller batch")
    segmenter_queue_size: int = Field(default=64, ge=1, description="most segmenter requests admitted at once")
    embedder_batching: BatchSwitch = Field(default="auto", description="batch embedder requests: auto = on a GPU")
    embedder_max_batch_size: int = Field(default=16, ge=1, description="most images per embedder forward pass")
    embedder_max_queue_delay_ms: float = Field(default=2.0, ge=0, description="longest wait for a fuller batch")
    embedder_queue_size: int = Field(default=64, ge=1, description="most embedder requests admitted at once")
    image_embedder_batching: BatchSwitch = Field(default="auto", description="batch image-embedder calls (auto: GPU)")
    image_embedder_max_batch_size: int = Field(default=16, ge=1, description="most images per image-embedder pass")
    image_embedder_max_queue_delay_ms: float = Field(default=2.0, ge=0, description="longest wait for more")
    image_embedder_queue_size: int = Field(default=64, ge=1, description="most image embedder requests at once")


class IngestSettings(BaseModel):
    """Bulk ingestion: photos fetched by URL (with the SSRF guard) and ingest jobs."""

    # --- bulk ingestion: photos by URL, ingest jobs ---
    fetch_timeout_s: float = Field(
        default=10.0, gt=0, description="Most seconds one photo URL may take, redirects included.",
    )
    fetch_max_redirects: int = Field(
        default=5, ge=0, description="Most redirects followed per photo URL, each re-checked.",
    )
    fetch_content_types: list[str] = Field(
        default=["image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif"],
        description="Content types a fetched photo may have.",
    )
    fetch_allowed_networks: list[str] = Field(
        default=[], description="CIDR networks photo URLs may reach although loopback, private or link-local.",
    )
    fetch_concurrency: int = Field(
        default=8, ge=1, description="Photos of one ingest batch read and fetched at once (threads).",
    )
    task_visibility_timeout_s: int = Field(
        default=3600, ge=1, description="Seconds before the broker redelivers a batch no worker acknowledged.",
    )
    job_store_retry_s: float = Field(
        default=120.0, ge=0, description="How long a worker retries writing a batch's result to a restarting Redis.",
    )
    job_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=60, description="How long an ingest job's report is kept in Redis.",
    )
    job_key_prefix: str = Field(
        default="fs:job:", description="Redis key prefix of ingest jobs (settings.redis_url).",
    )
    duplicate_distance: float = Field(
        default=0.02, ge=0, le=2,
        description="Cosine distance of main photos under which an ingested product is a near-duplicate of another.",
    )
    duplicate_action: Literal["report", "skip"] = Field(
        default="report", description="Duplicates of another product: report them and index them, or skip them.",
    )


class ScaleSettings(BaseModel):
    """Index at scale: search depth, quantization and the Qdrant cluster layout of new collections."""

    # --- index at scale (filters, pagination, quantization, cluster) ---
    max_search_offset: int = Field(
        default=1000, ge=0, description="deepest result a search page may start at (offset + top_k reaches past it)"
    )
    # int8: at 1M vectors a third of float32's latency: docs/decisions/2026-12-07-index-at-a-million.md.
    index_quantization: Literal["none", "int8", "binary"] = Field(
        default="int8",
        description="int8 or 1-bit (binary) vector copies in RAM, float32 kept on disk to rescore; none: float32",
    )
    # 3: at 1M, recall 0.004-0.006 above 2 and equal to 4's: docs/decisions/2026-12-07-payload-indexes-on-disk.md.
    quantization_oversampling: float = Field(
        default=3.0, ge=1.0, description="a quantized search fetches this many times top_k, then rescores with float32"
    )
    # The fields no filtered search reads: docs/decisions/2026-12-07-payload-indexes-on-disk.md.
    payload_indexes_on_disk: list[str] = Field(
        default=["product_id", "embedder", "photo", "text"],
        description="fields whose payload index is memory-mapped from disk (read on use) instead of held in RAM",
    )
    max_text_length: int = Field(default=200, ge=1, description="longest text a search may add to its photo")
    fusion_candidates: int = Field(
        default=100, ge=1, description="candidates of the photo and of the words that reciprocal-rank fusion merges"
    )
    fusion_text_weight: float = Field(
        default=1.0, gt=0.0, description="weight of the words' ranks against the photo's (1.0) in the fusion"
    )
    mmr_candidates: int = Field(default=100, ge=1, description="nearest candidates MMR picks a diverse page from")
    snapshot_dir: Path = Field(
        default=Path(""), description="where index snapshots are kept; empty: data_dir/snapshots"
    )
    max_photos_per_product: int = Field(
        default=16, ge=1, description="most photos one product may have (each is its own point in the index)"
    )
    qdrant_shard_number: int = Field(default=1, ge=1, description="shards of a new collection on a Qdrant server")
    qdrant_replication_factor: int = Field(
        default=1, ge=1, description="copies of each shard on a Qdrant cluster (new collections)"
    )
    qdrant_write_consistency: int = Field(
        default=1, ge=1, description="replicas that must acknowledge a write on a Qdrant cluster (new collections)"
    )


class OperationsSettings(BaseModel):
    """Production operations: API keys, rate limits, CORS, logs, metrics ports and traces."""

    # --- production operations: access, rate limits, metrics, logs, traces, cluster ---
    auth_required: bool = Field(default=False, description="refuse API requests without a valid key (401/403)")
    allow_open_bind: bool = Field(
        default=False, description="intend to serve without auth on a non-loopback address (else refuse to start)"
    )
    api_key_store: Literal["file", "redis"] = Field(
        default="file", description="where hashed API keys live: a file under data_dir, or Redis at redis_url"
    )
    auth_secret: str = Field(
        default="", description="HMAC-SHA256 key hashing API keys; empty: a random one kept under data_dir (file)"
    )
    page_api_key: str = Field(
        default="", description="search-scope key the search page sends (every visitor can read it); empty: none"
    )
    rate_limit_search: str = Field(
        default="120/minute", pattern=RATE_LIMIT_PATTERN, description="per-key limit of search-scope routes"
    )
    rate_limit_catalog: str = Field(
        default="600/minute", pattern=RATE_LIMIT_PATTERN, description="per-key limit of catalog-scope routes"
    )
    rate_limit_admin: str = Field(
        default="60/minute", pattern=RATE_LIMIT_PATTERN, description="per-key limit of admin-scope routes"
    )
    rate_limit_storage_url: str = Field(default="", description="limits storage URI; empty: redis_url")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS (JSON list)")
    log_format: Literal["json", "console"] = Field(default="json", description="structured log lines (structlog)")
    gateway_metrics_port: int = Field(default=9100, description="Prometheus /metrics port of the gateway")
    detector_metrics_port: int = Field(default=9101, description="Prometheus /metrics port of the detector")
    segmenter_metrics_port: int = Field(default=9102, description="Prometheus /metrics port of the segmenter")
    embedder_metrics_port: int = Field(default=9103, description="Prometheus /metrics port of the embedder")
    search_metrics_port: int = Field(default=9104, description="Prometheus /metrics port of the search service")
    image_embedder_metrics_port: int = Field(default=9105, description="Prometheus /metrics port of image-embedder")
    worker_metrics_port: int = Field(default=9106, description="Prometheus /metrics port of the Celery worker")
    otel_exporter_otlp_endpoint: str = Field(
        default="", description="OTLP/HTTP collector URL for traces, e.g. http://collector:4318; empty: no export"
    )


class ShopperSettings(BaseModel):
    """What the shopper sees: garment kinds in fine and tag mode, merged boxes, match confidence and currency."""

    # --- what the shopper sees: kinds, garments, confidence (docs/decisions/2026-12-07-shopper-quality.md) ---
    # Fine mode re-ranks each garment's nearest catalog garments by the evidence for the garment's kind (category):
    # score + own × the share of its own first kind_vote_depth candidates in the result's category + label × (the
    # detector named that category with at least kind_label_min_score) + image × the share of the whole photo's
    # first kind_vote_depth image neighbours in it, the last only for a garment that fills the photo (its box
    # covers kind_image_coverage[0] of it: nothing, to [1]: all), as a product photo's garment does; a garment
    # among others in a street photo has its own kind. Chosen on train photos; 0 everywhere: plain nearest garments.
    kind_candidates: int = Field(default=50, ge=1, description="candidates per garment that kind evidence re-ranks")
    kind_vote_depth: int = Field(default=5, ge=1, description="nearest results that vote for a kind")
    kind_own_weight: float = Field(default=0.2, ge=0.0, description="fine: bonus × share of the garment's own votes")
    kind_label_weight: float = Field(default=0.2, ge=0.0, description="fine: bonus for the detector's trusted label")
    kind_image_weight: float = Field(default=0.4, ge=0.0, description="fine: bonus × share of the image's votes")
    kind_image_coverage: tuple[float, float] = Field(
        default=(0.25, 0.5), description="box share of the photo from which (to which fully) the image's votes count"
    )
    kind_label_min_score: float = Field(
        default=0.3, ge=0.0, le=1.0, description="fine: a detected label below this score gets no bonus"
    )
    # A garment whose nearest catalog garment leads the next by kind_keep_margin (in score) keeps it first: a clear
    # instance match is most likely the very product, and kind evidence then orders only the results below it
    # (docs/decisions/2026-12-07-kind-evidence-margin.md). 0: the nearest always stays first; 2 or more: never kept.
    kind_keep_margin: float = Field(
        default=0.12, ge=0.0, description="fine: the nearest garment stays first when it leads the next by this"
    )
    # Tag mode filters on a trusted label (tag_label_min_score) only where the image model's neighbours give it at
    # least tag_label_min_share; otherwise on the image model's own leading kind.
    tag_label_min_score: float = Field(
        default=0.4, ge=0.0, le=1.0, description="tag and mixing: a detected label below this is not trusted"
    )
    tag_label_min_share: float = Field(default=0.2, ge=0.0, le=1.0, description="image votes a tag label needs")
    # Boxes of one garment merged into one (a pair of shoes, a shirt found twice): same kind and this much of the
    # smaller box inside the larger, or, for paired kinds, boxes this close (× the smaller box's longer side).
    garment_merge_containment: float = Field(
        default=0.8, ge=0.0, le=1.0, description="share of the smaller same-kind box inside the other to merge them"
    )
    garment_pair_kinds: list[str] = Field(default=["shoes"], description="kinds that come as a pair: one garment")
    garment_pair_gap: float = Field(default=0.25, ge=0.0, description="how close two boxes of a paired kind merge")
    # Several garments of other kinds (trusted labels) in a simple or tag query: the results mix their kinds in turn
    # and the answer suggests fine mode. Simple mode runs the detector for it (0 = off: simple mode stays one embed).
    mix_min_kinds: int = Field(default=2, ge=0, description="trusted kinds that make simple/tag mix results; 0 off")
    # Match confidence: P(result is of the query garment's kind) = sigmoid(slope × score + offset) per mode, fitted
    # on train photos (`fashion-search eval confidence`); a "good match" from good_match_confidence on.
    confidence_fit: dict[str, tuple[float, float]] = Field(
        default={"simple": (17.004, -12.142), "fine": (8.011, -4.205), "tag": (13.523, -8.7)},
        description="per mode: (slope, offset) of the score→confidence sigmoid",
    )
    good_match_confidence: float = Field(default=0.8, ge=0.0, le=1.0, description="confidence of a good match")
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$", description="ISO 4217 code of catalog prices")


# The groups, in the order docs/CONFIGURATION.md lists them.
SETTING_GROUPS: tuple[type[BaseModel], ...] = (
    IndexSettings, ModelSettings, ServingSettings, BatchingSettings, CacheQueueSettings, IngestSettings, ScaleSettings,
    InputLimitSettings, ApiSettings, OperationsSettings, ShopperSettings, EvaluationSettings,
)


class Settings(
    ShopperSettings, OperationsSettings, ScaleSettings, IngestSettings, BatchingSettings, EvaluationSettings,
    ApiSettings, InputLimitSettings, CacheQueueSettings, ServingSettings, ModelSettings, IndexSettings, BaseSettings,
):
    """All configuration; each field is overridable with an `FS_<NAME>` environment variable."""

    model_config = SettingsConfigDict(env_prefix="FS_", env_file=".env", extra="ignore")

    @property
    def category_vote_on(self) -> bool:
        """Whether the category vote re-ranks simple and tag mode (a depth and a weight both set)."""
        return bool(self.category_vote_depth and self.category_vote_weight)

    @model_validator(mode="after")
    def _image_and_garment_vectors_share_a_dimension(self) -> Settings:
        # The index holds image and garment vectors of one dimension: imagenet's 1310 cannot sit beside 542.
        if self.embedder_model == "imagenet" and self.separate_image_embedder:
            raise ValueError('FS_EMBEDDER_MODEL=imagenet makes 1310-d vectors and FS_IMAGE_EMBEDDER_MODEL '
                             f'{self.image_embedder_model!r} 542-d ones: set FS_IMAGE_EMBEDDER_MODEL=same with it')
        return self

    @property
    def separate_image_embedder(self) -> bool:
        """Whether simple and tag mode's image vectors come from their own model (image_embedder_model)."""
        return self.image_embedder_model != "same"

    def image_embedder_settings(self) -> Settings:
        """These settings as the image vectors' embedder reads them: its model, weights, service URL and port in the
        embedder's fields (so one GarmentEmbedder class and one embedder server serve both)."""
        if not self.separate_image_embedder:
            return self
        return self.model_copy(update={
            "embedder_model": self.image_embedder_model, "embedder_weights": self.image_embedder_weights,
            "embedder_url": self.image_embedder_url, "embedder_port": self.image_embedder_port,
            "embedder_metrics_port": self.image_embedder_metrics_port,
            **{f"embedder_{knob}": getattr(self, f"image_embedder_{knob}")
               for knob in ("batching", "max_batch_size", "max_queue_delay_ms", "queue_size")},
            "image_embedder_model": "same",
        })

    @property
    def index_path(self) -> Path:
        """Where the embedded index lives on disk."""
        return self.data_dir / "index" / self.collection

    @property
    def images_dir(self) -> Path:
        """Where uploaded product images are kept."""
        return self.data_dir / "images"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
