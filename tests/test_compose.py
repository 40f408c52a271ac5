"""docker-compose.yml, the Dockerfile and the search page agree with the CLI and the Settings."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from fashion_search.cli.parser import SERVE_TARGETS
from fashion_search.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PAGE = ROOT / "fashion_search" / "gateway" / "static" / "index.html"

GRPC_SERVICES = ("detector", "segmenter", "embedder", "image-embedder", "search")
MODEL_SERVICES = ("detector", "segmenter", "embedder", "image-embedder")
FS_VAR = re.compile(r"\bFS_[A-Z0-9_]+\b")
DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")
CLUSTER_ENV = ROOT / "deploy" / "compose" / "qdrant-cluster.env"
CLUSTER_NODES = ("qdrant-node-0", "qdrant-node-1", "qdrant-node-2")


def setting(service: str) -> str:
    """A service's name as Settings spells it, e.g. image-embedder -> image_embedder."""
    return service.replace("-", "_")


def default_port(service: str) -> int:
    """The Settings default port of a service, e.g. detector -> detector_port."""
    return int(Settings.model_fields[f"{setting(service)}_port"].default)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml parsed, YAML anchors and merge keys resolved."""
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services section."""
    return compose["services"]


@pytest.fixture(scope="module")
def app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services that run the project's image (their command starts with fashion-search)."""
    return {
        name: svc for name, svc in services.items()
        if isinstance(svc.get("command"), list) and svc["command"][:1] == ["fashion-search"]
    }


