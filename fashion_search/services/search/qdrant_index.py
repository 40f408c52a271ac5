"""VectorIndex on qdrant-client: a Qdrant server (FS_QDRANT_URL) or qdrant-client's local mode (path or memory)."""

from __future__ import annotations

import math
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import fasteners
import numpy as np
from qdrant_client import QdrantClient, models

from fashion_search.core.domain import (
    IMAGE_VECTOR,
    VECTOR_NAMES,
    Hit,
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
    update_payload,
    vector_sizes,
    with_text,
)

BACKEND = "qdrant"
MEMORY = ":memory:"
META_SUFFIX = "__meta"
# The one point of the metadata collection.
_META_POINT_ID = 0


def default_location(settings: Settings) -> str:
    """The server URL if configured, else a local-mode directory under data_dir."""
    return settings.qdrant_url or str(settings.data_dir / "qdrant")


def _connect(settings: Settings, location: str) -> tuple[QdrantClient, bool]:
    """A client for a URL (server), ":memory:" or a directory (local mode); the flag says local."""
    if location.startswith(("http://", "https://")):
        client = QdrantClient(
            url=location, api_key=settings.qdrant_api_key or None, timeout=math.ceil(settings.grpc_timeout_s),
        )
        return client, False
    if location == MEMORY:
        return QdrantClient(location=MEMORY), True
    Path(location).mkdir(parents=True, exist_ok=True)
    return QdrantClient(path=location), True


def stored_dim(settings: Settings, location: str | None = None) -> int | None:
    """The vector dim recorded in an existing collection's metadata, or None if there is none."""
    client, _ = _connect(settings, location or default_location(settings))
    try:
        meta = f"{settings.collection}{META_SUFFIX}"
        if not client.collection_exists(meta):
            return None
        records = client.retrieve(meta, [_META_POINT_ID], with_payload=True)
        return int(records[0].payload["dim"]) if records and records[0].payload else None
    finally:
        client.close()


# A product's main photo: its one point in listings, counts and lookups (points stored before photos had no field).
MAIN_PHOTOS = models.Filter(should=[
    models.FieldCondition(key=PHOTO_FIELD, match=models.MatchValue(value=0)),
    models.IsEmptyCondition(is_empty=models.PayloadField(key=PHOTO_FIELD)),
])


def _photo_count(payload: Mapping[str, Any] | None) -> int:
    """How many photo points a product's main point says it has (at least the main one)."""
    return max(1, len((payload or {}).get(IMAGES_FIELD) or []))


def client_filter(f: SearchFilter | None) -> models.Filter | None:
    """A checked SearchFilter as a qdrant-client filter (None: no filter)."""
    if f is None:
        return None
    must: list[models.Condition] = []
    if f.categories:
        must.append(models.FieldCondition(key=CATEGORY_FIELD, match=models.MatchAny(any=list(f.categories))))
    if f.brands:
        must.append(models.FieldCondition(key=BRAND_FIELD, match=models.MatchAny(any=list(f.brands))))
    if f.min_price is not None or f.max_price is not None:
        must.append(models.FieldCondition(key=PRICE_FIELD, range=models.Range(gte=f.min_price, lte=f.max_price)))
    if f.in_stock is not None:
        must.append(models.FieldCondition(key=IN_STOCK_FIELD, match=models.MatchValue(value=int(f.in_stock))))
    # A product must carry every tag asked for: one condition per tag.
    must.extend(models.FieldCondition(key=TAGS_FIELD, match=models.MatchValue(value=t)) for t in f.tags)
    must_not: list[models.Condition] | None = (
        [models.FieldCondition(key=PRODUCT_ID_FIELD, match=models.MatchAny(any=list(f.exclude)))] if f.exclude else None
    )
    return models.Filter(must=must or None, must_not=must_not)


