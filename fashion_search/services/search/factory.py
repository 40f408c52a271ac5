"""Builds the configured VectorIndex: the remote search service, Qdrant Edge, or qdrant-client."""

from __future__ import annotations

from fashion_search.core.domain import GARMENT_VECTOR, IMAGE_VECTOR, VectorIndex
from fashion_search.core.garment_colour import garment_vector_dim
from fashion_search.core.settings import Settings


def make_index(settings: Settings, dim: int) -> VectorIndex:
    """RemoteIndex if settings.search_url is set (dim unused), else the local index of index_backend."""
    if settings.search_url:
        from fashion_search.services.search.client import RemoteIndex

        return RemoteIndex(settings.search_url, settings)
    return make_local_index(settings, dim)


def make_local_index(settings: Settings, dim: int) -> VectorIndex:
    """The index this process owns: "edge" → EdgeIndex at index_path; "qdrant" → server URL or local dir.

    dim is the embedder's; fine mode's garment vectors carry the garment colour histogram when its weight is set.
    """
    garment_dim = garment_vector_dim(settings, dim)
    if settings.index_backend == "edge":
        from fashion_search.services.search.edge_index import EdgeIndex

        return EdgeIndex(settings, dim, settings.index_path, garment_dim=garment_dim)
    from fashion_search.services.search.qdrant_index import QdrantServerIndex, default_location

    return QdrantServerIndex(settings, dim, default_location(settings), garment_dim=garment_dim)


def stored_dim(settings: Settings) -> int | None:
    """The vector dim of the configured local index if it already exists, without loading any model."""
    if settings.index_backend == "edge":
        from fashion_search.services.search import edge_index

        return edge_index.stored_dim(settings.index_path)
    from fashion_search.services.search import qdrant_index

    return qdrant_index.stored_dim(settings)


def make_stored_index(settings: Settings, dim: int) -> VectorIndex:
    """Like make_index, but a local index that exists opens with the dims it was built with, even when the
    configured models make others (a rebuild reads it with the old dims and builds the new collection beside it)."""
    if settings.search_url:
        return make_index(settings, dim)
    if settings.index_backend == "edge":
        from fashion_search.services.search.edge_index import EdgeIndex, read_meta
        from fashion_search.services.search.points import stored_sizes

        meta = read_meta(settings.index_path)
        if meta is None:
            return make_local_index(settings, dim)
        sizes = stored_sizes(meta)
        return EdgeIndex(settings, sizes[IMAGE_VECTOR], settings.index_path, garment_dim=sizes[GARMENT_VECTOR])
    from fashion_search.services.search import qdrant_index

    location = qdrant_index.default_location(settings)
    stored = qdrant_index.stored_dim(settings, location)
    if stored is None:
        return make_local_index(settings, dim)
    return qdrant_index.QdrantServerIndex(
        settings, stored, location, garment_dim=qdrant_index.stored_garment_dim(settings, location),
    )
