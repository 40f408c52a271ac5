"""API keys, scopes and per-key rate limits on every route of the real app (real models, keys in Redis or a file)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from fashion_search.core.settings import Settings
from fashion_search.gateway.app import create_app
from fashion_search.gateway.auth import OPEN_PATHS, ScopeCheck, check_exposure
from fashion_search.gateway.keys import REDIS_HASH, SCOPES, ApiKeys
from fashion_search.pipeline.search_pipeline import SearchPipeline
from tests.conftest import TEST_REDIS, make_settings, model_pipeline

AUTH_DB = 9  # a Redis database of its own: keys and limiter windows are flushed per test


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = f"{TEST_REDIS}/{AUTH_DB}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).flushdb()
    except redis.RedisError:
        pytest.fail(f"Redis must run at {TEST_REDIS} (set FS_TEST_REDIS)")
    yield url
    redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, shared_models: dict) -> Iterator[SearchPipeline]:
    settings = make_settings(tmp_path_factory.mktemp("auth"))
    pipe = model_pipeline(settings, shared_models)
    yield pipe
    pipe.index.close()


def _settings(pipe: SearchPipeline, redis_url: str, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "auth_required": True, "api_key_store": "redis", "auth_secret": "test-secret", "redis_url": redis_url,
        "rate_limit_search": "1000/minute", "rate_limit_catalog": "1000/minute", "rate_limit_admin": "1000/minute",
    }
    return make_settings(pipe.settings.data_dir, **{**base, **overrides})


def api_routes(routes: list) -> Iterator[APIRoute]:
    """Every APIRoute, also those of included routers (FastAPI wraps them; their original router holds them)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from api_routes(included.routes)


def scoped_routes(app: object) -> list[tuple[APIRoute, str]]:
    """Every API route outside OPEN_PATHS with the scope its dependency asks for; each must ask for exactly one."""
    out = []
    for route in api_routes(app.routes):  # type: ignore[attr-defined]
        if route.path in OPEN_PATHS:
            continue
        scopes = [d.call.scope for d in route.dependant.dependencies if isinstance(d.call, ScopeCheck)]
        assert len(scopes) == 1, f"{route.methods} {route.path} must declare one scope, e.g. requires('search')"
        assert {401, 403, 429} <= set(route.responses), f"{route.path}: document them (responses=ACCESS)"
        out.append((route, scopes[0]))
    return out


def _call(client: TestClient, route: APIRoute, headers: dict[str, str]) -> int:
    path = re.sub(r"\{[^}]+\}", "p1", route.path)
    method = sorted(route.methods - {"HEAD"})[0]
    return client.request(method, path, headers=headers).status_code


def test_every_route_refuses_missing_wrong_revoked_and_out_of_scope_keys(
    pipeline: SearchPipeline, redis_url: str
) -> None:
    settings = _settings(pipeline, redis_url)
    keys = ApiKeys(settings)
    issued = {scope: keys.create([scope], f"only-{scope}")[0] for scope in SCOPES}
    revoked, _ = keys.create(list(SCOPES), "gone")
    keys.revoke("gone")
    app = create_app(settings, pipeline)
    routes = scoped_routes(app)
    assert {p for r, _ in routes for p in [r.path]} >= {"/v1/search", "/v1/products", "/v1/stats", "/metrics"}
    with TestClient(app) as client:
        for route, scope in routes:
            where = f"{sorted(route.methods)} {route.path}"
            resp = client.request(sorted(route.methods)[0], re.sub(r"\{[^}]+\}", "p1", route.path))
            assert resp.status_code == 401 and "missing API key" in resp.json()["detail"], where
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            wrong = client.request(sorted(route.methods)[0], re.sub(r"\{[^}]+\}", "p1", route.path),
                                   headers={"Authorization": "Bearer fsk_not-a-key"})
            assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key", where
            gone = client.request(sorted(route.methods)[0], re.sub(r"\{[^}]+\}", "p1", route.path),
                                  headers={"X-API-Key": revoked})
            assert gone.status_code == 401 and "was revoked" in gone.json()["detail"], where
            for other in SCOPES:
                if other in (scope, "admin"):
                    continue
                resp = client.request(sorted(route.methods)[0], re.sub(r"\{[^}]+\}", "p1", route.path),
                                      headers={"Authorization": f"Bearer {issued[other]}"})
                assert resp.status_code == 403, (where, other)
                assert f"lacks the '{scope}' scope" in resp.json()["detail"], where
            # The right scope (and admin, which holds every scope) gets past access control.
            for good in {scope, "admin"}:
                status = _call(client, route, {"Authorization": f"Bearer {issued[good]}"})
                assert status not in (401, 403), (where, good, status)
        for open_path in ("/healthz", "/readyz"):
            assert client.get(open_path).status_code in (200, 503)  # answered, never asked for a key


