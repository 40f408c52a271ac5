"""The Kustomize overlays render (kubectl kustomize), validate against the Kubernetes schemas (kubernetes-validate,
offline) and agree with the CLI and the Settings: ports, probes, env, GPUs, autoscaling, budgets, network policies."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fashion_search.cli.parser import SERVE_TARGETS
from fashion_search.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu")
K8S_VERSION = "1.32.0"  # the schemas checked against: the version kubectl here (and the clusters we target) run
GRPC_SERVICES = ("detector", "segmenter", "embedder", "image-embedder", "search")
MODEL_SERVICES = ("detector", "segmenter", "embedder", "image-embedder")
FS_VAR = re.compile(r"\bFS_[A-Z0-9_]+\b")


def field(service: str) -> str:
    """A service's name as Settings spells it: image-embedder -> image_embedder."""
    return service.replace("-", "_")


def default(name: str) -> Any:
    return Settings.model_fields[name].default


def render(overlay: str) -> list[dict[str, Any]]:
    """The overlay's manifests, as kubectl renders them."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl (with its built-in kustomize) is needed to render the manifests")
    out = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZE / "overlays" / overlay)], capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    return containers[0]


def environment(docs: list[dict[str, Any]], workload: dict[str, Any]) -> dict[str, str]:
    """A container's environment: its ConfigMaps (envFrom) overlaid by its own env values."""
    maps = by_kind(docs, "ConfigMap")
    c = container(workload)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]]["data"])
    env.update({e["name"]: e.get("value", "<from secret>") for e in c.get("env", [])})
    return env


def ports(workload: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(workload).get("ports", [])}


def test_every_document_validates_against_the_kubernetes_schemas(overlay: tuple[str, list]) -> None:
    name, docs = overlay
    assert len(docs) > 30
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_one_deployment_per_serve_target(overlay: tuple[str, list]) -> None:
    _, docs = overlay
    deployments = by_kind(docs, "Deployment")
    assert sorted(deployments) == sorted(SERVE_TARGETS)
    for name, dep in deployments.items():
        c = container(dep)
        assert c["command"] == ["fashion-search", "serve", name]
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], name
        assert c["resources"]["limits"]["memory"], name


def test_every_fs_variable_is_a_setting(overlay: tuple[str, list]) -> None:
    _, docs = overlay
    names = set(FS_VAR.findall(yaml.safe_dump_all(docs)))
    unknown = sorted(n for n in names if n.removeprefix("FS_").lower() not in Settings.model_fields)
    assert names and not unknown, unknown


@pytest.mark.parametrize("service", GRPC_SERVICES)
def test_grpc_services_ports_probes_and_services_match_settings(overlay: tuple[str, list], service: str) -> None:
    _, docs = overlay
    dep = by_kind(docs, "Deployment")[service]
    port, metrics_port = default(f"{field(service)}_port"), default(f"{field(service)}_metrics_port")
    env = environment(docs, dep)
    assert ports(dep) == {"grpc": port, "metrics": metrics_port}
    assert env[f"FS_{field(service).upper()}_PORT"] == str(port)
    assert env[f"FS_{field(service).upper()}_METRICS_PORT"] == str(metrics_port)
    assert env["FS_BIND_HOST"] == "0.0.0.0"  # 127.0.0.1, the Settings default, is unreachable from other pods
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port)
    c = container(dep)
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == port, (service, probe)  # the standard gRPC health service
    if service in MODEL_SERVICES:
        assert c["startupProbe"]["grpc"]["port"] == port  # weights load before SERVING
    svc = by_kind(docs, "Service")[service]
    assert svc["spec"]["clusterIP"] == "None"  # every replica's address, for the clients' round_robin
    assert svc["spec"]["ports"] == [{"name": "grpc", "port": port, "targetPort": "grpc"}]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_clients_reach_each_service_by_name_and_port(overlay: tuple[str, list]) -> None:
    _, docs = overlay
    services = by_kind(docs, "Service")
    for client in ("gateway", "worker"):
        env = environment(docs, by_kind(docs, "Deployment")[client])
        for target in GRPC_SERVICES:
            host, port = env[f"FS_{field(target).upper()}_URL"].split(":")
            assert host == target and int(port) == default(f"{field(target)}_port"), (client, target)
            assert any(p["port"] == int(port) for p in services[host]["spec"]["ports"])
        for key in ("FS_BROKER_URL", "FS_RESULT_BACKEND", "FS_REDIS_URL"):
            assert env[key].startswith("redis://redis:6379/"), (client, key)
        assert env["FS_AUTH_REQUIRED"] == "true" and env["FS_API_KEY_STORE"] == "redis"
    gateway = by_kind(docs, "Deployment")["gateway"]
    assert ports(gateway) == {"http": default("gateway_port"), "metrics": default("gateway_metrics_port")}
    auth_secret = [e for e in container(gateway)["env"] if e["name"] == "FS_AUTH_SECRET"]
    assert auth_secret and "secretKeyRef" in auth_secret[0]["valueFrom"]  # never a literal in the manifests
    worker = by_kind(docs, "Deployment")["worker"]
    assert ports(worker) == {"metrics": default("worker_metrics_port")}


