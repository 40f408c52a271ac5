"""gRPC adapter over a VectorIndex: the search service owns the collection (Edge shard or Qdrant)."""

from __future__ import annotations

import logging
import math
import time

import grpc
import numpy as np
from prometheus_client import Gauge, Histogram

from fashion_search.core.domain import (
    IMAGE_VECTOR,
    Product,
    RebuildableIndex,
    SearchQuery,
    VectorIndex,
    as_rebuildable,
)
from fashion_search.core.grpc_common import abort_on_invalid, make_server, mark_serving, vector_from_values
from fashion_search.core.observability import BATCH_SIZE, LATENCY_BUCKETS
from fashion_search.core.serving import wait_for_termination
from fashion_search.core.settings import Settings
from fashion_search.rpc import search_pb2, search_pb2_grpc
from fashion_search.services.search.client import (
    fields_from_proto,
    filter_from_proto,
    product_from_proto,
    product_to_proto,
)
from fashion_search.services.search.factory import make_local_index, stored_dim

log = logging.getLogger(__name__)

SERVICE_NAME = "fashion_search.v1.Search"

QUERY_SECONDS = Histogram(
    "fs_search_query_seconds", "Vector search time in the index", ["vector"], buckets=LATENCY_BUCKETS
)
POINTS = Gauge("fs_search_points", "Products in the collection (read at scrape time)")


def point_from_proto(msg: search_pb2.IndexedPoint) -> tuple[Product, dict[str, np.ndarray]]:
    """Proto point to (product, named vectors); ValueError if a vector name repeats."""
    vectors: dict[str, np.ndarray] = {}
    for v in msg.vectors:
        if v.name in vectors:
            raise ValueError(f"vector {v.name!r} given twice for product {msg.product.product_id!r}")
        vectors[v.name] = vector_from_values(v.values)
    return product_from_proto(msg.product), vectors