def environment(svc: dict[str, Any], variables: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment as a dict (a mapping or a KEY=VALUE list), each `${VAR:-default}` as compose runs
    it: VAR from variables (an env file) if set there, else the default."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    given = variables or {}
    return {
        str(k): DEFAULTED.sub(lambda m: given.get(m.group(1), m.group(2)), "" if v is None else str(v))
        for k, v in env.items()
    }


def healthcheck_text(svc: dict[str, Any]) -> str:
    """The healthcheck test as one string."""
    test = svc["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def test_every_app_service_serves_one_target(
    services: dict[str, dict[str, Any]], app_services: dict[str, dict[str, Any]]
) -> None:
    """Each app service runs `fashion-search serve <target>`, each target exactly once, named after it."""
    targets = []
    for name, svc in app_services.items():
        command = svc["command"]
        assert command[:3] == ["fashion-search", "serve", command[2]] and len(command) == 3, (name, command)
        assert command[2] in SERVE_TARGETS, (name, command)
        assert command[2] == name, f"service {name} serves {command[2]}"
        assert "build" in svc, f"{name} is not built from the Dockerfile"
        targets.append(command[2])
    assert sorted(targets) == sorted(SERVE_TARGETS)
    assert set(services) - set(app_services) >= {"qdrant", "redis"}


def test_every_fs_variable_is_a_setting() -> None:
    """Every FS_* name anywhere in the compose file is a field of Settings."""
    names = set(FS_VAR.findall(COMPOSE.read_text()))
    assert names, "no FS_* variables found"
    unknown = sorted(n for n in names if n.removeprefix("FS_").lower() not in Settings.model_fields)
    assert not unknown, f"not Settings fields: {unknown}"


def test_app_services_bind_all_interfaces(app_services: dict[str, dict[str, Any]]) -> None:
    """Inside a container, 127.0.0.1 (the Settings default) is unreachable from other services."""
    for name, svc in app_services.items():
        assert environment(svc).get("FS_BIND_HOST") == "0.0.0.0", name


@pytest.mark.parametrize("service", GRPC_SERVICES)
def test_grpc_ports_match_settings(services: dict[str, dict[str, Any]], service: str) -> None:
    """A gRPC service's port env, expose and healthcheck all use its Settings default port."""
    port = default_port(service)
    svc = services[service]
    env = environment(svc)
    key = f"FS_{setting(service).upper()}_PORT"
    if key in env:
        assert int(env[key]) == port, (service, env[key])
    assert str(port) in [str(p) for p in svc.get("expose", [])], (service, svc.get("expose"))
    assert f"grpc://127.0.0.1:{port}" in healthcheck_text(svc), service


def test_service_urls_point_at_the_right_port(services: dict[str, dict[str, Any]]) -> None:
    """FS_<SERVICE>_URL is `<service>:<its port>` wherever it is set; the gateway and worker set all."""
    seen = set()
    for name, svc in services.items():
        for key, value in environment(svc).items():
            m = re.fullmatch(r"FS_([A-Z_]+)_URL", key)
            if m and m.group(1).lower().replace("_", "-") in GRPC_SERVICES:
                target = m.group(1).lower().replace("_", "-")
                assert value.removeprefix("grpc://") == f"{target}:{default_port(target)}", (name, key, value)
                seen.add((name, target))
    for client in ("gateway", "worker"):
        for target in GRPC_SERVICES:
            assert (client, target) in seen, f"{client} lacks FS_{setting(target).upper()}_URL"


def test_network_urls_name_real_services(services: dict[str, dict[str, Any]]) -> None:
    """Every scheme://host URL in an FS_* variable names a service of this file."""
    checked = 0
    for name, svc in services.items():
        for key, value in environment(svc).items():
            if key.startswith("FS_") and "://" in value:
                assert urlsplit(value).hostname in services, (name, key, value)
                checked += 1
    assert checked


def test_search_uses_qdrant(services: dict[str, dict[str, Any]]) -> None:
    """The search service runs the qdrant backend against the qdrant service, after it is healthy."""
    env = environment(services["search"])
    assert env["FS_INDEX_BACKEND"] == "qdrant"
    assert urlsplit(env["FS_QDRANT_URL"]).hostname == "qdrant"
    assert services["search"]["depends_on"]["qdrant"]["condition"] == "service_healthy"


def test_qdrant_image_is_pinned_to_the_client_minor(services: dict[str, dict[str, Any]]) -> None:
    """The qdrant image defaults to a fixed release (never `latest`) of the installed qdrant-client's minor."""
    image = services["qdrant"]["image"]
    # `${QDRANT_TAG:-v1.2.3}`: what compose runs when QDRANT_TAG is unset.
    tag = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", image).rsplit(":", 1)[-1]
    assert tag and tag != "latest", image
    pinned = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", tag)
    assert pinned, f"qdrant image tag {tag!r} is not a release such as v1.15.3"
    client = version("qdrant-client").split(".")
    assert pinned.groups()[:2] == tuple(client[:2]), f"qdrant {tag} vs qdrant-client {version('qdrant-client')}"


def test_worker_uses_the_redis_broker(services: dict[str, dict[str, Any]]) -> None:
    """The worker and gateway share the Celery broker on the redis service."""
    for name in ("worker", "gateway"):
        env = environment(services[name])
        assert urlsplit(env["FS_BROKER_URL"]).hostname == "redis", name
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    """Docker can tell when each service is ready."""
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert not svc["healthcheck"].get("disable"), name


def test_depends_on_waits_for_health(services: dict[str, dict[str, Any]]) -> None:
    """Every depends_on entry names a service and uses a condition."""
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, spec in deps.items():
            assert dep in services, (name, dep)
            assert spec["condition"] in ("service_healthy", "service_started"), (name, dep)


@pytest.mark.parametrize("service", MODEL_SERVICES)
def test_model_services_reserve_a_gpu(services: dict[str, dict[str, Any]], service: str) -> None:
    """Model services reserve an NVIDIA GPU and have their own replica count."""
    deploy = services[service]["deploy"]
    devices = deploy["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), service
    assert "replicas" in deploy, service


def test_gateway_publishes_its_port(services: dict[str, dict[str, Any]]) -> None:
    """The gateway is reachable from outside on its Settings port, and its health check hits /healthz."""
    port = default_port("gateway")
    gateway = services["gateway"]
    published = [str(p).rsplit(":", 1)[-1].split("/")[0] for p in gateway.get("ports", [])]
    assert str(port) in published, gateway.get("ports")
    assert f"http://127.0.0.1:{port}/healthz" in healthcheck_text(gateway)


def test_gateway_and_worker_share_the_data_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """Product images stored by the gateway are visible to the worker under FS_DATA_DIR."""
    mounts = {}
    for name in ("gateway", "worker"):
        env = environment(services[name])
        data_dir = env.get("FS_DATA_DIR")
        assert data_dir, name
        vols = [v.split(":") for v in services[name].get("volumes", []) if isinstance(v, str)]
        mounts[name] = {src for src, dst, *_ in vols if dst == data_dir}
        assert mounts[name], f"{name} mounts nothing at {data_dir}"
    shared = mounts["gateway"] & mounts["worker"]
    assert shared and shared <= set(compose.get("volumes") or {}), mounts


def test_dockerfile_pins_torch() -> None:
    """The image installs the pinned torch (the same pin as pyproject) from a selectable wheel index."""
    text = "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#"))
    pyproject = (ROOT / "pyproject.toml").read_text()
    pin = re.search(r'"torch==([\w.]+)"', pyproject)
    assert pin, "pyproject.toml does not pin torch"
    version = pin.group(1)
    pinned_literal = f"torch=={version}" in text
    arg = re.search(rf"^ARG TORCH_VERSION={re.escape(version)}$", text, re.M)
    pinned_arg = "torch==${TORCH_VERSION}" in text and arg is not None
    assert pinned_literal or pinned_arg, f"the Dockerfile does not install torch=={version}"
    assert "--index-url" in text and "ARG TORCH_INDEX_URL" in text
    assert text.index("torch==") < text.index("pip install ."), "torch must be installed before the package"
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert re.search(r"^USER (?!root)\S+", text, re.M), "runs as root"
    assert not re.search(r"^ENTRYPOINT", text, re.M), "an ENTRYPOINT breaks compose `command`"
    assert (ROOT / ".dockerignore").is_file()