def test_model_services_get_a_gpu_only_in_the_gpu_overlay(overlay: tuple[str, list]) -> None:
    name, docs = overlay
    for dep_name, dep in by_kind(docs, "Deployment").items():
        gpus = container(dep)["resources"].get("limits", {}).get("nvidia.com/gpu")
        env = environment(docs, dep)
        if name == "gpu" and dep_name in MODEL_SERVICES:
            assert gpus == 1, dep_name
            spec = dep["spec"]["template"]["spec"]
            assert spec["nodeSelector"] == {"fashion-search/pool": "gpu"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
            assert env["FS_TORCH_DEVICE"] == "cuda"
        else:
            assert gpus is None, (name, dep_name)
            if name == "cpu":
                assert env["FS_TORCH_DEVICE"] == "cpu"


def test_embedder_and_detector_autoscale(overlay: tuple[str, list]) -> None:
    name, docs = overlay
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == {"embedder", "detector"}
    for hpa in hpas.values():
        assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
        metric = hpa["spec"]["metrics"][0]
        expected = "fs_grpc_server_in_flight" if name == "gpu" else "cpu"
        assert (metric.get("pods", {}).get("metric", {}).get("name") or metric["resource"]["name"]) == expected


def test_disruption_budgets_cover_every_serving_workload(overlay: tuple[str, list]) -> None:
    _, docs = overlay
    budgets = by_kind(docs, "PodDisruptionBudget")
    workloads = {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet")}
    covered = set()
    for pdb in budgets.values():
        matches = [n for n, w in workloads.items()
                   if w["spec"]["selector"]["matchLabels"] == pdb["spec"]["selector"]["matchLabels"]]
        assert len(matches) == 1, pdb["metadata"]["name"]
        covered.add(matches[0])
    assert covered >= {"gateway", *GRPC_SERVICES, "qdrant"}


def test_only_the_gateway_takes_ingress_from_outside(overlay: tuple[str, list]) -> None:
    _, docs = overlay
    policies = by_kind(docs, "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    open_to_all = []
    for name, pol in policies.items():
        for rule in pol["spec"].get("ingress", []):
            if not rule.get("from"):
                open_to_all.append((name, pol["spec"]["podSelector"]))
            for peer in rule.get("from", []):
                assert "ipBlock" not in peer, name
                if "namespaceSelector" in peer:  # only the monitoring namespace, only the metrics ports
                    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert open_to_all == [("gateway-from-anywhere", {"matchLabels": {"app.kubernetes.io/name": "gateway"}})]
    gateway_rule = policies["gateway-from-anywhere"]["spec"]["ingress"][0]
    assert gateway_rule["ports"] == [{"protocol": "TCP", "port": default("gateway_port")}]


def test_qdrant_is_a_three_node_cluster_with_replicated_shards(overlay: tuple[str, list]) -> None:
    _, docs = overlay
    qdrant = by_kind(docs, "StatefulSet")["qdrant"]
    nodes = qdrant["spec"]["replicas"]
    assert nodes == 3 and qdrant["spec"]["serviceName"] == "qdrant-headless"
    env = {e["name"]: e["value"] for e in container(qdrant)["env"]}
    assert env["QDRANT__CLUSTER__ENABLED"] == "true"
    assert by_kind(docs, "Service")["qdrant-headless"]["spec"]["publishNotReadyAddresses"] is True
    search_env = environment(docs, by_kind(docs, "Deployment")["search"])
    assert search_env["FS_INDEX_BACKEND"] == "qdrant" and search_env["FS_QDRANT_URL"] == "http://qdrant:6333"
    replicas, shards = int(search_env["FS_QDRANT_REPLICATION_FACTOR"]), int(search_env["FS_QDRANT_SHARD_NUMBER"])
    assert replicas == 2 and 2 <= replicas <= nodes and shards >= 1
    assert Settings(qdrant_replication_factor=replicas, qdrant_shard_number=shards).qdrant_shard_number == shards