def _index_params(kind: str, on_disk: bool) -> models.PayloadSchemaParams:
    """qdrant-client's payload index parameters for a PAYLOAD_INDEXES kind, memory-mapped from disk or in RAM."""
    disk = True if on_disk else None
    if kind == "keyword":
        return models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, on_disk=disk)
    if kind == "keyword-unique":  # unique values need no HNSW sub-graphs
        return models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, enable_hnsw=False, on_disk=disk)
    if kind == "float":
        return models.FloatIndexParams(type=models.FloatIndexType.FLOAT, on_disk=disk)
    if kind == "integer":
        return models.IntegerIndexParams(type=models.IntegerIndexType.INTEGER, lookup=True, range=True, on_disk=disk)
    # Lower-cased words scored by BM25 (TextQuery); unique-ish texts need no HNSW sub-graphs.
    return models.TextIndexParams(
        type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.WORD, lowercase=True, scoring=True,
        enable_hnsw=False, on_disk=disk,
    )


def client_quantization(settings: Settings) -> models.ScalarQuantization | models.BinaryQuantization | None:
    """int8 scalar or 1-bit binary quantization kept in RAM (settings.index_quantization), or None for float32."""
    if settings.index_quantization == "none":
        return None
    if settings.index_quantization == "binary":
        # Queries stay 8-bit against the 1-bit copies (asymmetric): more recall for the same memory.
        return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(
            always_ram=True, encoding=models.BinaryQuantizationEncoding.ONE_BIT,
            query_encoding=models.BinaryQuantizationQueryEncoding.SCALAR8BITS,
        ))
    return models.ScalarQuantization(
        scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True),
    )


def collection_config(settings: Settings, sizes: Mapping[str, int]) -> dict[str, Any]:
    """create_collection's arguments: named cosine vectors, HNSW, quantization and the cluster layout."""
    quantization = client_quantization(settings)
    return {
        "vectors_config": {
            # With quantized copies in RAM, the float32 originals stay on disk (read only to rescore).
            name: models.VectorParams(
                size=size, distance=models.Distance.COSINE, on_disk=True if quantization else None,
            )
            for name, size in sizes.items()
        },
        "hnsw_config": models.HnswConfigDiff(m=settings.hnsw_m, ef_construct=settings.hnsw_ef_construct),
        "quantization_config": quantization,
        # A Qdrant cluster spreads and copies the collection as configured (one server: 1, 1, 1; local mode
        # ignores them).
        "shard_number": settings.qdrant_shard_number,
        "replication_factor": settings.qdrant_replication_factor,
        "write_consistency_factor": settings.qdrant_write_consistency,
    }


