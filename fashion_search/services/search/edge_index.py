"""VectorIndex on Qdrant Edge: an in-process shard on local disk with named vectors, filters and HNSW.

Payloads, point ids and argument checks are the ones every backend shares (services/search/points.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import fasteners
import numpy as np
import qdrant_edge as qe

from fashion_search.core.domain import (
    IMAGE_VECTOR,
    VECTOR_NAMES,
    Hit,
    IndexLayoutError,
    IndexStats,
    Product,
    SearchFilter,
    SearchQuery,
)
from fashion_search.core.settings import Settings
from fashion_search.services.search.points import (
    BRAND_FIELD,
    CATEGORY_FIELD,
    EMBEDDER_FIELD,
    IMAGES_FIELD,
    IN_STOCK_FIELD,
    PAYLOAD_INDEXES,
    PHOTO_FIELD,
    PRICE_FIELD,
    PRODUCT_ID_FIELD,
    REVISION_FIELD,
    RRF_K,
    TAGS_FIELD,
    TEXT_FIELD,
    PreparedPoint,
    check_diversity,
    check_expand,
    check_filter,
    check_offset,
    check_product_id,
    check_product_ids,
    check_scroll_limit,
    check_scroll_offset,
    check_stored_layout,
    check_text,
    check_top_k,
    check_vector,
    check_vector_name,
    embedder_counts,
    expand_query,
    grouped_search,
    indexes_on_disk,
    photo_point_ids,
    point_id,
    prepare_points,
    product_from_payload,
    read_revisions,
    rrf_weights,
    search_each,
    skipped_products,
    stale_photo_ids,
    stored_sizes,
    update_payload,
    vector_sizes,
    with_text,
)

log = logging.getLogger(__name__)

BACKEND = "qdrant-edge"
# Qdrant's own defaults, in KB of vector data per vector name and segment: segments above the indexing
# threshold get an HNSW graph; searches over fewer vectors than the full-scan threshold stay exact.
DEFAULT_INDEXING_THRESHOLD_KB = 10_000
DEFAULT_FULL_SCAN_THRESHOLD_KB = 10_000
_BYTES_PER_KB = 1024
_FLOAT32_BYTES = np.dtype(np.float32).itemsize
META_SUFFIX = ".meta.json"



def meta_path(path: Path) -> Path:
    """The sidecar beside a shard directory: version, dim, vector names and each vector's size."""
    return path.with_name(path.name + META_SUFFIX)


def read_meta(path: Path) -> dict[str, Any] | None:
    """The sidecar of the shard at path, or None if there is none."""
    try:
        return json.loads(meta_path(path).read_text())
    except FileNotFoundError:
        return None


def edge_filter(f: SearchFilter | None) -> qe.Filter | None:
    """A checked SearchFilter as an Edge filter (None: no filter)."""
    if f is None:
        return None
    must: list[Any] = []
    if f.categories:
        must.append(qe.FieldCondition(CATEGORY_FIELD, match=qe.MatchAny(list(f.categories))))
    if f.brands:
        must.append(qe.FieldCondition(BRAND_FIELD, match=qe.MatchAny(list(f.brands))))
    if f.min_price is not None or f.max_price is not None:
        must.append(qe.FieldCondition(PRICE_FIELD, range=qe.RangeFloat(gte=f.min_price, lte=f.max_price)))
    if f.in_stock is not None:
        must.append(qe.FieldCondition(IN_STOCK_FIELD, match=qe.MatchValue(int(f.in_stock))))
    # A product must carry every tag asked for: one condition per tag.
    must.extend(qe.FieldCondition(TAGS_FIELD, match=qe.MatchValue(t)) for t in f.tags)
    must_not = [qe.FieldCondition(PRODUCT_ID_FIELD, match=qe.MatchAny(list(f.exclude)))] if f.exclude else None
    return qe.Filter(must=must or None, must_not=must_not)


