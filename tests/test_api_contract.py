"""The HTTP API against its own OpenAPI schema: schemathesis sends generated valid and invalid requests to every
operation of the gateway (embedded pipeline, real models), and every answer must be a documented status with a body
that fits its schema; never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from fashion_search.core.catalog import CatalogRecord
from fashion_search.gateway.app import create_app
from fashion_search.gateway.keys import ApiKeys
from fashion_search.pipeline.ingest import Ingestor
from tests.conftest import TEST_REDIS, make_settings, model_pipeline

CONTRACT_DB = 8  # the queue and job store of the ingest routes under test


@pytest.fixture(scope="module")
def api_schema(
    tmp_path_factory: pytest.TempPathFactory, shared_models: dict, small_records: list[CatalogRecord]
) -> Iterator[tuple[schemathesis.BaseSchema, str]]:
    # Keys required (file store; limiter in memory, limits far above the examples): schemathesis sends the admin
    # key below with every request and checks that the same request without it is refused. A queue of its own (a
    # Redis database flushed after), so the ingest job routes answer instead of 503.
    queue = f"{TEST_REDIS}/{CONTRACT_DB}"
    redis.Redis.from_url(queue).flushdb()
    settings = make_settings(
        tmp_path_factory.mktemp("contract"), auth_required=True, api_key_store="file",
        rate_limit_storage_url="memory://", rate_limit_admin="100000/minute", broker_url=queue, redis_url=queue,
    )
    pipe = model_pipeline(settings, shared_models)
    Ingestor(pipe, settings).ingest_records(small_records[:4])
    key, _ = ApiKeys(settings).create(["admin"], "contract")
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, pipe)), key
    pipe.index.close()
    redis.Redis.from_url(queue).flushdb()


# Both kinds: requests that fit the schema and requests that break it (wrong types, missing fields, bad ids).
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def test_every_answer_is_documented_and_no_request_breaks_the_gateway(
    api_schema: tuple[schemathesis.BaseSchema, str],
) -> None:
    api_schema, key = api_schema
    # The strategy inside the test, not @schema.parametrize: its lazy fixture loader breaks on pytest 9.2.
    @given(case=st.one_of(*(api_schema.as_strategy(mode) for mode in MODES)))
    @settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        # A multipart "image" field cannot say "must decode as an image" in JSON Schema, so random bytes that fit
        # the schema are rightly refused (400).
        case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, excluded_checks=[positive_data_acceptance])

    check()
