"""The search pipeline: detect → segment → embed → search, over in-process models or remote services."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageOps

from fashion_search.core.domain import (
    GARMENT_VECTOR,
    IMAGE_VECTOR,
    Box,
    Detection,
    Detector,
    Embedder,
    Hit,
    IndexStats,
    Product,
    SearchFilter,
    SearchQuery,
    Segmenter,
    VectorIndex,
)
from fashion_search.core.garment_colour import colour_histogram, with_colour
from fashion_search.core.grpc_common import ServiceUnavailable
from fashion_search.core.images import garment_pixels
from fashion_search.core.settings import Settings
from fashion_search.core.unavailable import Overloaded
from fashion_search.core.vectors import l2_normalize, mirror_average
from fashion_search.pipeline.kinds import interleave, kind_shares, merge_garment_parts, rerank_by_kind, trusted_label
from fashion_search.pipeline.reranking import rerank_hits
from fashion_search.services.embedder.model import GarmentEmbedder

log = logging.getLogger(__name__)

MODES = ("simple", "fine", "tag")
SAME_GARMENT_IOU = 0.7
WHITE = (255, 255, 255)


@dataclass
class GarmentResult:
    """One detected garment and the products that match it."""

    detection: Detection
    hits: list[Hit]


@dataclass
class SearchOutcome:
    """What a search returns, with per-stage timings in milliseconds."""

    mode: str
    hits: list[Hit]
    garments: list[GarmentResult]
    image_size: tuple[int, int]
    timings_ms: dict[str, float] = field(default_factory=dict)
    degraded: str | None = None
    # Set where the photo shows garments of several kinds and the answer mixed them: fine mode answers each one.
    suggested_mode: str | None = None


@dataclass
class IndexedVectors:
    """Vectors and derived facts of one catalog image, ready to upsert."""

    vectors: dict[str, np.ndarray]
    detection: Detection | None


class _Timer:
    """Accumulates wall time per stage."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    def add(self, stage: str, start: float) -> None:
        self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - start) * 1000.0


def prepare(image: Image.Image, settings: Settings) -> Image.Image:
    """Downscale to the working size every model sees (boxes refer to this size)."""
    img = image if image.mode == "RGB" else image.convert("RGB")
    side = settings.work_max_side
    if max(img.size) > side:
        scale = side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
    return img


def cutout(image: Image.Image, box: Box, mask: np.ndarray) -> Image.Image:
    """The garment inside box with everything outside its mask painted white, like a catalog photo."""
    pixels, garment = garment_pixels(image, box, mask)
    crop = pixels.copy()
    if garment is not None:
        crop[~garment] = WHITE
    return Image.fromarray(crop)


