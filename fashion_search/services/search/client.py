"""RemoteIndex: the VectorIndex interface over the search service's gRPC API, plus the message conversions."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TypeVar

import numpy as np

from fashion_search.core.deadlines import call_timeout
from fashion_search.core.domain import (
    EDITABLE_FIELDS,
    IMAGE_VECTOR,
    Hit,
    IndexStats,
    Product,
    SearchFilter,
    SearchQuery,
)
from fashion_search.core.grpc_common import ServiceUnavailable, box_from_proto, box_to_proto, make_channel, rpc_errors
from fashion_search.core.settings import Settings
from fashion_search.rpc import search_pb2, search_pb2_grpc

SERVICE = "search"
T = TypeVar("T")


def product_to_proto(product: Product) -> search_pb2.Product:
    """Domain product to proto."""
    msg = search_pb2.Product(
        product_id=product.product_id, category=product.category, tags=list(product.tags), title=product.title,
        price=product.price, image_ref=product.image_ref, has_box=product.box is not None, revision=product.revision,
        embedder=product.embedder, brand=product.brand, in_stock=product.in_stock, attributes=product.attributes,
        images=list(product.images), photo=product.photo,
    )
    if product.box is not None:
        msg.box.CopyFrom(box_to_proto(product.box))
    return msg


def product_from_proto(msg: search_pb2.Product) -> Product:
    """Proto product to domain."""
    return Product(
        product_id=msg.product_id, category=msg.category, title=msg.title, price=msg.price,
        image_ref=msg.image_ref, tags=list(msg.tags), box=box_from_proto(msg.box) if msg.has_box else None,
        revision=msg.revision, embedder=msg.embedder, brand=msg.brand, in_stock=msg.in_stock,
        attributes=dict(msg.attributes), images=list(msg.images), photo=msg.photo,
    )


def filter_to_proto(f: SearchFilter | None) -> search_pb2.SearchFilter:
    """Domain search filter to proto (None: an empty filter)."""
    f = f or SearchFilter()
    return search_pb2.SearchFilter(
        categories=list(f.categories), min_price=f.min_price, max_price=f.max_price, brands=list(f.brands),
        in_stock=f.in_stock, tags=list(f.tags), exclude=list(f.exclude),
    )


def filter_from_proto(msg: search_pb2.SearchFilter) -> SearchFilter:
    """Proto search filter to domain (unset optional fields: no restriction)."""
    return SearchFilter(
        categories=tuple(msg.categories),
        min_price=msg.min_price if msg.HasField("min_price") else None,
        max_price=msg.max_price if msg.HasField("max_price") else None,
        brands=tuple(msg.brands), in_stock=msg.in_stock if msg.HasField("in_stock") else None,
        tags=tuple(msg.tags), exclude=tuple(msg.exclude),
    )


def fields_to_proto(product_id: str, fields: Mapping[str, object]) -> search_pb2.UpdateFieldsRequest:
    """A payload-only update as proto: the field names, and their values in a Product message."""
    unknown = sorted(set(fields) - set(EDITABLE_FIELDS))
    if unknown:  # the server would refuse it too; a Product message has no place for it
        raise ValueError(f"field {unknown[0]!r} cannot be updated; editable: {', '.join(EDITABLE_FIELDS)}")
    values = search_pb2.Product()
    for name, value in fields.items():
        if name in ("tags",):
            values.tags.extend(value)  # type: ignore[call-overload]
        elif name == "attributes":
            values.attributes.update(value)  # type: ignore[call-overload]
        else:
            setattr(values, name, value)
    return search_pb2.UpdateFieldsRequest(product_id=product_id, fields=list(fields), values=values)


def fields_from_proto(msg: search_pb2.UpdateFieldsRequest) -> dict[str, object]:
    """The fields a proto payload-only update names, with their values."""
    values = msg.values
    out: dict[str, object] = {}
    for name in msg.fields:
        if name == "tags":
            out[name] = list(values.tags)
        elif name == "attributes":
            out[name] = dict(values.attributes)
        elif name in EDITABLE_FIELDS:
            out[name] = getattr(values, name)
        else:
            raise ValueError(f"field {name!r} cannot be updated; editable: {', '.join(EDITABLE_FIELDS)}")
    return out


def _values(vector: np.ndarray | Sequence[float]) -> list[float]:
    return np.asarray(vector, dtype=np.float32).ravel().tolist()


def _upsert_request(
    items: Sequence[tuple[Product, Mapping[str, np.ndarray]]], if_unchanged: bool, rebuild: str = "",
) -> search_pb2.UpsertRequest:
    return search_pb2.UpsertRequest(
        points=[
            search_pb2.IndexedPoint(
                product=product_to_proto(product),
                vectors=[search_pb2.NamedVector(name=n, values=_values(v)) for n, v in vectors.items()],
            )
            for product, vectors in items
        ],
        if_unchanged=if_unchanged, rebuild=rebuild,
    )


def _search_request(query: SearchQuery) -> search_pb2.SearchRequest:
    return search_pb2.SearchRequest(
        vector=_values(query.vector), top_k=query.top_k, categories=list(query.categories or []),
        vector_name=query.vector_name, expand=query.expand, filter=filter_to_proto(query.filters),
        offset=query.offset, text=query.text or "", diversity=query.diversity,
    )


class RemoteIndex:
    """VectorIndex backed by the search service at url; outages raise ServiceUnavailable, bad input ValueError."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self._channel = make_channel(url, settings)
        self._stub = search_pb2_grpc.SearchStub(self._channel)

    def upsert(self, items: Sequence[tuple[Product, Mapping[str, np.ndarray]]]) -> int:
        """Insert or replace products on the server; returns how many were written."""
        if not items:
            return 0
        return int(self._call(self._stub.Upsert, _upsert_request(items, if_unchanged=False)).upserted)

    def replace_unchanged(self, items: Sequence[tuple[Product, Mapping[str, np.ndarray]]]) -> list[str]:
        """Replace products on the server only where unchanged since read; returns the ids left alone."""
        if not items:
            return []
        return list(self._call(self._stub.Upsert, _upsert_request(items, if_unchanged=True)).skipped)

    def search(
        self, vector: np.ndarray, top_k: int, vector_name: str = IMAGE_VECTOR,
        categories: Sequence[str] | None = None, expand: int = 0, *,
        filters: SearchFilter | None = None, offset: int = 0, text: str | None = None, diversity: float | None = None,
    ) -> list[Hit]:
        """The top_k nearest products from the server after offset, within filters and categories (and expanded),
        fused with text and diversified as asked."""
        request = _search_request(
            SearchQuery(vector, top_k, vector_name, categories, expand, filters, offset, text, diversity),
        )
        response = self._call(self._stub.Search, request)
        return [Hit(product_from_proto(h.product), float(h.score)) for h in response.hits]

    def search_batch(self, queries: Sequence[SearchQuery]) -> list[list[Hit]]:
        """Each query's hits from the server, in order, in one call."""
        if not queries:
            return []
        request = search_pb2.SearchBatchRequest(queries=[_search_request(q) for q in queries])
        response = self._call(self._stub.SearchBatch, request)
        if len(response.results) != len(queries):
            raise ServiceUnavailable(SERVICE, f"{len(response.results)} results for {len(queries)} queries")
        return [[Hit(product_from_proto(h.product), float(h.score)) for h in r.hits] for r in response.results]

    def get(self, product_id: str) -> Product | None:
        """The stored product, or None if the server does not know the id."""
        response = self._call(self._stub.Get, search_pb2.GetRequest(product_id=product_id))
        return product_from_proto(response.product) if response.found else None

    def vectors(self, product_id: str) -> dict[str, np.ndarray] | None:
        """The product's stored vectors from the server, or None if it does not know the id."""
        response = self._call(self._stub.Vectors, search_pb2.VectorsRequest(product_id=product_id))
        if not response.found:
            return None
        return {v.name: np.asarray(v.values, dtype=np.float32) for v in response.vectors}

    def update_fields(self, product_id: str, fields: Mapping[str, object]) -> Product | None:
        """Change catalog fields on the server without re-embedding; None if it does not know the id."""
        response = self._call(self._stub.UpdateFields, fields_to_proto(product_id, fields))
        return product_from_proto(response.product) if response.found else None

    def scroll(self, offset: str | None, limit: int) -> tuple[list[Product], str | None]:
        """One page of the server's products in point-id order, and the next page's offset (None after the last)."""
        response = self._call(self._stub.Scroll, search_pb2.ScrollRequest(offset=offset or "", limit=limit))
        return [product_from_proto(p) for p in response.products], response.next_offset or None

    def delete(self, product_ids: Sequence[str]) -> int:
        """Delete products by id; returns how many existed."""
        if not product_ids:
            return 0
        return int(self._call(self._stub.Delete, search_pb2.DeleteRequest(product_ids=list(product_ids))).deleted)

    def stats(self) -> IndexStats:
        """The server index's count, version, dim, backend, vector names, categories and products per embedder."""
        r = self._call(self._stub.Stats, search_pb2.StatsRequest())
        return IndexStats(r.count, r.version, r.dim, r.backend, list(r.vector_names), list(r.categories),
                          dict(r.embedders))

    @property
    def version(self) -> int:
        """The server index's write version."""
        return int(self._call(self._stub.Version, search_pb2.VersionRequest()).version)

    def begin_rebuild(self, dim: int, garment_dim: int | None = None) -> str:
        """Create a rebuild's new collection on the server beside the served one; its name."""
        request = search_pb2.BeginRebuildRequest(dim=dim, garment_dim=garment_dim or 0)
        return str(self._call(self._stub.BeginRebuild, request).rebuild)

    def rebuild_upsert(self, rebuild: str, items: Sequence[tuple[Product, Mapping[str, np.ndarray]]]) -> int:
        """Write products into the rebuild's collection on the server."""
        if not items:
            return 0
        return int(self._call(self._stub.Upsert, _upsert_request(items, False, rebuild)).upserted)

    def rebuild_delete(self, rebuild: str, product_ids: Sequence[str]) -> int:
        """Delete products from the rebuild's collection on the server."""
        if not product_ids:
            return 0
        request = search_pb2.DeleteRequest(product_ids=list(product_ids), rebuild=rebuild)
        return int(self._call(self._stub.Delete, request).deleted)

    def commit_rebuild(self, rebuild: str, expected_version: int) -> int | None:
        """Switch the server to the rebuild's collection if still at expected_version; the new version or None."""
        request = search_pb2.CommitRebuildRequest(rebuild=rebuild, expected_version=expected_version)
        response = self._call(self._stub.CommitRebuild, request)
        return int(response.version) if response.switched else None

    def abort_rebuild(self, rebuild: str) -> None:
        """Drop the rebuild's collection on the server."""
        self._call(self._stub.AbortRebuild, search_pb2.AbortRebuildRequest(rebuild=rebuild))

    def close(self) -> None:
        """Close the channel (the server's index stays open)."""
        self._channel.close()

    def optimize(self) -> bool:
        """No-op returning False: the server's index builds HNSW itself as upserts arrive (the API has no
        Optimize call), and a long blocking optimisation would outlast the client's call timeout anyway."""
        return False

    def __enter__(self) -> RemoteIndex:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: object) -> T:
        with rpc_errors(SERVICE):
            response = method(request, timeout=call_timeout(SERVICE, self.settings.grpc_timeout_s))
        return response