def test_dockerignore_keeps_context_small() -> None:
    """The venv, data and git history stay out of the build context."""
    lines = {line.strip().strip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", "data", ".git"} <= lines


def test_search_page_uses_the_api() -> None:
    """The page exists, calls both endpoints and loads nothing from outside."""
    text = PAGE.read_text()
    assert "/v1/search" in text and "/v1/stats" in text
    assert not re.search(r"""(src|href)=["']https?://""", text), "the page must not load external assets"
    assert "@import" not in text


def test_the_image_embedder_runs_by_default_and_can_be_scaled_away(services: dict[str, dict[str, Any]]) -> None:
    """Image vectors come from their own model by default, so its service runs without a profile; under "same" it is
    scaled to 0, so no one insists on it."""
    default = Settings.model_fields["image_embedder_model"].default
    assert default != "same" and "profiles" not in services["image-embedder"]
    for name, svc in services.items():
        spec = (svc.get("depends_on") or {}).get("image-embedder")
        assert spec is None or spec.get("required") is False, name
        if name in ("gateway", "worker", "image-embedder"):
            assert environment(svc)["FS_IMAGE_EMBEDDER_MODEL"] == default, name


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose env file (comments and blank lines skipped)."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return dict(ln.split("=", 1) for ln in lines if ln and not ln.startswith("#"))


def test_cluster_profile_describes_a_three_node_qdrant_cluster(services: dict[str, dict[str, Any]]) -> None:
    """The cluster profile: three Qdrant nodes in distributed mode, node 0 starts the cluster and the others join it
    through its p2p port, each with its own storage volume, healthcheck and the pinned image."""
    nodes = {name: svc for name, svc in services.items() if "cluster" in (svc.get("profiles") or [])}
    assert sorted(nodes) == list(CLUSTER_NODES)
    p2p = {}
    for name, svc in nodes.items():
        env = environment(svc)
        assert env["QDRANT__CLUSTER__ENABLED"] == "true", name
        p2p[name] = env["QDRANT__CLUSTER__P2P__PORT"]
        assert p2p[name] in [str(p) for p in svc["expose"]] and "6333" in [str(p) for p in svc["expose"]], name
        assert svc["image"] == services["qdrant"]["image"], name
        assert "/readyz" in healthcheck_text(svc), name
        command = svc["command"]
        assert command[command.index("--uri") + 1] == f"http://{name}:{p2p[name]}", name
    assert "--bootstrap" not in nodes["qdrant-node-0"]["command"]
    for name in CLUSTER_NODES[1:]:
        command = nodes[name]["command"]
        assert command[command.index("--bootstrap") + 1] == f"http://qdrant-node-0:{p2p['qdrant-node-0']}", name
        assert nodes[name]["depends_on"]["qdrant-node-0"]["condition"] == "service_healthy", name
    storage = [svc["volumes"][0].split(":")[0] for svc in nodes.values()]
    assert len(set(storage)) == len(CLUSTER_NODES) and services["qdrant"]["volumes"][0].split(":")[0] not in storage


def test_cluster_env_points_the_search_service_at_the_cluster(services: dict[str, dict[str, Any]]) -> None:
    """With the cluster env file the single server scales to 0 and the search service reaches a cluster node with a
    shard layout the three nodes can hold; without it, one server with one shard and one copy."""
    variables = env_file(CLUSTER_ENV)
    search = services["search"]
    single, cluster = environment(search), environment(search, variables)
    layout = ("FS_QDRANT_SHARD_NUMBER", "FS_QDRANT_REPLICATION_FACTOR", "FS_QDRANT_WRITE_CONSISTENCY")
    for key in layout:
        assert key.removeprefix("FS_").lower() in Settings.model_fields, key
        assert single[key] == "1", key
    assert urlsplit(single["FS_QDRANT_URL"]).hostname == "qdrant"
    assert urlsplit(cluster["FS_QDRANT_URL"]).hostname in CLUSTER_NODES
    shards, replicas, consistency = (int(cluster[key]) for key in layout)
    assert shards >= len(CLUSTER_NODES) and 2 <= replicas <= len(CLUSTER_NODES) and 1 <= consistency <= replicas
    # Settings accepts the values as the search service would read them.
    Settings(**{key.removeprefix("FS_").lower(): cluster[key] for key in layout})  # type: ignore[arg-type]
    replicas_of_single = DEFAULTED.sub(
        lambda m: variables.get(m.group(1), m.group(2)), str(services["qdrant"]["deploy"]["replicas"]),
    )
    assert replicas_of_single == "0"
    for node in CLUSTER_NODES:
        assert search["depends_on"][node] == {"condition": "service_healthy", "required": False}
    assert search["depends_on"]["qdrant"]["required"] is False
