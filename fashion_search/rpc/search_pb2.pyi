from fashion_search.rpc import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Product(_message.Message):
    __slots__ = ("product_id", "category", "tags", "title", "price", "image_ref", "box", "has_box", "revision", "embedder", "brand", "in_stock", "attributes", "images", "photo")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    HAS_BOX_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    category: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    title: str
    price: float
    image_ref: str
    box: _common_pb2.Box
    has_box: bool
    revision: str
    embedder: str
    brand: str
    in_stock: bool
    attributes: _containers.ScalarMap[str, str]
    images: _containers.RepeatedScalarFieldContainer[str]
    photo: int
    def __init__(self, product_id: _Optional[str] = ..., category: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., title: _Optional[str] = ..., price: _Optional[float] = ..., image_ref: _Optional[str] = ..., box: _Optional[_Union[_common_pb2.Box, _Mapping]] = ..., has_box: bool = ..., revision: _Optional[str] = ..., embedder: _Optional[str] = ..., brand: _Optional[str] = ..., in_stock: bool = ..., attributes: _Optional[_Mapping[str, str]] = ..., images: _Optional[_Iterable[str]] = ..., photo: _Optional[int] = ...) -> None: ...

class NamedVector(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class IndexedPoint(_message.Message):
    __slots__ = ("product", "vectors")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    product: Product
    vectors: _containers.RepeatedCompositeFieldContainer[NamedVector]
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ..., vectors: _Optional[_Iterable[_Union[NamedVector, _Mapping]]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("points", "if_unchanged", "rebuild")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    IF_UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    REBUILD_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[IndexedPoint]
    if_unchanged: bool
    rebuild: str
    def __init__(self, points: _Optional[_Iterable[_Union[IndexedPoint, _Mapping]]] = ..., if_unchanged: bool = ..., rebuild: _Optional[str] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("upserted", "version", "skipped")
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    version: int
    skipped: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, upserted: _Optional[int] = ..., version: _Optional[int] = ..., skipped: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("vector", "top_k", "categories", "vector_name", "expand", "filter", "offset", "text", "diversity")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    VECTOR_NAME_FIELD_NUMBER: _ClassVar[int]
    EXPAND_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    vector: _containers.RepeatedScalarFieldContainer[float]
    top_k: int
    categories: _containers.RepeatedScalarFieldContainer[str]
    vector_name: str
    expand: int
    filter: SearchFilter
    offset: int
    text: str
    diversity: float
    def __init__(self, vector: _Optional[_Iterable[float]] = ..., top_k: _Optional[int] = ..., categories: _Optional[_Iterable[str]] = ..., vector_name: _Optional[str] = ..., expand: _Optional[int] = ..., filter: _Optional[_Union[SearchFilter, _Mapping]] = ..., offset: _Optional[int] = ..., text: _Optional[str] = ..., diversity: _Optional[float] = ...) -> None: ...

class SearchFilter(_message.Message):
    __slots__ = ("categories", "min_price", "max_price", "brands", "in_stock", "tags", "exclude")
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    MIN_PRICE_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_FIELD_NUMBER: _ClassVar[int]
    BRANDS_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.RepeatedScalarFieldContainer[str]
    min_price: float
    max_price: float
    brands: _containers.RepeatedScalarFieldContainer[str]
    in_stock: bool
    tags: _containers.RepeatedScalarFieldContainer[str]
    exclude: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, categories: _Optional[_Iterable[str]] = ..., min_price: _Optional[float] = ..., max_price: _Optional[float] = ..., brands: _Optional[_Iterable[str]] = ..., in_stock: bool = ..., tags: _Optional[_Iterable[str]] = ..., exclude: _Optional[_Iterable[str]] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("product", "score")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    product: Product
    score: float
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ...) -> None: ...

class SearchBatchRequest(_message.Message):
    __slots__ = ("queries",)
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[SearchRequest]
    def __init__(self, queries: _Optional[_Iterable[_Union[SearchRequest, _Mapping]]] = ...) -> None: ...

class SearchBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResponse, _Mapping]]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("product_id",)
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    def __init__(self, product_id: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("found", "product")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    found: bool
    product: Product
    def __init__(self, found: bool = ..., product: _Optional[_Union[Product, _Mapping]] = ...) -> None: ...

class VectorsRequest(_message.Message):
    __slots__ = ("product_id",)
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    def __init__(self, product_id: _Optional[str] = ...) -> None: ...

class VectorsResponse(_message.Message):
    __slots__ = ("found", "vectors")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    found: bool
    vectors: _containers.RepeatedCompositeFieldContainer[NamedVector]
    def __init__(self, found: bool = ..., vectors: _Optional[_Iterable[_Union[NamedVector, _Mapping]]] = ...) -> None: ...

class UpdateFieldsRequest(_message.Message):
    __slots__ = ("product_id", "fields", "values")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    fields: _containers.RepeatedScalarFieldContainer[str]
    values: Product
    def __init__(self, product_id: _Optional[str] = ..., fields: _Optional[_Iterable[str]] = ..., values: _Optional[_Union[Product, _Mapping]] = ...) -> None: ...

class UpdateFieldsResponse(_message.Message):
    __slots__ = ("found", "product", "version")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    found: bool
    product: Product
    version: int
    def __init__(self, found: bool = ..., product: _Optional[_Union[Product, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("product_ids", "rebuild")
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    REBUILD_FIELD_NUMBER: _ClassVar[int]
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    rebuild: str
    def __init__(self, product_ids: _Optional[_Iterable[str]] = ..., rebuild: _Optional[str] = ...) -> None: ...

class BeginRebuildRequest(_message.Message):
    __slots__ = ("dim", "garment_dim")
    DIM_FIELD_NUMBER: _ClassVar[int]
    GARMENT_DIM_FIELD_NUMBER: _ClassVar[int]
    dim: int
    garment_dim: int
    def __init__(self, dim: _Optional[int] = ..., garment_dim: _Optional[int] = ...) -> None: ...

class BeginRebuildResponse(_message.Message):
    __slots__ = ("rebuild",)
    REBUILD_FIELD_NUMBER: _ClassVar[int]
    rebuild: str
    def __init__(self, rebuild: _Optional[str] = ...) -> None: ...

class CommitRebuildRequest(_message.Message):
    __slots__ = ("rebuild", "expected_version")
    REBUILD_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    rebuild: str
    expected_version: int
    def __init__(self, rebuild: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class CommitRebuildResponse(_message.Message):
    __slots__ = ("switched", "version")
    SWITCHED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    switched: bool
    version: int
    def __init__(self, switched: bool = ..., version: _Optional[int] = ...) -> None: ...

class AbortRebuildRequest(_message.Message):
    __slots__ = ("rebuild",)
    REBUILD_FIELD_NUMBER: _ClassVar[int]
    rebuild: str
    def __init__(self, rebuild: _Optional[str] = ...) -> None: ...

class AbortRebuildResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted", "version")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    version: int
    def __init__(self, deleted: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class ScrollRequest(_message.Message):
    __slots__ = ("offset", "limit")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    offset: str
    limit: int
    def __init__(self, offset: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ScrollResponse(_message.Message):
    __slots__ = ("products", "next_offset")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[Product]
    next_offset: str
    def __init__(self, products: _Optional[_Iterable[_Union[Product, _Mapping]]] = ..., next_offset: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("count", "version", "dim", "backend", "vector_names", "categories", "embedders")
    class EmbeddersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    COUNT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    VECTOR_NAMES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDERS_FIELD_NUMBER: _ClassVar[int]
    count: int
    version: int
    dim: int
    backend: str
    vector_names: _containers.RepeatedScalarFieldContainer[str]
    categories: _containers.RepeatedScalarFieldContainer[str]
    embedders: _containers.ScalarMap[str, int]
    def __init__(self, count: _Optional[int] = ..., version: _Optional[int] = ..., dim: _Optional[int] = ..., backend: _Optional[str] = ..., vector_names: _Optional[_Iterable[str]] = ..., categories: _Optional[_Iterable[str]] = ..., embedders: _Optional[_Mapping[str, int]] = ...) -> None: ...

class VersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...