class SearchPipeline:
    """The one implementation of search and of computing catalog vectors, used by every entry point."""

    def __init__(
        self, settings: Settings, detector: Detector, segmenter: Segmenter, embedder: Embedder, index: VectorIndex,
        image_embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings
        self.detector = detector
        self.segmenter = segmenter
        self.embedder = embedder  # fine mode's garment vectors
        # Simple and tag mode's image vectors (settings.image_embedder_model); None: the same model.
        self.image_embedder = image_embedder or embedder
        self.index = index

    @property
    def separate_image_embedder(self) -> bool:
        """Whether image vectors come from another model than garment vectors."""
        return self.image_embedder is not self.embedder

    def categories(self) -> list[str]:
        """Distinct categories in the catalog, for filters."""
        return sorted(self.index.stats().categories)

    def embedder_model(self) -> str:
        """The garment embedder's model name; "" while a remote embedder is unreachable (its health check says so)."""
        return _model_name(self.embedder)

    def image_embedder_model(self) -> str:
        """The image embedder's model name; "" while its remote service is unreachable."""
        return _model_name(self.image_embedder)

    def models_used(self, mode: str) -> str:
        """The models a query in this mode runs through (names with weights digests, the detection threshold and
        garment cap), for keying cached answers; a model whose service is down reads "" (that search answers for the
        outage)."""
        # Fine mode answers a photo without detected garments from the image vector as well.
        names = [self.image_embedder_model()]
        if mode == "fine" and self.separate_image_embedder:
            names.append(self.embedder_model())
        if mode in ("fine", "tag") or self.settings.mix_min_kinds:
            threshold = self.settings.detector_min_score
            detector = _model_name(self.detector)
            if detector:
                detector += ("" if threshold is None else f"@{threshold:g}") + f"<={self.settings.max_garments}"
            names.append(detector)
        if mode == "fine":
            names.append(_model_name(self.segmenter))
        return "|".join(names)

    def ranking(self, mode: str) -> str:
        """How a mode's results are ranked beyond the vectors (query expansion, category vote, kind evidence, box
        merging, kind mixing), for keying cached answers."""
        s = self.settings
        kinds = (f"kind{s.kind_vote_depth}:{s.tag_label_min_score:g}:{s.tag_label_min_share:g}:mix{s.mix_min_kinds}"
                 f":merge{s.garment_merge_containment:g}/{s.garment_pair_gap:g}/{','.join(s.garment_pair_kinds)}")
        if mode == "fine":
            low, high = s.kind_image_coverage
            return (f"{kinds}:{s.kind_candidates}x{s.kind_own_weight:g}/{s.kind_label_weight:g}@"
                    f"{s.kind_label_min_score:g}/{s.kind_image_weight:g}@{low:g}-{high:g}:keep{s.kind_keep_margin:g}")
        if not s.category_vote_on:
            return f"qe{s.query_expansion}:vote0:{kinds}"
        vote = f"{s.category_vote_depth}x{s.category_vote_weight:g}of{s.category_vote_candidates}"
        return f"qe{s.query_expansion}:vote{vote}:{kinds}"

    def stale_index(self, stats: IndexStats | None = None) -> str | None:
        """Why stored vectors do not match the query embedder (another model or colour weight), or None if all do."""
        stats = stats or self.index.stats()
        garment, image = self.embedder_model(), self.image_embedder_model()
        if not (garment and image):
            return None  # an embedder service that is down cannot say
        model = self._stored_name(garment, image)
        others = {name: n for name, n in stats.embedders.items() if name != model}
        if not others:
            return None
        which = ", ".join(f"{n} by {name or 'an unrecorded model'}" for name, n in sorted(others.items()))
        return (f"{sum(others.values())} of {stats.count} products were embedded by another model than the one "
                f"queries use ({model}): {which}; run `fashion-search reindex`")

    def vectors_model(self) -> str:
        """The name stored with each product's vectors: the garment embedder's, how fine mode's garment vector is
        made, and the image embedder's where it differs (raises ServiceUnavailable while a remote embedder is down)."""
        return self._stored_name(self.embedder.model_name, self.image_embedder.model_name)

    def _stored_name(self, garment: str, image: str) -> str:
        name = garment + garment_recipe(self.settings)
        return f"{name}|image:{image}" if self.separate_image_embedder else name

    # ---- shared steps -------------------------------------------------------------------------
    def garment_masks(
        self, image: Image.Image, detections: Sequence[Detection], timer: _Timer | None = None
    ) -> list[np.ndarray]:
        """Segment each detected garment: one bool mask per detection, the size of its clipped box."""
        if not detections:
            return []
        start = time.perf_counter()
        masks = self.segmenter.segment(image, [d.box.clip(image.width, image.height) for d in detections])
        if timer:
            timer.add("segment", start)
        return masks

    def garment_cutouts(
        self, image: Image.Image, detections: Sequence[Detection], timer: _Timer | None = None
    ) -> tuple[list[Image.Image], list[np.ndarray]]:
        """Segment each detected garment and cut it out onto white: the cut-outs, and the masks they were cut by."""
        masks = self.garment_masks(image, detections, timer)
        return [cutout(image, d.box, m) for d, m in zip(detections, masks, strict=True)], masks

    def with_garment_colour(
        self, vectors: np.ndarray, images: Sequence[Image.Image], boxes: Sequence[Box | None],
        masks: Sequence[np.ndarray | None],
    ) -> np.ndarray:
        """Garment vectors (one per image, box and mask) with the garment's masked colour histogram appended
        (settings.garment_colour_weight; unchanged at 0)."""
        weight = self.settings.garment_colour_weight
        if weight <= 0 or not len(vectors):
            return vectors
        hists = np.stack([
            colour_histogram(img, box, mask) for img, box, mask in zip(images, boxes, masks, strict=True)
        ])
        return with_colour(vectors, hists, weight)

    def detect(self, image: Image.Image, timer: _Timer | None = None) -> list[Detection]:
        """Distinct garments, best-first, at most settings.max_garments."""
        start = time.perf_counter()
        found = fine_mode_garments(self.detector, image, self.settings)
        if timer:
            timer.add("detect", start)
        return found

    # ---- catalog side -------------------------------------------------------------------------
    def detect_batch(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """detect() of each image; a detector with detect_batch runs them as one batch (a remote one, one by one)."""
        batched = getattr(self.detector, "detect_batch", None)
        threshold = self.settings.detector_min_score
        found = batched(images, threshold) if batched else [self.detector.detect(img, threshold) for img in images]
        return [distinct_garments(dets)[: self.settings.max_garments] for dets in found]

    def main_masks(self, images: Sequence[Image.Image], mains: Sequence[Detection | None]) -> list[np.ndarray | None]:
        """The mask of each image's main detection (None without one); one batch where the segmenter batches."""
        todo = [(img, [m.box.clip(img.width, img.height)]) for img, m in zip(images, mains, strict=True) if m]
        batched = getattr(self.segmenter, "segment_batch", None)
        found = batched(todo) if batched else [self.segmenter.segment(img, boxes) for img, boxes in todo]
        masks = iter(found)
        return [next(masks)[0] if m else None for m in mains]

    def catalog_vectors(self, images: Sequence[Image.Image], with_garment: bool = True) -> list[IndexedVectors]:
        """Vectors for catalog photos: the whole image, and the garment fine mode matches (settings.catalog_garment).

        The main detection still fills an unknown category and the product's garment box.
        """
        prepared = [prepare(img, self.settings) for img in images]
        if not with_garment:
            vecs = self.embed_catalog(prepared, self.image_embedder)
            return [IndexedVectors({IMAGE_VECTOR: v}, None) for v in vecs]
        mains = [dets[0] if dets else None for dets in self.detect_batch(prepared)]
        n = len(prepared)
        masks: list[np.ndarray | None] = [None] * n
        if self.settings.catalog_garment != "photo" or self.settings.garment_colour_weight > 0:
            masks = self.main_masks(prepared, mains)
        # A product photo shows its product, and street crops were trained to match such photos; the main
        # detection's cut-out alone matched them worse (docs/EVALUATION.md, street-to-shop).
        cut = [] if self.settings.catalog_garment == "photo" else [
            cutout(img, m.box, mask) if m and mask is not None else img
            for img, m, mask in zip(prepared, mains, masks, strict=True)
        ]
        photo, vecs = self.embed_photos(prepared)
        garment = self.embed_catalog(cut) if cut else photo
        if self.settings.catalog_garment == "blend":
            weight = self.settings.catalog_cutout_weight
            garment = l2_normalize((1.0 - weight) * photo + weight * garment)
        # A photo without a detection: the colour of the whole photo.
        garment = self.with_garment_colour(garment, prepared, [m.box if m else None for m in mains], masks)
        return [
            IndexedVectors({IMAGE_VECTOR: vecs[i], GARMENT_VECTOR: garment[i]}, mains[i]) for i in range(n)
        ]

    def embed_photos(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Catalog photos' garment-embedder and image-embedder vectors; two in-process embedders compute the
        ImageNet blocks they share once per photo (the same vectors as apart)."""
        if not self.separate_image_embedder:
            photo = self.embed_catalog(images)
            return photo, photo
        garment, image = self.embedder, self.image_embedder
        if isinstance(garment, GarmentEmbedder) and isinstance(image, GarmentEmbedder) and (
                blocks := garment.shared_blocks(image)):
            mirrored = self.settings.mirror_averaging == "catalog"
            batch = [*images, *(ImageOps.mirror(img) for img in images)] if mirrored else list(images)
            trunk = garment.trunk(batch, blocks)
            both = garment.embed_trunk(trunk), image.embed_trunk(trunk)
            return (mirror_average(both[0]), mirror_average(both[1])) if mirrored else both
        return self.embed_catalog(images), self.embed_catalog(images, image)

    def embed_catalog(self, images: Sequence[Image.Image], embedder: Embedder | None = None) -> np.ndarray:
        """Catalog vectors of the garment embedder (or the one given): with mirror_averaging "catalog", each image's
        averaged with its mirror image's."""
        embedder = embedder or self.embedder
        if self.settings.mirror_averaging != "catalog":
            return embedder.embed(images)
        # Any embedder (in-process or remote) serves: the mirrors travel as ordinary images.
        return mirror_average(embedder.embed([*images, *(ImageOps.mirror(img) for img in images)]))

    # ---- query side ---------------------------------------------------------------------------
    def search(
        self, image: Image.Image, mode: str = "simple", top_k: int = 12, category: str | None = None, *,
        filters: SearchFilter | None = None, offset: int = 0, text: str | None = None, diversity: float | None = None,
    ) -> SearchOutcome:
        """Run one query in the given mode, one page (offset, top_k) within filters, fused with text's words and
        diversified by MMR as asked; a down detector/segmenter degrades fine/tag mode to simple."""
        check_mode(mode)
        x = SearchExtras(text, diversity)
        s = self.settings
        timer = _Timer()
        total = time.perf_counter()
        img = prepare(image, s)
        f = with_category(filters, category)
        garments: list[GarmentResult] = []
        degraded: str | None = None
        detections: list[Detection] = []
        if mode in ("fine", "tag") or s.mix_min_kinds:
            try:
                detections = self.detect(img, timer)
            except Overloaded:
                raise  # back-pressure: a full queue answers 503 at once rather than shifting the load elsewhere
            except ServiceUnavailable as exc:
                if mode != "simple":
                    degraded = f"{exc}; answered in simple mode"
                log.warning("degraded search: %s", exc)
        image_hits: list[Hit] = []
        image_down: ServiceUnavailable | None = None
        try:
            start = time.perf_counter()
            vec = self.image_embedder.embed([img])[0]
            timer.add("embed", start)
            start = time.perf_counter()
            # More candidates than shown: the image model's neighbours are the evidence for the photo's kind.
            image_hits = self._image_search(vec, max(top_k, s.kind_vote_depth), f, extra=x)
            timer.add("search", start)
        except ServiceUnavailable as exc:
            if mode != "fine" or not detections:
                raise
            # Fine mode can answer without the image model: its garments lose that evidence only.
            log.warning("fine mode without the image model's kind evidence: %s", exc)
            image_down = exc
        shares = kind_shares(image_hits, s.kind_vote_depth)
        hits: list[Hit] = []
        suggested: str | None = None
        if mode == "fine" and detections:
            try:
                garments = self._fine(img, detections, top_k, f, offset, shares, timer, x)
                hits = _merge([g.hits for g in garments], top_k)
            except Overloaded:
                raise
            except ServiceUnavailable as exc:
                degraded = f"{exc}; answered in simple mode"
                log.warning("degraded search: %s", exc)
                garments = []
        elif mode != "fine" and not (f and f.categories):
            kinds = _distinct([trusted_label(d, s) for d in detections])
            start = time.perf_counter()
            if s.mix_min_kinds and len(kinds) >= s.mix_min_kinds:
                # Several kinds in one photo: each kind's nearest in turn, not the one kind the whole photo is
                # nearest to; fine mode answers each garment on its own.
                lists = [self._image_search(vec, offset + top_k, _only(f, k), extra=x) for k in kinds]
                hits = interleave(lists, offset + top_k)[offset:]
                suggested = "fine"
            elif mode == "tag":
                kind = _tag_kind(kinds, shares, s)
                hits = self._image_search(vec, top_k, _only(f, kind), offset, extra=x) if kind else []
            timer.add("search", start)
        if mode == "tag" or suggested:  # simple mode shows the garments only where they changed its answer
            garments = [GarmentResult(d, []) for d in detections]
        if not hits:
            if image_down is not None:
                raise image_down
            hits = image_hits[:top_k] if offset == 0 else self._image_search(vec, top_k, f, offset, extra=x)
        timer.add("total", total)
        return SearchOutcome(mode, hits, garments, img.size, timer.ms, degraded, suggested)

    def search_like(
        self, product_id: str, mode: str = "simple", top_k: int = 12, *,
        filters: SearchFilter | None = None, offset: int = 0, text: str | None = None, diversity: float | None = None,
    ) -> SearchOutcome:
        """"More like this": search with a catalog product's stored vectors in place of a photo (nothing is
        embedded), leaving the product itself out; UnknownProduct if the id is not in the index."""
        check_mode(mode)
        x = SearchExtras(text, diversity)
        timer = _Timer()
        total = time.perf_counter()
        product = self.index.get(product_id)
        vectors = self.index.vectors(product_id) if product is not None else None
        if product is None or not vectors:
            raise UnknownProduct(product_id)
        f = replace(filters or SearchFilter(), exclude=(*(filters.exclude if filters else ()), product_id))
        garments: list[GarmentResult] = []
        start = time.perf_counter()
        if mode == "fine" and GARMENT_VECTOR in vectors:
            # The product's garment stands for the garment fine mode would detect in its photo.
            box = product.box or Box(0.0, 0.0, 0.0, 0.0)
            found = self.index.search(
                vectors[GARMENT_VECTOR], top_k, GARMENT_VECTOR, filters=f, offset=offset, text=x.text,
                diversity=x.diversity,
            )
            garments = [GarmentResult(Detection(box, product.category, 1.0), found)]
            hits = found
        else:
            if mode == "tag" and product.category:
                f = _tag_filter(f, [product.category])
            hits = self._image_search(vectors[IMAGE_VECTOR], top_k, f, offset, extra=x)
        timer.add("search", start)
        timer.add("total", total)
        return SearchOutcome(mode, hits, garments, (0, 0), timer.ms)

    def _image_search(
        self, vec: np.ndarray, top_k: int, f: SearchFilter | None, offset: int = 0, *,
        extra: SearchExtras | None = None,
    ) -> list[Hit]:
        """Simple and tag modes' search: query expansion in the index, then the category-vote re-ranking."""
        s = self.settings
        x = extra or SearchExtras()
        n = min(max(top_k, s.category_vote_candidates), s.max_top_k)
        # The vote re-ranks the first n candidates; pages past them keep the vector order.
        if not s.category_vote_on or offset + top_k > n:
            return self.index.search(
                vec, top_k, IMAGE_VECTOR, None, s.query_expansion, filters=f, offset=offset, text=x.text,
                diversity=x.diversity,
            )
        # More candidates than shown, so that results of the voted category from further down can move up.
        hits = self.index.search(
            vec, n, IMAGE_VECTOR, None, s.query_expansion, filters=f, text=x.text, diversity=x.diversity,
        )
        return rerank_hits(hits, s.category_vote_depth, s.category_vote_weight)[offset:offset + top_k]

    def _fine(
        self, img: Image.Image, detections: list[Detection], top_k: int, f: SearchFilter | None, offset: int,
        image_shares: dict[str, float], timer: _Timer, extra: SearchExtras | None = None,
    ) -> list[GarmentResult]:
        cuts, masks = self.garment_cutouts(img, detections, timer)
        start = time.perf_counter()
        vecs = self.embedder.embed(cuts)
        vecs = self.with_garment_colour(vecs, [img] * len(detections), [d.box for d in detections], masks)
        timer.add("embed", start)
        start = time.perf_counter()
        # Kind evidence re-ranks more candidates than a page shows; one call searches every garment.
        n = max(offset + top_k, self.settings.kind_candidates)
        x = extra or SearchExtras()
        found = self.index.search_batch([
            SearchQuery(v, n, GARMENT_VECTOR, filters=f, text=x.text, diversity=x.diversity) for v in vecs
        ])
        results = [
            GarmentResult(d, rerank_by_kind(hits, d, image_shares, img.size, self.settings)[offset:offset + top_k])
            for d, hits in zip(detections, found, strict=True)
        ]
        timer.add("search", start)
        return results


@dataclass(frozen=True)
class SearchExtras:
    """What a query adds to its photo: words fused with the photo's match, and MMR diversity."""

    text: str | None = None
    diversity: float | None = None


class UnknownProduct(LookupError):
    """A "more like this" search names a product the index does not hold."""


def check_mode(mode: str) -> str:
    """The search mode, or ValueError."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    return mode


def with_category(filters: SearchFilter | None, category: str | None) -> SearchFilter | None:
    """The filter with one more category allowed (the single-category form of older callers)."""
    if not category:
        return filters
    f = filters or SearchFilter()
    return replace(f, categories=tuple(dict.fromkeys((*f.categories, category))))


def _tag_filter(f: SearchFilter | None, detected: list[str]) -> SearchFilter | None:
    """Tag mode: the categories detected in the photo, unless the caller chose categories."""
    if not detected or (f is not None and f.categories):
        return f
    return replace(f or SearchFilter(), categories=tuple(detected))


def _only(f: SearchFilter | None, kind: str) -> SearchFilter:
    """The filter restricted to one kind (category)."""
    return replace(f or SearchFilter(), categories=(kind,))


def _distinct(labels: Sequence[str | None]) -> list[str]:
    """The labels in order, each once, without the untrusted (None) ones."""
    return list(dict.fromkeys(label for label in labels if label))


def _tag_kind(kinds: list[str], image_shares: dict[str, float], settings: Settings) -> str | None:
    """The kind tag mode filters on: the trusted label where the image model's neighbours back it
    (settings.tag_label_min_share), else the kind those neighbours lead with; None: no evidence at all."""
    if kinds and image_shares.get(kinds[0], 0.0) >= settings.tag_label_min_share:
        return kinds[0]
    return max(sorted(image_shares), key=lambda k: image_shares[k]) if image_shares else None


def _model_name(model: Detector | Segmenter | Embedder) -> str:
    """The model's name; "" while its remote service is unreachable."""
    try:
        return model.model_name
    except ServiceUnavailable:
        return ""


def garment_recipe(settings: Settings) -> str:
    """How fine mode's catalog garment vectors are made (settings.catalog_garment), as a suffix of the embedder
    name stored with each product, so that vectors made another way read as stale."""
    colour = f"+hsv{settings.garment_colour_weight:g}" if settings.garment_colour_weight > 0 else ""
    if settings.catalog_garment == "photo":
        return colour
    if settings.catalog_garment == "detection":
        return "+garment-cutout" + colour
    return f"+garment-blend{settings.catalog_cutout_weight:g}" + colour


def fine_mode_garments(detector: Detector, image: Image.Image, settings: Settings) -> list[Detection]:
    """The garments fine mode searches in an image: distinct, the boxes of one garment merged, best-first, at most
    settings.max_garments."""
    return select_garments(detector.detect(image, settings.detector_min_score), settings)


def select_garments(detections: Sequence[Detection], settings: Settings, merge: bool = True) -> list[Detection]:
    """fine_mode_garments of the detector's answer (merge=False: without joining the boxes of one garment)."""
    found = distinct_garments(detections)
    return (merge_garment_parts(found, settings) if merge else found)[: settings.max_garments]


def distinct_garments(detections: Sequence[Detection]) -> list[Detection]:
    """Best-first detections, dropping any that overlaps a better one by SAME_GARMENT_IOU or more.

    Detectors score each class on its own (as mAP expects), so one garment can come back twice, as a shirt and as a
    long-sleeve top with nearly the same box; fine mode should cut, embed and search it once, as the likelier class.
    """
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: -d.score):
        if all(det.box.iou(k.box) < SAME_GARMENT_IOU for k in kept):
            kept.append(det)
    return kept


def _merge(groups: Sequence[Sequence[Hit]], top_k: int) -> list[Hit]:
    """Best score per product across garments, best-first."""
    best: dict[str, Hit] = {}
    for group in groups:
        for hit in group:
            if hit.product.product_id not in best or hit.score > best[hit.product.product_id].score:
                best[hit.product.product_id] = hit
    return sorted(best.values(), key=lambda h: -h.score)[:top_k]


def product_with(product: Product, indexed: IndexedVectors) -> Product:
    """Fill category (if unknown) and garment box from the main detection."""
    det = indexed.detection
    if det is not None:
        if not product.category:
            product.category = det.category
        product.box = det.box
    return product