def restore_local_snapshot(settings: Settings, location: str, snapshot: Path) -> int:
    """Replace a (closed) local-mode collection at location by an archive; returns the restored version, above both
    the archive's and the replaced collection's."""
    from fashion_search.services.search import snapshots

    meta = snapshots.read_meta(snapshot)
    if meta.get("backend") != BACKEND or meta.get("collection") != settings.collection:
        raise ValueError(f"{snapshot.name} is not a snapshot of the {BACKEND} collection {settings.collection!r}")
    dim = stored_dim(settings, location)
    if dim is None:
        raise ValueError(f"no collection {settings.collection!r} at {location} to restore into")
    index = QdrantServerIndex(settings, dim, location, garment_dim=stored_garment_dim(settings, location))
    if meta.get("sizes") not in (None, index.sizes):
        index.close()
        raise ValueError(f"{snapshot.name} holds vectors of dims {meta['sizes']}, the index {index.sizes}: it was "
                         "taken before a rebuild changed them")
    before = index.version
    dirs = index._local_dirs()
    index.close()
    work = Path(tempfile.mkdtemp(prefix=".restore-", dir=location))
    try:
        snapshots.unpack(snapshot, work)
        # The collection's folder was named after the collection behind the alias when the snapshot was taken.
        sources = [str(meta.get("collection_dir") or dirs[0].name), dirs[1].name]
        for source, target in zip(sources, dirs, strict=True):
            snapshots.replace_tree(work / source, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with QdrantServerIndex(settings, dim, location, garment_dim=stored_garment_dim(settings, location)) as restored:
        version = max(before, int(meta.get("version", 0))) + 1  # type: ignore[call-overload]
        restored._write_meta(version)
    return version


def stored_garment_dim(settings: Settings, location: str) -> int | None:
    """The garment vectors' length recorded with a collection (None: the image vectors')."""
    client, _ = _connect(settings, location)
    try:
        if not client.collection_exists(f"{settings.collection}{META_SUFFIX}"):
            return None
        records = client.retrieve(f"{settings.collection}{META_SUFFIX}", [_META_POINT_ID], with_payload=True)
        sizes = (records[0].payload or {}).get("sizes") if records else None
        return int(sizes["garment"]) if sizes and "garment" in sizes else None
    finally:
        client.close()


def _versioned_name(served: str) -> str:
    """A new collection name behind the served alias (unique, so a rebuild never collides with the served one)."""
    return f"{served}__{uuid.uuid4().hex[:12]}"


def _points(prepared: Sequence[PreparedPoint]) -> list[models.PointStruct]:
    return [models.PointStruct(id=pid, vector=vecs, payload=payload) for pid, vecs, payload in prepared]


class QdrantServerIndex:
    """VectorIndex on a Qdrant collection; `location` is a URL, a local directory or ":memory:".

    The version lives in the one-point collection `<collection>__meta`. HNSW is built by the server's
    background optimizers (local mode is always an exact scan), so optimize() has nothing to do.
    """

    def __init__(
        self, settings: Settings, dim: int, location: str | None = None, *, garment_dim: int | None = None
    ) -> None:
        self.sizes = vector_sizes(dim, garment_dim)
        self.settings = settings
        self.dim = dim
        self.location = location or default_location(settings)
        self.collection = settings.collection
        self._meta_collection = f"{settings.collection}{META_SUFFIX}"
        # Searches and lookups run side by side (the client is thread-safe); writes and the alias switch alone.
        self._lock = fasteners.ReaderWriterLock()
        # Rebuilds under way: each one's collection name and vector sizes.
        self._rebuilds: dict[str, dict[str, int]] = {}
        self._client, self._local = _connect(settings, self.location)
        self._closed = False
        try:
            self._ensure_collections()
        except BaseException:
            self._client.close()
            raise

    # ---- VectorIndex -----------------------------------------------------------------------------
    def upsert(self, items: Sequence[tuple[Product, Mapping[str, np.ndarray]]]) -> int:
        """Insert or replace product photos (keyed by product id and photo); returns how many products were written.

        A product written with fewer photos than it had loses the others.
        """
        return self._upsert_into(self.collection, self.sizes, items, bump=True)

    def _upsert_into(
        self, collection: str, sizes: Mapping[str, int], items: Sequence[tuple[Product, Mapping[str, np.ndarray]]],
        *, bump: bool,
    ) -> int:
        max_photos = self.settings.max_photos_per_product
        prepared = prepare_points(items, sizes, max_photos)
        if not prepared:
            return 0
        stale = stale_photo_ids(prepared, max_photos)
        with self._lock.write_lock():
            self._check_open()
            self._client.upsert(collection, _points(prepared), wait=True)
            if stale and (gone := [r.id for r in self._client.retrieve(collection, stale, with_payload=False)]):
                self._client.delete(collection, models.PointIdsList(points=gone), wait=True)
            if bump:
                self._bump_version()
        return len({payload[PRODUCT_ID_FIELD] for _, _, payload in prepared})

    def replace_unchanged(self, items: Sequence[tuple[Product, Mapping[str, np.ndarray]]]) -> list[str]:
        """Replace stored products only where their revision is still the one read; returns the ids left alone."""
        prepared = prepare_points(items, self.sizes, self.settings.max_photos_per_product)
        if not prepared:
            return []
        revisions, legacy = read_revisions(items)
        current: list[models.Condition] = (
            [models.FieldCondition(key=REVISION_FIELD, match=models.MatchAny(any=revisions))] if revisions else []
        )
        if legacy:  # stored before revisions existed, and not written since (every write stamps one)
            current.append(models.IsEmptyCondition(is_empty=models.PayloadField(key=REVISION_FIELD)))
        with self._lock.write_lock():
            self._check_open()
            self._client.upsert(
                self.collection, _points(prepared), wait=True, update_filter=models.Filter(should=current),
                update_mode=models.UpdateMode.UPDATE_ONLY,
            )
            records = self._client.retrieve(self.collection, [pid for pid, _, _ in prepared], with_payload=True)
            skipped = skipped_products(prepared, {str(r.id): r.payload for r in records})
            if len(skipped) < len(prepared):
                self._bump_version()
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
        query_filter = client_filter(check_filter(filters, categories))
        words = check_text(text, self.settings)
        mmr = check_diversity(diversity)
        s = self.settings

        def image_query(q: list[float], limit: int) -> models.Query | list[float]:
            if mmr is None:
                return q
            return models.NearestQuery(
                nearest=q, mmr=models.Mmr(diversity=mmr, candidates_limit=max(s.mmr_candidates, limit)),
            )

        def run(q: list[float], limit: int, neighbours: bool) -> list[models.ScoredPoint]:
            if words is None or neighbours:
                return self._client.query_points(
                    self.collection, query=q if neighbours else image_query(q, limit), using=name, limit=limit,
                    query_filter=query_filter, search_params=self._search_params(limit),
                    with_payload=not neighbours, with_vectors=[name] if neighbours else False,
                ).points
            depth = max(s.fusion_candidates, limit)
            return self._client.query_points(
                self.collection, limit=limit,
                query=models.RrfQuery(rrf=models.Rrf(k=RRF_K, weights=rrf_weights(s))),
                query_filter=query_filter, with_payload=True,
                prefetch=[
                    models.Prefetch(query=image_query(q, depth), using=name, limit=depth, filter=query_filter,
                                    params=self._search_params(depth)),
                    models.Prefetch(query=models.TextQuery(text=models.TextQueryInput(query=words)), using=TEXT_FIELD,
                                    limit=depth, filter=query_filter),
                ],
            ).points

        with self._lock.read_lock():
            self._check_open()
            if n_expand:
                near = [p.vector[name] for p in run(query, n_expand, neighbours=True)]  # type: ignore[index]
                if near:
                    query = expand_query(np.array(query), np.array(near)).tolist()

            def fetch(limit: int) -> list[Hit]:
                return [Hit(product_from_payload(p.payload), float(p.score)) for p in run(query, limit, False)]

            return grouped_search(fetch, skip, k, s.max_photos_per_product)

    def _search_params(self, limit: int) -> models.SearchParams | None:
        """HNSW ef (at least the results asked for) and rescoring of quantized candidates; None in local mode (an
        exact scan that warns on every call that search params do nothing)."""
        if self._local:
            return None
        quantization = None if self.settings.index_quantization == "none" else models.QuantizationSearchParams(
            rescore=True, oversampling=self.settings.quantization_oversampling,
        )
        return models.SearchParams(hnsw_ef=max(self.settings.hnsw_ef_search, limit), quantization=quantization)

    def get(self, product_id: str) -> Product | None:
        """The stored product, or None if the id is unknown."""
        pid = point_id(check_product_id(product_id))
        with self._lock.read_lock():
            self._check_open()
            records = self._client.retrieve(self.collection, [pid], with_payload=True)
        return product_from_payload(records[0].payload) if records else None

    def vectors(self, product_id: str) -> dict[str, np.ndarray] | None:
        """The stored named vectors of a product, or None if the id is unknown."""
        pid = point_id(check_product_id(product_id))
        with self._lock.read_lock():
            self._check_open()
            records = self._client.retrieve(self.collection, [pid], with_payload=False, with_vectors=True)
        if not records:
            return None
        stored = records[0].vector
        named = stored if isinstance(stored, Mapping) else {}
        return {str(n): np.asarray(v, dtype=np.float32) for n, v in named.items()}

    def update_fields(self, product_id: str, fields: Mapping[str, object]) -> Product | None:
        """Change catalog fields of a stored product (payload only, vectors untouched); None if the id is unknown."""
        pid = point_id(check_product_id(product_id))
        payload = update_payload(fields)
        with self._lock.write_lock():
            self._check_open()
            found = self._client.retrieve(self.collection, [pid], with_payload=True)
            if not found:
                return None
            photos: list[models.ExtendedPointId] = list(
                photo_point_ids(product_id, range(_photo_count(found[0].payload)))
            )
            self._client.set_payload(
                self.collection, with_text(found[0].payload, payload), points=photos, wait=True,
            )
            self._bump_version()
            records = self._client.retrieve(self.collection, [pid], with_payload=True)
        return product_from_payload(records[0].payload) if records else None

    def scroll(self, offset: str | None, limit: int) -> tuple[list[Product], str | None]:
        """Up to limit products in point-id order from offset (None: the start), and the next offset or None."""
        start = check_scroll_offset(offset)
        page = check_scroll_limit(limit, self.settings)
        with self._lock.read_lock():
            self._check_open()
            records, next_offset = self._client.scroll(
                self.collection, scroll_filter=MAIN_PHOTOS, offset=start, limit=page, with_payload=True,
                with_vectors=False,
            )
        return [product_from_payload(r.payload) for r in records], None if next_offset is None else str(next_offset)

    def delete(self, product_ids: Sequence[str]) -> int:
        """Delete products by id; returns how many existed."""
        return self._delete_from(self.collection, product_ids, bump=True)

    def _delete_from(self, collection: str, product_ids: Sequence[str], *, bump: bool) -> int:
        ids = check_product_ids(product_ids)
        if not ids:
            return 0
        with self._lock.write_lock():
            self._check_open()
            existing = self._client.retrieve(collection, [point_id(p) for p in ids], with_payload=True)
            if existing:
                # Every photo's point: the ids of a product's photos follow from its id and its photo count.
                photos: list[models.ExtendedPointId] = [
                    i for r in existing
                    for i in photo_point_ids(str((r.payload or {})[PRODUCT_ID_FIELD]), range(_photo_count(r.payload)))
                ]
                self._client.delete(collection, models.PointIdsList(points=photos), wait=True)
                if bump:
                    self._bump_version()
        return len(existing)

    def stats(self) -> IndexStats:
        """Point count, version, dim, backend, vector names, the distinct categories and products per embedder."""
        with self._lock.read_lock():
            self._check_open()
            count = self._client.count(self.collection, count_filter=MAIN_PHOTOS, exact=True).count
            # There cannot be more distinct values than products, so this limit never truncates.
            facets = self._client.facet(
                self.collection, key=CATEGORY_FIELD, facet_filter=MAIN_PHOTOS, limit=max(count, 1), exact=True,
            )
            models = self._client.facet(
                self.collection, key=EMBEDDER_FIELD, facet_filter=MAIN_PHOTOS, limit=max(count, 1), exact=True,
            )
            version = self._read_version()
        categories = sorted(str(h.value) for h in facets.hits if h.value)
        return IndexStats(count, version, self.dim, BACKEND, list(VECTOR_NAMES), categories,
                          embedder_counts(count, {str(h.value): int(h.count) for h in models.hits}))

    def close(self) -> None:
        """Close the client; further calls raise RuntimeError. Idempotent."""
        with self._lock.write_lock():
            for rebuild in list(self._rebuilds):
                self.abort_rebuild(rebuild)
            if not self._closed:
                self._client.close()
                self._closed = True

    # ---- beyond the Protocol -----------------------------------------------------------------------
    def optimize(self) -> bool:
        """No-op: a Qdrant server indexes in the background and local mode has no HNSW; returns False."""
        return False

    @property
    def version(self) -> int:
        """The write version (grows on every upsert or delete that changed data)."""
        with self._lock.read_lock():
            self._check_open()
            return self._read_version()

    def snapshot(self, dest_dir: Path) -> Path | str:
        """A snapshot of the collection: on a server, the server's own (its name); in a local directory, an archive
        of the collection's files in dest_dir, taken while no write runs (its path)."""
        from fashion_search.services.search import snapshots

        with self._lock.read_lock():
            self._check_open()
            version = self._read_version()
            if not self._local:
                return self._client.create_snapshot(self._real_collection(), wait=True).name  # type: ignore[union-attr]
            if self.location == MEMORY:
                raise ValueError("an in-memory index has no files to snapshot")
            # The folder is named after the collection behind the alias, which a later rebuild replaces.
            meta = {"backend": BACKEND, "version": version, "collection": self.collection, "sizes": self.sizes,
                    "collection_dir": self._real_collection()}
            name = snapshots.snapshot_name(self.settings, version)
            return snapshots.archive(self._local_dirs(), dest_dir, name, meta)

    def server_snapshots(self) -> list[str]:
        """The snapshots a Qdrant server keeps of the collection (local mode keeps none: see snapshots.py)."""
        if self._local:
            return []
        return [d.name for d in self._client.list_snapshots(self._real_collection())]

    def restore_server_snapshot(self, name: str) -> int:
        """Recover the collection on a Qdrant server from one of its snapshots; returns the new version."""
        if self._local:
            raise ValueError("a local-mode index restores from an archive: use restore_local_snapshot")
        with self._lock.write_lock():
            self._check_open()
            before = self._read_version()
            real = self._real_collection()
            url = f"{self.location.rstrip('/')}/collections/{real}/snapshots/{name}"
            self._client.recover_snapshot(real, location=url, wait=True)
            self._write_meta(max(before, self._read_version()) + 1)
            return self._read_version()

    # ---- zero-downtime rebuild: a new collection beside the served one, then one alias switch -------------
    def begin_rebuild(self, dim: int, garment_dim: int | None = None) -> str:
        """Create an empty collection with these dims and the current settings; its name (the rebuild's)."""
        sizes = vector_sizes(dim, garment_dim)
        name = _versioned_name(self.collection)
        with self._lock.write_lock():
            self._check_open()
            self._client.create_collection(name, **collection_config(self.settings, sizes))
            self._create_payload_indexes(name)
            self._rebuilds[name] = sizes
        return name

    def rebuild_upsert(self, rebuild: str, items: Sequence[tuple[Product, Mapping[str, np.ndarray]]]) -> int:
        """Write products into the rebuild's collection (searches still read the served one)."""
        return self._upsert_into(rebuild, self._rebuild_sizes(rebuild), items, bump=False)

    def rebuild_delete(self, rebuild: str, product_ids: Sequence[str]) -> int:
        """Delete products from the rebuild's collection; returns how many existed there."""
        self._rebuild_sizes(rebuild)
        return self._delete_from(rebuild, product_ids, bump=False)

    def commit_rebuild(self, rebuild: str, expected_version: int) -> int | None:
        """Point the served alias at the rebuild's collection and drop the old one, if the served version is still
        expected_version; the new version, or None if the served collection was written since."""
        sizes = self._rebuild_sizes(rebuild)
        with self._lock.write_lock():
            self._check_open()
            if self._read_version() != expected_version:
                return None
            old = self._real_collection()
            switch: list[models.AliasOperations] = [models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=rebuild, alias_name=self.collection),
            )]
            if old != self.collection:
                # One request deletes and recreates the alias: Qdrant applies it atomically, no search misses it.
                unlink = models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.collection))
                switch.insert(0, unlink)
            else:
                # A collection made before aliases bears the served name itself: it must go before the alias can.
                self._client.delete_collection(self.collection)
            self._client.update_collection_aliases(switch)
            if old != self.collection:
                self._client.delete_collection(old)
            del self._rebuilds[rebuild]
            self.sizes, self.dim = dict(sizes), sizes[IMAGE_VECTOR]
            self._write_meta(expected_version + 1)
            return expected_version + 1

    def abort_rebuild(self, rebuild: str) -> None:
        """Drop the rebuild's collection (an unknown name is ignored)."""
        with self._lock.write_lock():
            if self._rebuilds.pop(rebuild, None) is not None and not self._closed:
                self._client.delete_collection(rebuild)

    def _rebuild_sizes(self, rebuild: str) -> dict[str, int]:
        with self._lock.read_lock():
            sizes = self._rebuilds.get(rebuild)
        if sizes is None:
            raise ValueError(f"no rebuild {rebuild!r} under way on this index")
        return sizes

    def _real_collection(self) -> str:
        """The collection the served name points at (itself for a collection made before aliases)."""
        for alias in self._client.get_aliases().aliases:
            if alias.alias_name == self.collection:
                return alias.collection_name
        return self.collection

    def _local_dirs(self) -> list[Path]:
        """The folders local mode keeps the collection and its metadata in."""
        return [Path(self.location) / "collection" / name for name in (self._real_collection(), self._meta_collection)]

    def __enter__(self) -> QdrantServerIndex:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- internals ---------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"index {self.collection} at {self.location} is closed")

    def _ensure_collections(self) -> None:
        """Create the collection and its metadata, or check that existing ones fit this dim."""
        where = f"{self.location}/{self.collection}"
        # The served name is an alias (or, made before aliases, the collection itself): read the collection it names.
        real = self._real_collection()
        if self._client.collection_exists(real):
            vectors = self._client.get_collection(real).config.params.vectors
            if not isinstance(vectors, Mapping):
                raise ValueError(f"collection {where} has an unnamed vector; expected {list(VECTOR_NAMES)}")
            check_stored_layout({name: v.size for name, v in vectors.items()}, self.sizes, where)
        else:
            # The served name is an alias of a generated collection name, so a rebuild can switch it atomically.
            real = _versioned_name(self.collection)
            self._client.create_collection(real, **collection_config(self.settings, self.sizes))
            self._client.update_collection_aliases([models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=real, alias_name=self.collection),
            )])
        self._create_payload_indexes(real)
        if not self._client.collection_exists(self._meta_collection):
            self._client.create_collection(
                self._meta_collection, vectors_config={}, replication_factor=self.settings.qdrant_replication_factor,
            )
        self._write_meta(self._read_version())

    def _create_payload_indexes(self, collection: str) -> None:
        """Every payload index (PAYLOAD_INDEXES) a collection lacks."""
        on_disk = indexes_on_disk(self.settings)
        schemas = {name: _index_params(kind, name in on_disk) for name, kind in PAYLOAD_INDEXES.items()}
        existing = self._client.get_collection(collection).payload_schema
        with warnings.catch_warnings():
            # Local mode warns that payload indexes do nothing there; the calls matter on a server.
            warnings.simplefilter("ignore", UserWarning)
            for field_name, schema in schemas.items():
                if field_name not in existing:
                    self._client.create_payload_index(collection, field_name, schema, wait=True)

    def _read_version(self) -> int:
        records = self._client.retrieve(self._meta_collection, [_META_POINT_ID], with_payload=True)
        return int(records[0].payload.get("version", 0)) if records and records[0].payload else 0

    def _bump_version(self) -> None:
        # Re-read rather than trust memory: another process may write to the same server collection.
        self._write_meta(self._read_version() + 1)

    def _write_meta(self, version: int) -> None:
        payload = {"version": version, "dim": self.dim, "vector_names": list(VECTOR_NAMES), "sizes": self.sizes}
        self._client.upsert(
            self._meta_collection, [models.PointStruct(id=_META_POINT_ID, vector={}, payload=payload)], wait=True,
        )