def test_keys_are_stored_hashed_and_revocation_takes_effect_at_once(pipeline: SearchPipeline, redis_url: str) -> None:
    settings = _settings(pipeline, redis_url)
    keys = ApiKeys(settings)
    key, _ = keys.create(["search"], "shop-frontend")
    stored = redis.Redis.from_url(redis_url).hgetall(REDIS_HASH)
    assert len(stored) == 1 and key.encode() not in b"".join([*stored.keys(), *stored.values()])
    with TestClient(create_app(settings, pipeline)) as client:
        ok = client.get("/v1/stats", headers={"X-API-Key": key})
        assert ok.status_code == 200 and ok.headers["RateLimit-Limit"] == "1000" and ok.headers["X-Request-ID"]
        ApiKeys(settings).revoke(key)  # another process (the CLI) revoking it
        assert client.get("/v1/stats", headers={"X-API-Key": key}).status_code == 401


def test_auth_off_serves_without_keys(pipeline: SearchPipeline, redis_url: str) -> None:
    settings = _settings(pipeline, redis_url, auth_required=False)
    with TestClient(create_app(settings, pipeline)) as client:
        assert client.get("/v1/stats").status_code == 200


def test_limiter_holds_under_concurrent_requests_from_two_keys(pipeline: SearchPipeline, redis_url: str) -> None:
    """Two keys fire 3× their limit at once from 12 threads: each gets exactly its limit through, the rest 429."""
    limit = 8
    settings = _settings(pipeline, redis_url, rate_limit_search=f"{limit}/minute")
    keys = ApiKeys(settings)
    a, _ = keys.create(["search"], "a")
    b, _ = keys.create(["search"], "b")
    results: Counter[tuple[str, int]] = Counter()
    retry_after: list[str] = []
    lock = threading.Lock()
    with TestClient(create_app(settings, pipeline)) as client:
        def fire(key: str, n: int) -> None:
            for _ in range(n):
                resp = client.get("/v1/stats", headers={"Authorization": f"Bearer {key}"})
                with lock:
                    results[(key, resp.status_code)] += 1
                    if resp.status_code == 429:
                        retry_after.append(resp.headers["Retry-After"])
                        assert resp.headers["RateLimit-Remaining"] == "0"
                        assert "rate limit" in resp.json()["detail"]

        threads = [threading.Thread(target=fire, args=(k, limit // 2)) for k in (a, b) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    for key in (a, b):
        assert results[(key, 200)] == limit, results
        assert results[(key, 429)] == 2 * limit, results
    assert retry_after and all(1 <= int(s) <= 60 for s in retry_after)


def test_open_bind_without_auth_refuses_unless_intended(tmp_path: Path) -> None:
    assert "auth is OFF" in check_exposure(make_settings(tmp_path, bind_host="127.0.0.1"))
    with pytest.raises(SystemExit, match=r"refusing to serve without API keys on 0\.0\.0\.0"):
        check_exposure(make_settings(tmp_path, bind_host="0.0.0.0"))
    assert "auth is OFF" in check_exposure(make_settings(tmp_path, bind_host="0.0.0.0", allow_open_bind=True))
    assert "API keys required" in check_exposure(make_settings(tmp_path, bind_host="0.0.0.0", auth_required=True))


def test_the_page_carries_a_live_search_only_key_and_nothing_else(pipeline: SearchPipeline, redis_url: str) -> None:
    keys = ApiKeys(_settings(pipeline, redis_url))
    page_key, _ = keys.create(["search"], "page")
    writer, _ = keys.create(["search", "catalog"], "writer")
    revoked, _ = keys.create(["search"], "old-page")
    keys.revoke(revoked)
    for bad, why in ((writer, "search scope alone"), (revoked, "not a live key"), ("fs_unknown", "not a live key")):
        with pytest.raises(SystemExit, match=why):
            check_exposure(_settings(pipeline, redis_url, page_api_key=bad))
    settings = _settings(pipeline, redis_url, page_api_key=page_key)
    assert "the search page sends FS_PAGE_API_KEY" in check_exposure(settings)
    with TestClient(create_app(settings, pipeline)) as client:
        page = client.get("/").text
        (sent,) = re.findall(r'<meta name="fs-api-key" content="([^"]*)">', page)
        assert sent == page_key
        assert client.get("/v1/stats", headers={"X-API-Key": sent}).status_code == 200
    with TestClient(create_app(_settings(pipeline, redis_url), pipeline)) as client:  # no page key: none on the page
        assert re.findall(r'<meta name="fs-api-key" content="([^"]*)">', client.get("/").text) == [""]


def test_keys_cli_create_list_revoke_with_the_file_store(tmp_path: Path) -> None:
    env = {"FS_DATA_DIR": str(tmp_path), "FS_API_KEY_STORE": "file", "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fashion_search.cli", "keys", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    made = cli("create", "--scope", "catalog", "--name", "ingest-bot")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("fsk_") and len(key) > 40
    assert key not in (tmp_path / "auth" / "keys.json").read_text()
    assert cli("create", "--scope", "catalog", "--name", "ingest-bot").returncode == 2  # live name taken
    assert cli("create", "--scope", "root").returncode == 2
    listed = cli("list").stdout
    assert "ingest-bot\tcatalog" in listed and "active" in listed and key not in listed
    settings = make_settings(tmp_path, api_key_store="file")
    assert ApiKeys(settings).lookup(key) is not None  # the secret kept under the data dir is reused
    assert cli("revoke", key).returncode == 0
    assert "revoked" in cli("list").stdout.splitlines()[0]
    assert ApiKeys(settings).lookup(key).revoked is not None  # type: ignore[union-attr]
    assert cli("revoke", "no-such-key").returncode == 2