def edge_quantization(settings: Settings) -> qe.ScalarQuantizationConfig | qe.BinaryQuantizationConfig | None:
    """int8 scalar or 1-bit binary quantization kept in RAM (settings.index_quantization), or None for float32."""
    if settings.index_quantization == "none":
        return None
    if settings.index_quantization == "binary":
        # Queries stay 8-bit against the 1-bit copies (asymmetric): more recall for the same memory.
        return qe.BinaryQuantizationConfig(
            encoding=qe.BinaryQuantizationEncoding.OneBit,
            query_encoding=qe.BinaryQuantizationQueryEncoding.Scalar8Bits, memory=qe.Memory.Pinned,
        )
    # The 0.99 quantile clips rare extreme components instead of spending the int8 range on them.
    return qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned)


def edge_search_params(settings: Settings, limit: int) -> qe.SearchParams:
    """HNSW ef (at least the results asked for) and, with quantization, rescoring of oversampled candidates."""
    quantization = None if settings.index_quantization == "none" else qe.QuantizationSearchParams(
        rescore=True, oversampling=settings.quantization_oversampling,
    )
    # ef below the result count would cut the candidate list short of the page.
    return qe.SearchParams(hnsw_ef=max(settings.hnsw_ef_search, limit), quantization=quantization)


def _index_params(kind: str, memory: qe.Memory | None) -> Any:
    """Edge's payload index parameters for a PAYLOAD_INDEXES kind (memory None: held in RAM)."""
    if kind == "keyword":
        return qe.KeywordIndexParams(memory=memory)
    if kind == "keyword-unique":  # unique values need no HNSW sub-graphs
        return qe.KeywordIndexParams(enable_hnsw=False, memory=memory)
    if kind == "float":
        return qe.FloatIndexParams(memory=memory)
    if kind == "integer":
        return qe.IntegerIndexParams(lookup=True, range=True, memory=memory)
    # Lower-cased words scored by BM25 (TextQuery); unique-ish texts need no HNSW sub-graphs.
    return qe.TextIndexParams(
        tokenizer=qe.TokenizerType.Word, lowercase=True, scoring=True, enable_hnsw=False, memory=memory,
    )


# A product's main photo: its one point in listings, counts and lookups (points stored before photos had no field).
MAIN_PHOTOS = qe.Filter(
    should=[qe.FieldCondition(PHOTO_FIELD, match=qe.MatchValue(0)), qe.IsEmptyCondition(PHOTO_FIELD)],
)


def _photo_count(payload: Mapping[str, Any] | None) -> int:
    """How many photo points a product's main point says it has (at least the main one)."""
    return max(1, len((payload or {}).get(IMAGES_FIELD) or []))


def restore_snapshot(path: Path, snapshot: Path) -> int:
    """Replace the (closed) Edge index at path by a snapshot; returns the restored index's version, which is above
    both the snapshot's and the replaced index's, so no answer cached from either is served again."""
    from fashion_search.services.search import snapshots

    meta = snapshots.read_meta(snapshot)
    if meta.get("backend") != BACKEND:
        raise ValueError(f"{snapshot.name} is a snapshot of a {meta.get('backend')} index, not of {BACKEND}")
    current = read_meta(path)
    version = max(int(meta.get("version", 0)), int(current["version"]) if current else 0) + 1
    work = Path(tempfile.mkdtemp(prefix=".restore-", dir=path.parent))
    try:
        snapshots.unpack(snapshot, work)
        restored = work / path.name
        if not restored.is_dir():
            raise ValueError(f"{snapshot.name} holds no shard named {path.name!r}")
        sidecar = json.loads((work / meta_path(path).name).read_text())
        snapshots.replace_tree(restored, path)
        sidecar["version"] = version
        tmp = meta_path(path).with_suffix(".restore.tmp")
        tmp.write_text(json.dumps(sidecar))
        os.replace(tmp, meta_path(path))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return version


def stored_dim(path: Path) -> int | None:
    """The vector dim of an existing Edge index at path (from its sidecar), without opening the shard."""
    meta = read_meta(path)
    return int(meta["dim"]) if meta else None


def _remove_shard(path: Path) -> None:
    """Delete a shard directory and its sidecar."""
    shutil.rmtree(path, ignore_errors=True)
    meta_path(path).unlink(missing_ok=True)