class SearchServicer(search_pb2_grpc.SearchServicer):
    """Upsert / Search / Get / Scroll / Delete / Stats / Version over one VectorIndex; bad input → INVALID_ARGUMENT."""

    def __init__(self, index: VectorIndex) -> None:
        self.index = index
        POINTS.set_function(self._count)

    def _count(self) -> float:
        try:
            return float(self.index.stats().count)
        except Exception:  # a scrape must not fail with the index: the gauge shows the gap instead
            return math.nan

    def Upsert(self, request: search_pb2.UpsertRequest, context: grpc.ServicerContext) -> search_pb2.UpsertResponse:
        """Insert or replace products (if_unchanged: replace only unchanged ones); answers counts and the version."""
        def run() -> search_pb2.UpsertResponse:
            points = [point_from_proto(p) for p in request.points]
            BATCH_SIZE.labels("search-upsert").observe(len(points))
            if request.rebuild:
                upserted = self._rebuildable().rebuild_upsert(request.rebuild, points)
                return search_pb2.UpsertResponse(upserted=upserted, version=self.index.version)
            if request.if_unchanged:
                skipped = self.index.replace_unchanged(points)
                upserted = len({p.product_id for p, _ in points}) - len(skipped)
            else:
                skipped, upserted = [], self.index.upsert(points)
            return search_pb2.UpsertResponse(upserted=upserted, version=self.index.version, skipped=skipped)

        return abort_on_invalid(context, run)

    def Search(self, request: search_pb2.SearchRequest, context: grpc.ServicerContext) -> search_pb2.SearchResponse:
        """Nearest products to a vector, optionally filtered by categories."""
        def run() -> search_pb2.SearchResponse:
            start = time.perf_counter()
            vector_name = request.vector_name or IMAGE_VECTOR
            hits = self.index.search(
                vector_from_values(request.vector), request.top_k, vector_name, list(request.categories),
                request.expand, filters=filter_from_proto(request.filter), offset=request.offset,
                text=request.text or None, diversity=request.diversity if request.HasField("diversity") else None,
            )
            QUERY_SECONDS.labels(vector_name).observe(time.perf_counter() - start)
            return search_pb2.SearchResponse(
                hits=[search_pb2.Hit(product=product_to_proto(h.product), score=h.score) for h in hits]
            )

        return abort_on_invalid(context, run)

    def SearchBatch(
        self, request: search_pb2.SearchBatchRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchBatchResponse:
        """Several searches in one call, answered in order."""
        def run() -> search_pb2.SearchBatchResponse:
            start = time.perf_counter()
            queries = [
                SearchQuery(vector_from_values(q.vector), q.top_k, q.vector_name or IMAGE_VECTOR, list(q.categories),
                            q.expand, filter_from_proto(q.filter), q.offset, q.text or None,
                            q.diversity if q.HasField("diversity") else None)
                for q in request.queries
            ]
            results = self.index.search_batch(queries)
            BATCH_SIZE.labels("search-query").observe(len(queries))
            # One batch, one latency: labelled by the vector of its first query (a batch searches one kind).
            if queries:
                QUERY_SECONDS.labels(queries[0].vector_name).observe(time.perf_counter() - start)
            return search_pb2.SearchBatchResponse(results=[
                search_pb2.SearchResponse(hits=[search_pb2.Hit(product=product_to_proto(h.product), score=h.score)
                                                for h in hits])
                for hits in results
            ])

        return abort_on_invalid(context, run)

    def Get(self, request: search_pb2.GetRequest, context: grpc.ServicerContext) -> search_pb2.GetResponse:
        """One product by id; found=false when unknown."""
        product = abort_on_invalid(context, lambda: self.index.get(request.product_id))
        if product is None:
            return search_pb2.GetResponse(found=False)
        return search_pb2.GetResponse(found=True, product=product_to_proto(product))

    def Vectors(self, request: search_pb2.VectorsRequest, context: grpc.ServicerContext) -> search_pb2.VectorsResponse:
        """A product's stored vectors; found=false when unknown."""
        vectors = abort_on_invalid(context, lambda: self.index.vectors(request.product_id))
        if vectors is None:
            return search_pb2.VectorsResponse(found=False)
        return search_pb2.VectorsResponse(found=True, vectors=[
            search_pb2.NamedVector(name=name, values=np.asarray(v, np.float32).tolist()) for name, v in vectors.items()
        ])

    def UpdateFields(
        self, request: search_pb2.UpdateFieldsRequest, context: grpc.ServicerContext,
    ) -> search_pb2.UpdateFieldsResponse:
        """Payload-only update of catalog fields; found=false when the product is unknown."""
        product = abort_on_invalid(
            context, lambda: self.index.update_fields(request.product_id, fields_from_proto(request)),
        )
        if product is None:
            return search_pb2.UpdateFieldsResponse(found=False, version=self.index.version)
        return search_pb2.UpdateFieldsResponse(
            found=True, product=product_to_proto(product), version=self.index.version,
        )

    def Delete(self, request: search_pb2.DeleteRequest, context: grpc.ServicerContext) -> search_pb2.DeleteResponse:
        """Delete products by id; answers how many existed and the new version."""
        def run() -> search_pb2.DeleteResponse:
            if request.rebuild:
                deleted = self._rebuildable().rebuild_delete(request.rebuild, list(request.product_ids))
                return search_pb2.DeleteResponse(deleted=deleted, version=self.index.version)
            deleted = self.index.delete(list(request.product_ids))
            return search_pb2.DeleteResponse(deleted=deleted, version=self.index.version)

        return abort_on_invalid(context, run)

    def Scroll(self, request: search_pb2.ScrollRequest, context: grpc.ServicerContext) -> search_pb2.ScrollResponse:
        """One page of products in point-id order; next_offset is empty after the last page."""
        products, next_offset = abort_on_invalid(
            context, lambda: self.index.scroll(request.offset or None, request.limit)
        )
        return search_pb2.ScrollResponse(
            products=[product_to_proto(p) for p in products], next_offset=next_offset or "",
        )

    def Stats(self, request: search_pb2.StatsRequest, context: grpc.ServicerContext) -> search_pb2.StatsResponse:
        """Count, version, dim, backend, vector names and categories of the collection."""
        s = self.index.stats()
        return search_pb2.StatsResponse(
            count=s.count, version=s.version, dim=s.dim, backend=s.backend,
            vector_names=s.vector_names, categories=s.categories, embedders=s.embedders,
        )

    def Version(self, request: search_pb2.VersionRequest, context: grpc.ServicerContext) -> search_pb2.VersionResponse:
        """The collection's write version (changes on every upsert or delete)."""
        return search_pb2.VersionResponse(version=self.index.version)

    def BeginRebuild(
        self, request: search_pb2.BeginRebuildRequest, context: grpc.ServicerContext,
    ) -> search_pb2.BeginRebuildResponse:
        """Create the new collection of a zero-downtime rebuild beside the served one."""
        name = abort_on_invalid(context, lambda: self._rebuildable().begin_rebuild(
            request.dim, request.garment_dim or None,
        ))
        return search_pb2.BeginRebuildResponse(rebuild=name)

    def CommitRebuild(
        self, request: search_pb2.CommitRebuildRequest, context: grpc.ServicerContext,
    ) -> search_pb2.CommitRebuildResponse:
        """Switch searches to the rebuild's collection if the served one is still at the expected version."""
        version = abort_on_invalid(context, lambda: self._rebuildable().commit_rebuild(
            request.rebuild, request.expected_version,
        ))
        if version is None:
            return search_pb2.CommitRebuildResponse(switched=False, version=self.index.version)
        return search_pb2.CommitRebuildResponse(switched=True, version=version)

    def AbortRebuild(
        self, request: search_pb2.AbortRebuildRequest, context: grpc.ServicerContext,
    ) -> search_pb2.AbortRebuildResponse:
        """Drop a rebuild's collection."""
        abort_on_invalid(context, lambda: self._rebuildable().abort_rebuild(request.rebuild))
        return search_pb2.AbortRebuildResponse()

    def _rebuildable(self) -> RebuildableIndex:
        return as_rebuildable(self.index)


def resolve_dim(settings: Settings) -> int:
    """The vector dim: the existing index's, else the configured embedder's (known without loading weights)."""
    from fashion_search.services.embedder.model import GarmentEmbedder

    model_dim = GarmentEmbedder(settings).dim
    existing = stored_dim(settings)
    if existing is not None and existing != model_dim:
        log.warning("index holds %d-d vectors but the embedder makes %d-d ones; re-index", existing, model_dim)
    return existing if existing is not None else model_dim


def start_server(
    settings: Settings, port: int | None = None, index: VectorIndex | None = None, dim: int | None = None,
    metrics_port: int | None = None,
) -> tuple[grpc.Server, int]:
    """Open the index (unless given), start serving on port (0 = any free port) and report SERVING.

    An index opened here is owned by the server process; pass one in to be able to close it yourself.
    """
    if index is None:
        index = make_local_index(settings, dim if dim is not None else resolve_dim(settings))
    servicer = SearchServicer(index)
    server, bound, health = make_server(
        SERVICE_NAME, settings.search_port if port is None else port, settings,
        lambda s: search_pb2_grpc.add_SearchServicer_to_server(servicer, s), metrics_port=metrics_port,
    )
    mark_serving(health, SERVICE_NAME)
    return server, bound


def serve(settings: Settings) -> None:
    """Run the search service until SIGTERM/SIGINT, then stop gracefully and close the index."""
    index = make_local_index(settings, resolve_dim(settings))
    try:
        server, _ = start_server(settings, index=index, metrics_port=settings.search_metrics_port)
        wait_for_termination(server)
    finally:
        index.close()
