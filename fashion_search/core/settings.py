"""One typed settings object for every process, read from FS_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parents[1]


# The detection threshold of models that do not calibrate their own (their scores are CenterNet peaks).
DEFAULT_DETECTOR_MIN_SCORE = 0.25


class Settings(BaseSettings):
    """All configuration; each field is overridable with an `FS_<NAME>` environment variable."""

    model_config = SettingsConfigDict(env_prefix="FS_", env_file=".env", extra="ignore")

    # Storage
    data_dir: Path = Path("data")
    collection: str = "products"
    sample_catalog: Path = PACKAGE_DIR / "sample_catalog" / "catalog.jsonl"

    # Vector index: "edge" = Qdrant Edge in-process; "qdrant" = qdrant-client (server URL or local path)
    index_backend: Literal["edge", "qdrant"] = "edge"
    qdrant_url: str = ""
    qdrant_api_key: str = ""
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    hnsw_ef_search: int = 128
    # Simple and tag modes add the vectors of the query's N nearest catalog photos to it, then search again
    # (average query expansion; 0: off). N = 1 had the best P@10 on the embedder's product holdout among depths
    # that keep a product's own photo first (`fashion-search eval-expansion`, docs/EVALUATION.md; N = 2 with the
    # earlier two-block weights); with the current recipe N = 3 leads it by 0.0004, too little to move it.
    query_expansion: int = Field(default=1, ge=0)
    # Simple and tag modes can re-rank by category vote (fashion_search/reranking.py): each result's score gains
    # weight × the share of the first `depth` results in its category (0: off). The search then fetches
    # category_vote_candidates results (at least top_k) so results of the voted category from further down can move up.
    # Off: on the embedder's product holdout the best setting on half the products gained +0.000 P@10 on the other
    # half (`fashion-search eval-vote`, docs/EVALUATION.md); the misses it could fix are whole neighbourhoods of
    # another class. For catalogs where that differs, eval-vote picks depth and weight.
    category_vote_depth: int = Field(default=0, ge=0)
    category_vote_weight: float = Field(default=0.0, ge=0.0)
    category_vote_candidates: int = Field(default=50, ge=1)
    # Most products one scroll page may list: bounds the work and the message size of one listing call.
    max_scroll_limit: int = 1000

    # Remote services: empty = run that model in-process (the embedded default)
    detector_url: str = ""
    segmenter_url: str = ""
    embedder_url: str = ""
    image_embedder_url: str = ""
    search_url: str = ""
    grpc_timeout_s: float = 15.0
    grpc_max_message_bytes: int = 64 * 1024 * 1024
    # How long a client trusts a remote model's name (it keys the search cache) before asking again: a service can
    # be redeployed with new weights under a running gateway.
    model_info_ttl_s: float = 30.0

    # Ports each server binds when started with `fashion-search serve NAME`
    bind_host: str = "127.0.0.1"
    gateway_port: int = 8000
    detector_port: int = 50051
    segmenter_port: int = 50052
    embedder_port: int = 50053
    search_port: int = 50054
    image_embedder_port: int = 50055
    grpc_workers: int = 4

    # Cache and queue
    redis_url: str = "redis://127.0.0.1:6379/0"
    cache_enabled: bool = True
    cache_ttl_s: int = 3600
    cache_timeout_s: float = 0.25
    broker_url: str = ""
    result_backend: str = "redis://127.0.0.1:6379/1"
    ingest_batch_size: int = 16
    task_max_retries: int = 5

    # Models
    torch_threads: int = 0
    # Where the models run: "auto" = the GPU when torch sees one (the model services' GPU node), else the CPU;
    # "cpu", "cuda" or "cuda:N" to pin it ("cuda" without a visible GPU fails at load, saying so)
    torch_device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    # On the CPU, run each model's fixed-size network as frozen TorchScript (torch.jit.optimize_for_inference:
    # batch norm folded into the convolutions, oneDNN kernels): about 0.83× the time per query on 2 cores, the same
    # outputs within float rounding (docs/BENCHMARKS.md). Off, or on a GPU: eager PyTorch.
    torch_script: bool = True
    embed_image_size: int = 224
    # "fashion-v2": 512-d embedding trained on classes and on street-to-shop pairs, + colour (542-d, seed 001);
    # "fashion-v1": trained on classes only; both on EfficientNet-Lite0. "fashion-v3": fashion-v2's recipe on the
    # larger EfficientNet-Lite2, not shipped (`train embedder --backbone efficientnet-lite2`; on the product holdout
    # level category precision, worse street-to-shop recall: docs/EVALUATION.md). "imagenet": Lite0's ImageNet
    # pooled 1280 + colour (the v0 baseline)
    # "fashion-v1-b8": fashion-v1's classes-only recipe with more of the network tuned (from block 8, the 14×14
    # stage): stronger on categories, weak on street-to-shop (see image_embedder_model).
    embedder_model: Literal["fashion-v3", "fashion-v2", "fashion-v1-b8", "fashion-v1", "imagenet"] = "fashion-v2"
    # Empty: the weights shipped for embedder_model (services/embedder/weights/fashion_embedder_<v>.pt)
    embedder_weights: Path | None = None
    # The model of the whole-image vectors that simple and tag mode search (category similarity, seed 001); fine
    # mode's garment vectors stay embedder_model's (street-to-shop). "same": embedder_model's for both, one model.
    # Another model costs one more embed per catalog photo at ingest and nothing per query. All choices make 542-d
    # vectors, as the index's image and garment vectors share their dimension. "fashion-v1-b8" (`train embedder
    # --stage classes --tail-start 8`) led fashion-v2 as the image vector by +0.006 and +0.047 P@10 on two product
    # holdout splits (mean +0.027, over the +0.010 a second model has to clear; docs/EVALUATION.md).
    image_embedder_model: Literal["same", "fashion-v3", "fashion-v2", "fashion-v1-b8", "fashion-v1"] = "fashion-v1-b8"
    # Empty: the weights shipped for image_embedder_model
    image_embedder_weights: Path | None = None
    # Weight of the 30-d colour feature against the unit deep features. 0.5 led 0.35 (the earlier default) on the
    # embedder's product holdout in two independent retrains (`fashion-search eval-embedding`, docs/EVALUATION.md).
    color_weight: float = 0.5
    # Mirror averaging (test-time flip): an image embedded with its mirror image, the two vectors averaged.
    # "catalog": catalog photos only, at ingest (a query costs what it does with "off", ingest embeds twice); on the
    # product holdout it traded category precision for instance recall (weight 0.5): P@10 0.911 → 0.905, street R@1
    # 0.819 → 0.826 (validation: P@10 0.903 → 0.899, R@1 0.809 → 0.805). "both": queries too; best on the holdout
    # (0.911 / 0.833) but fine p50 162.7 ms on 2 cores, past the 150 ms budget. Off by default: "catalog" is level
    # with "off" on the holdout (P@10 + R@1 1.7308 against 1.7302; three-block weights, expansion 1: 1.7600 against
    # 1.7571) at twice the ingest work. Changing it (or color_weight) means reindexing, as after any model change.
    mirror_averaging: Literal["off", "catalog", "both"] = "off"
    # Trained on generated scenes (several garments per photo): "centernet-v3" is v2 plus a second stage that
    # names and refines each box from features pooled over it; "centernet-v2" reads the fashion embedder's
    # last stage at 320 px, "centernet-v1" ImageNet features at 384 px; "v0": pose regions + one
    # background-colour box per product photo, named by the linear garment head (untrained baseline)
    detector_model: Literal["centernet-v3", "centernet-v2", "centernet-v1", "v0"] = "centernet-v3"
    # Empty: the detector's own threshold (centernet-v3 stores one chosen in training on held-out scenes; the others use
    # DEFAULT_DETECTOR_MIN_SCORE)
    detector_min_score: float | None = None
    # What fine mode matches a shopper's garment against, per catalog photo: "photo" = the whole product photo
    # (what the embedder's street-to-shop training pairs crops with; street-to-shop R@1 0.76 against 0.61, same
    # models); "detection" = the main detected garment cut out onto white (for catalogs of photos worn by models);
    # "blend" = the photo's vector mixed with its cut-out's (catalog_cutout_weight), normalized: the cut-out looks
    # like the segmented query garments do. On fresh train scenes (no model trained on them) blend led photo in
    # R@1 by +0.013 (weight chosen on half the scenes, gain confirmed on the other half; docs/EVALUATION.md). It
    # costs a segment and an embed more per catalog photo (ingest about half as fast) and nothing per query.
    catalog_garment: Literal["photo", "detection", "blend"] = "blend"
    catalog_cutout_weight: float = Field(default=0.15, ge=0.0, le=1.0)
    # Weight γ of the garment's colour (an HSV histogram over its mask, fashion_search/garment_colour.py) in fine
    # mode's garment vectors, catalog and query alike: score = cosine + γ · Bhattacharyya similarity. On fresh train
    # scenes 0.3 was best on half the scenes and gained R@1 +0.027 on the other half (docs/EVALUATION.md); 0 = off.
    # Changing it changes the garment vectors' length: reindex into a new index.
    garment_colour_weight: float = Field(default=0.3, ge=0.0, le=1.0)
    detector_max_side: int = 640
    # Most garments fine mode cuts, embeds and searches per query, best-scored first: each costs a segment, an
    # embed and a search. Scenes hold up to 4 garments, and the detector's spare boxes can outscore a real one, so
    # 4 slots lost garments that 5 keep (docs/EVALUATION.md, "Garments per query").
    max_garments: int = Field(default=5, ge=1, le=16)
    # "masknet-v1": light U-Net decoder on frozen EfficientNet-Lite0 features, trained on generated scenes;
    # "grabcut": the v0 GrabCut segmenter (no weights; the settings below)
    segmenter_model: Literal["masknet-v1", "grabcut"] = "masknet-v1"
    # Empty: the weights shipped with masknet-v1 (services/segmenter/weights/masknet_v1.pt)
    segmenter_weights: Path | None = None
    segment_max_side: int = 192
    segment_iterations: int = 3
    # GrabCut runs on a further downscaled copy: its cost grows with pixels (per box on 2 shared cores:
    # 192 px ≈ 90 ms, 128 px ≈ 50 ms, 112 px ≈ 35 ms); its mask is upsampled to the box (mean IoU 0.92
    # with the 192 px mask on validation photos); the colour prior stays at segment_max_side.
    segment_grabcut_max_side: int = 112

    # Input limits: uploads larger than these are refused with 413
    max_upload_bytes: int = 15 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_image_side: int = 12_000
    # Every model works on the upload downscaled to this longest side
    work_max_side: int = 800

    # API
    default_top_k: int = 12
    max_top_k: int = 100
    public_url: str = ""
    log_level: str = "INFO"

    # Evaluation / benchmark
    docs_dir: Path = Path("docs")
    bench_queries: int = Field(default=40, ge=1)

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