def _recover_swap(path: Path) -> None:
    """Put back the shard a process moved aside to swap in a rebuild and crashed before the new one was in place."""
    aside = path.with_name(path.name + ".replaced")
    if aside.is_dir() and not path.exists():
        os.replace(aside, path)
        log.warning("restored the Edge index at %s moved aside by an unfinished swap", path)


class EdgeIndex:
    """VectorIndex on a Qdrant Edge shard at `path` (default settings.index_path).

    HNSW building: upsert() runs optimize() itself once the vectors written since the last optimisation
    exceed the indexing threshold, so bulk loads get indexed without help; searches are exact over the
    not-yet-indexed rest, so results are correct right after every upsert. An ingest may call optimize()
    at the end, but it only indexes what is past the threshold (smaller segments are scanned exactly).
    """

    def __init__(
        self,
        settings: Settings,
        dim: int,
        path: Path | None = None,
        *,
        garment_dim: int | None = None,
        indexing_threshold_kb: int = DEFAULT_INDEXING_THRESHOLD_KB,
        full_scan_threshold_kb: int = DEFAULT_FULL_SCAN_THRESHOLD_KB,
    ) -> None:
        self.sizes = vector_sizes(dim, garment_dim)
        self.settings = settings
        self.dim = dim
        self.path = Path(path) if path is not None else settings.index_path
        self._indexing_threshold_kb = indexing_threshold_kb
        self._full_scan_threshold_kb = full_scan_threshold_kb
        # Searches, lookups and snapshots share the shard (so a snapshot does not stall searches); writes and the
        # shard's swap or close run alone.
        self._lock = fasteners.ReaderWriterLock()
        # Rebuilds under way: their name and the new shard each fills beside this one.
        self._rebuilds: dict[str, EdgeIndex] = {}
        _recover_swap(self.path)
        meta = read_meta(self.path)
        self._shard: qe.EdgeShard | None = None
        self._load(meta)

    def _load(self, meta: dict[str, Any] | None) -> None:
        """Open (or create) the shard at self.path for self.sizes and write its sidecar."""
        indexes_on_disk(self.settings)  # a misnamed field is refused before anything is created
        exists = (self.path / "edge_config.json").exists()
        if exists and meta is not None:
            check_stored_layout(stored_sizes(meta), self.sizes, str(self.path))
        quantization = edge_quantization(self.settings)
        config = qe.EdgeConfig(
            vectors={
                # With quantized copies in RAM, the float32 originals stay on disk (read only to rescore).
                name: qe.EdgeVectorParams(
                    size=size, distance=qe.Distance.Cosine,
                    memory=qe.Memory.Cold if quantization is not None else None,
                )
                for name, size in self.sizes.items()
            },
            quantization_config=quantization,
            hnsw_config=qe.HnswIndexConfig(
                m=self.settings.hnsw_m, ef_construct=self.settings.hnsw_ef_construct,
                full_scan_threshold=self._full_scan_threshold_kb,
            ),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=self._indexing_threshold_kb),
        )
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            if exists:
                self._shard = qe.EdgeShard.load(str(self.path), config)
            else:
                self._shard = qe.EdgeShard.create(str(self.path), config)
        except Exception as exc:
            # Edge raises plain Exceptions; an incompatible layout is bad input, anything else (the shard
            # is open in another process, disk errors) is an environment problem.
            if "incompatible" in str(exc).lower():
                raise IndexLayoutError(f"index at {self.path} does not match dims {self.sizes}: {exc}") from exc
            raise RuntimeError(f"cannot open Qdrant Edge shard at {self.path}: {exc}") from exc
        try:
            self._create_payload_indexes()
            # The version only ever grows, even when the shard directory was deleted and recreated, so a
            # cache keyed by version can never serve results of an older collection.
            self._version = int(meta["version"]) if meta else 0
            self._write_meta()
            self._unindexed = self._estimate_unindexed()
        except BaseException:
            self.close()
            raise

    # ---- VectorIndex -----------------------------------------------------------------------------
    def upsert(self, items: Sequence[tuple[Product, Mapping[str, np.ndarray]]]) -> int:
        """Insert or replace product photos (keyed by product id and photo); returns how many products were written.

        A product written with fewer photos than it had loses the others.
        """
        max_photos = self.settings.max_photos_per_product
        prepared = prepare_points(items, self.sizes, max_photos)
        if not prepared:
            return 0
        stale = stale_photo_ids(prepared, max_photos)
        with self._lock.write_lock():
            shard = self._open()
            shard.update(qe.UpdateOperation.upsert_points(self._points(prepared)))
            if stale and (gone := [r.id for r in shard.retrieve(stale, with_payload=False, with_vector=False)]):
                shard.update(qe.UpdateOperation.delete_points(gone))
            self._written(len(prepared))
        return len({payload[PRODUCT_ID_FIELD] for _, _, payload in prepared})

    def replace_unchanged(self, items: Sequence[tuple[Product, Mapping[str, np.ndarray]]]) -> list[str]:
        """Replace stored products only where their revision is still the one read; returns the ids left alone."""
        prepared = prepare_points(items, self.sizes, self.settings.max_photos_per_product)
        if not prepared:
            return []
        revisions, legacy = read_revisions(items)
        current: list[qe.FieldCondition | qe.IsEmptyCondition] = (
            [qe.FieldCondition(REVISION_FIELD, match=qe.MatchAny(revisions))] if revisions else []
        )
        if legacy:  # stored before revisions existed, and not written since (every write stamps one)
            current.append(qe.IsEmptyCondition(REVISION_FIELD))
        with self._lock.write_lock():
            shard = self._open()
            shard.update(qe.UpdateOperation.upsert_points(
                self._points(prepared), condition=qe.Filter(should=current), update_mode=qe.UpdateMode.UpdateOnly,
            ))
            stored = {str(r.id): r.payload for r in shard.retrieve([pid for pid, _, _ in prepared], True, False)}
            skipped = skipped_products(prepared, stored)
            if len(skipped) < len(prepared):
                self._written(len(prepared) - len(skipped))
        return skipped

    def search_batch(self, queries: Sequence[SearchQuery]) -> list[list[Hit]]:
        """Each query's hits, in order (in-process, a batch costs what its searches cost one by one)."""
        return search_each(self.search, queries)

    def search(
        self, vector: np.ndarray, top_k: int, vector_name: str = IMAGE_VECTOR,
        categories: Sequence[str] | None = None, expand: int = 0, *,
        filters: SearchFilter | None = None, offset: int = 0, text: str | None = None, diversity: float | None = None,
    ) -> list[Hit]:
        """The top_k products nearest to vector (cosine) after the first `offset`, within filters and categories.

        expand > 0: first add the vectors of the query's `expand` nearest products to it (`expand_query`); text:
        fuse the photo's match with a BM25 match of the words (reciprocal-rank fusion; scores are then fused
        ranks); diversity: pick the photo's match by MMR among settings.mmr_candidates nearest.
        """
        name = check_vector_name(vector_name)
        k = check_top_k(top_k, self.settings)
        skip = check_offset(offset, self.settings)
        n_expand = check_expand(expand, self.settings)
        query = check_vector(vector, self.sizes[name], "query vector")
        search_filter = edge_filter(check_filter(filters, categories))
        words = check_text(text, self.settings)
        mmr = check_diversity(diversity)
        s = self.settings

        def image_query(q: list[float], limit: int) -> Any:
            if mmr is None:
                return qe.Query.Nearest(q, using=name)
            return qe.Mmr(q, 1.0 - mmr, max(s.mmr_candidates, limit), using=name)

        def request(q: list[float], limit: int, neighbours: bool) -> qe.QueryRequest:
            params = edge_search_params(s, limit)
            if words is None or neighbours:
                return qe.QueryRequest(
                    limit=limit, query=qe.Query.Nearest(q, using=name) if neighbours else image_query(q, limit),
                    filter=search_filter, with_payload=not neighbours, with_vector=neighbours, params=params,
                )
            depth = max(s.fusion_candidates, limit)
            return qe.QueryRequest(
                limit=limit, query=qe.Fusion.Rrf(k=RRF_K, weights=rrf_weights(s)), filter=search_filter,
                with_payload=True,
                prefetches=[
                    qe.Prefetch(limit=depth, query=image_query(q, depth), filter=search_filter,
                                params=edge_search_params(s, depth)),
                    qe.Prefetch(limit=depth, query=qe.TextQuery(TEXT_FIELD, words), filter=search_filter),
                ],
            )

        with self._lock.read_lock():
            shard = self._open()
            if n_expand:
                near = [p.vector[name] for p in shard.query(request(query, n_expand, neighbours=True))]
                if near:
                    query = expand_query(np.array(query), np.array(near)).tolist()

            def fetch(limit: int) -> list[Hit]:
                points = shard.query(request(query, limit, neighbours=False))
                return [Hit(product_from_payload(p.payload), float(p.score)) for p in points]

            return grouped_search(fetch, skip, k, s.max_photos_per_product)

    def get(self, product_id: str) -> Product | None:
        """The stored product, or None if the id is unknown."""
        pid = point_id(check_product_id(product_id))
        with self._lock.read_lock():
            records = self._open().retrieve([pid], with_payload=True, with_vector=False)
        return product_from_payload(records[0].payload) if records else None

    def vectors(self, product_id: str) -> dict[str, np.ndarray] | None:
        """The stored named vectors of a product, or None if the id is unknown."""
        pid = point_id(check_product_id(product_id))
        with self._lock.read_lock():
            records = self._open().retrieve([pid], with_payload=False, with_vector=True)
        if not records:
            return None
        return {name: np.asarray(v, dtype=np.float32) for name, v in (records[0].vector or {}).items()}

    def update_fields(self, product_id: str, fields: Mapping[str, object]) -> Product | None:
        """Change catalog fields of a stored product (payload only, vectors untouched); None if the id is unknown."""
        pid = point_id(check_product_id(product_id))
        payload = update_payload(fields)
        with self._lock.write_lock():
            shard = self._open()
            found = shard.retrieve([pid], with_payload=True, with_vector=False)
            if not found:
                return None
            photos = photo_point_ids(product_id, range(_photo_count(found[0].payload)))
            shard.update(qe.UpdateOperation.set_payload(photos, with_text(found[0].payload, payload)))
            self._bump_version()
            records = shard.retrieve([pid], with_payload=True, with_vector=False)
        return product_from_payload(records[0].payload) if records else None

    def scroll(self, offset: str | None, limit: int) -> tuple[list[Product], str | None]:
        """Up to limit products in point-id order from offset (None: the start), and the next offset or None."""
        request = qe.ScrollRequest(
            offset=check_scroll_offset(offset), limit=check_scroll_limit(limit, self.settings),
            filter=MAIN_PHOTOS, with_payload=True, with_vector=False,
        )
        with self._lock.read_lock():
            records, next_offset = self._open().scroll(request)
        return [product_from_payload(r.payload) for r in records], None if next_offset is None else str(next_offset)

    def delete(self, product_ids: Sequence[str]) -> int:
        """Delete products by id; returns how many existed."""
        ids = check_product_ids(product_ids)
        if not ids:
            return 0
        with self._lock.write_lock():
            shard = self._open()
            existing = shard.retrieve([point_id(p) for p in ids], with_payload=True, with_vector=False)
            if existing:
                # Every photo's point: the ids of a product's photos follow from its id and its photo count.
                photos = [
                    i for r in existing
                    for i in photo_point_ids(str(r.payload[PRODUCT_ID_FIELD]), range(_photo_count(r.payload)))
                ]
                shard.update(qe.UpdateOperation.delete_points(photos))
                self._bump_version()
        return len(existing)

    def stats(self) -> IndexStats:
        """Point count, version, dim, backend, vector names, the distinct categories and products per embedder."""
        with self._lock.read_lock():
            shard = self._open()
            count = shard.count(qe.CountRequest(exact=True, filter=MAIN_PHOTOS))
            # There cannot be more distinct values than products, so this limit never truncates.
            facets = shard.facet(
                qe.FacetRequest(key=CATEGORY_FIELD, limit=max(count, 1), exact=True, filter=MAIN_PHOTOS),
            )
            models = shard.facet(
                qe.FacetRequest(key=EMBEDDER_FIELD, limit=max(count, 1), exact=True, filter=MAIN_PHOTOS),
            )
            version = self._version
        categories = sorted(str(h.value) for h in facets if h.value)
        return IndexStats(count, version, self.dim, BACKEND, list(VECTOR_NAMES), categories,
                          embedder_counts(count, {str(h.value): int(h.count) for h in models}))

    def close(self) -> None:
        """Flush and close the shard; further calls raise RuntimeError. Idempotent."""
        with self._lock.write_lock():
            for rebuild in list(self._rebuilds):
                self.abort_rebuild(rebuild)
            self._close_shard()

    def _close_shard(self) -> None:
        with self._lock.write_lock():
            if self._shard is not None:
                self._shard.flush()
                self._shard.close()
                self._shard = None

    # ---- beyond the Protocol -----------------------------------------------------------------------
    def optimize(self) -> bool:
        """Build HNSW for segments past the indexing threshold, merge and vacuum; True if anything changed.

        Blocks every other call meanwhile (Edge holds the GIL while optimising), seconds per few thousand
        products; upsert() calls it automatically, so calling it is optional.
        """
        with self._lock.write_lock():
            return self._optimize_locked()

    @property
    def version(self) -> int:
        """The write version (grows on every upsert or delete that changed data)."""
        with self._lock.read_lock():
            return self._version

    def snapshot(self, dest_dir: Path) -> Path:
        """Flush and archive the shard and its sidecar into dest_dir (no write runs meanwhile); the archive's path."""
        from fashion_search.services.search import snapshots

        with self._lock.read_lock():
            self._open().flush()
            meta = {"backend": BACKEND, "version": self._version, "dim": self.dim, "sizes": self.sizes}
            name = snapshots.snapshot_name(self.settings, self._version)
            return snapshots.archive([self.path, meta_path(self.path)], dest_dir, name, meta)

    def begin_rebuild(self, dim: int, garment_dim: int | None = None) -> str:
        """Create an empty shard beside this one with these dims and the current settings; the rebuild's name."""
        name = f"rebuild-{uuid.uuid4().hex[:12]}"
        with self._lock.write_lock():
            self._open()
            # A rebuild left by a crashed process is never finished: its files go.
            for stale in self.path.parent.glob(f"{self.path.name}.rebuild-*"):
                if stale.name.removeprefix(f"{self.path.name}.").split(".")[0] in self._rebuilds:
                    continue
                if stale.is_dir():
                    _remove_shard(stale)
                else:
                    stale.unlink(missing_ok=True)
            self._rebuilds[name] = EdgeIndex(
                self.settings, dim, self.path.with_name(f"{self.path.name}.{name}"), garment_dim=garment_dim,
                indexing_threshold_kb=self._indexing_threshold_kb, full_scan_threshold_kb=self._full_scan_threshold_kb,
            )
        return name

    def rebuild_upsert(self, rebuild: str, items: Sequence[tuple[Product, Mapping[str, np.ndarray]]]) -> int:
        """Write products into the rebuild's shard (searches still read this one)."""
        return self._rebuild(rebuild).upsert(items)

    def rebuild_delete(self, rebuild: str, product_ids: Sequence[str]) -> int:
        """Delete products from the rebuild's shard; returns how many existed there."""
        return self._rebuild(rebuild).delete(product_ids)

    def commit_rebuild(self, rebuild: str, expected_version: int) -> int | None:
        """Serve the rebuild's shard in place of this one (searches wait on the lock meanwhile, none fails) if this
        index is still at expected_version; the new version, or None if it was written since."""
        new = self._rebuild(rebuild)
        # HNSW and the flush happen before the switch, outside this index's lock (Edge holds the GIL meanwhile).
        new.optimize()
        new.flush()
        self.flush()  # so closing the served shard under the lock has little left to write
        aside = self.path.with_name(self.path.name + ".replaced")
        shutil.rmtree(aside, ignore_errors=True)
        with self._lock.write_lock():
            locked = time.perf_counter()
            self._open()
            if self._version != expected_version:
                return None
            del self._rebuilds[rebuild]
            new.close()
            self._close_shard()
            meta_path(new.path).unlink(missing_ok=True)
            # Old shard aside, new one in place: a crash between the two moves reopens the old one (_recover_swap).
            os.replace(self.path, aside)
            os.replace(new.path, self.path)
            self.sizes, self.dim = new.sizes, new.dim
            self._load({"version": expected_version + 1, "sizes": new.sizes, "vector_names": list(VECTOR_NAMES),
                        "dim": new.dim})
            version = self._version
            held = time.perf_counter() - locked
        shutil.rmtree(aside, ignore_errors=True)
        log.info("Edge index at %s now serves rebuild %s (version %d); the swap held searches %.0f ms", self.path,
                 rebuild, version, held * 1000)
        return version

    def flush(self) -> None:
        """Write everything buffered to disk."""
        with self._lock.read_lock():
            self._open().flush()

    def abort_rebuild(self, rebuild: str) -> None:
        """Drop the rebuild's shard (an unknown name is ignored)."""
        with self._lock.write_lock():
            new = self._rebuilds.pop(rebuild, None)
        if new is not None:
            new.close()
            _remove_shard(new.path)

    def _rebuild(self, rebuild: str) -> EdgeIndex:
        with self._lock.read_lock():
            new = self._rebuilds.get(rebuild)
        if new is None:
            raise ValueError(f"no rebuild {rebuild!r} under way on this index")
        return new

    @property
    def indexed_vector_count(self) -> int:
        """How many vectors (over all vector names) are in HNSW-indexed segments."""
        with self._lock.read_lock():
            return int(self._open().info().indexed_vectors_count)

    def __enter__(self) -> EdgeIndex:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- internals ---------------------------------------------------------------------------------
    def _open(self) -> qe.EdgeShard:
        if self._shard is None:
            raise RuntimeError(f"index at {self.path} is closed")
        return self._shard

    def _create_payload_indexes(self) -> None:
        """Payload indexes (PAYLOAD_INDEXES) turn every filter and id lookup into an index lookup.

        Creating one is idempotent but rewrites it (~0.1 s), so only missing ones are created.
        """
        on_disk = indexes_on_disk(self.settings)
        schemas = {
            name: _index_params(kind, qe.Memory.Cold if name in on_disk else None)
            for name, kind in PAYLOAD_INDEXES.items()
        }
        shard = self._open()
        existing = shard.info().payload_schema
        for field_name, schema in schemas.items():
            if field_name not in existing:
                shard.update(qe.UpdateOperation.create_field_index(field_name, schema))

    def _optimize_locked(self) -> bool:
        changed = bool(self._open().optimize())
        self._unindexed = self._estimate_unindexed()
        if changed:
            log.info("optimised Edge index at %s: %d vectors indexed", self.path, self.indexed_vector_count)
        return changed

    def _estimate_unindexed(self) -> int:
        """Points not yet in an HNSW segment (approximate: assumes every point has every vector)."""
        info = self._open().info()
        return max(0, int(info.points_count) - int(info.indexed_vectors_count) // len(VECTOR_NAMES))

    @staticmethod
    def _points(prepared: Sequence[PreparedPoint]) -> list[qe.Point]:
        return [qe.Point(pid, vectors, payload) for pid, vectors, payload in prepared]

    def _written(self, count: int) -> None:
        """After a write of count points (lock held): new version, and HNSW once enough is unindexed."""
        self._bump_version()
        self._unindexed += count
        # Qdrant's threshold is per vector name, so the longest vector (fine mode's garment vector) reaches it first.
        if self._unindexed * max(self.sizes.values()) * _FLOAT32_BYTES >= self._indexing_threshold_kb * _BYTES_PER_KB:
            self._optimize_locked()

    def _bump_version(self) -> None:
        self._version += 1
        self._write_meta()

    def _write_meta(self) -> None:
        """Write the sidecar atomically (temp file, fsync, rename) so a crash never leaves half a file."""
        target = meta_path(self.path)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        data = json.dumps({
            "version": self._version, "dim": self.dim, "vector_names": list(VECTOR_NAMES), "sizes": self.sizes,
        })
        with open(tmp, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
