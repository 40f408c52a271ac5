"""The Prometheus config, alert rules and Grafana dashboard agree with the metrics the code exports, the Settings'
metrics ports and the compose `observability` profile (structure only: no Docker engine or Prometheus runs here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fashion_search.cli.parser import SERVE_TARGETS
from fashion_search.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
OBS = ROOT / "deploy" / "observability"
DASHBOARD = OBS / "grafana" / "dashboards" / "fashion-search.json"
ALERTS = ("FashionSearchHigh5xxRatio", "FashionSearchP99OverBudget", "FashionSearchQueueBacklog",
          "FashionSearchServiceDown")
METRIC = re.compile(r"\b(fs_[a-z0-9_]+)")
DEFINED = re.compile(r"(?:Counter|Gauge|Histogram|GaugeMetricFamily)\(\s*\"(fs_[a-z0-9_]+)\"")


def exported_metrics() -> set[str]:
    """Every fs_* metric the package defines, with the sample names Prometheus sees for histograms."""
    names: set[str] = set()
    for path in (ROOT / "fashion_search").rglob("*.py"):
        for name in DEFINED.findall(path.read_text()):
            names |= {name, f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


def referenced(text: str) -> set[str]:
    return set(METRIC.findall(text))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_prometheus_scrapes_every_process_on_its_settings_metrics_port() -> None:
    config = yaml.safe_load((OBS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for target in SERVE_TARGETS:
        job = jobs[f"fashion-search-{target}"]
        sd = job["dns_sd_configs"][0]
        port = Settings.model_fields[f"{target.replace('-', '_')}_metrics_port"].default
        assert sd["names"] == [target] and sd["port"] == port, target


def test_compose_processes_serve_metrics_where_prometheus_looks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for target in SERVE_TARGETS:
        env = services[target]["environment"]
        key = f"FS_{target.replace('-', '_').upper()}_METRICS_PORT"
        port = Settings.model_fields[key.removeprefix("FS_").lower()].default
        assert env[key] == str(port) and str(port) in services[target]["expose"], target


def test_alert_rules_cover_the_four_failures_and_use_real_metrics() -> None:
    rules = {r["alert"]: r for g in yaml.safe_load((OBS / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    assert set(ALERTS) <= set(rules)
    known = exported_metrics()
    for name, rule in rules.items():
        used = referenced(rule["expr"])
        assert used <= known, (name, used - known)
        assert rule["for"] and rule["labels"]["severity"] in ("page", "ticket")
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert f"### {name}" in (ROOT / "docs" / "OPERATIONS.md").read_text(), f"no runbook section for {name}"
        assert anchor == name.lower()
    assert 'up{job=~"fashion-search-.*"}' in rules["FashionSearchServiceDown"]["expr"]


def test_dashboard_panels_query_real_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    known = exported_metrics()
    used: set[str] = set()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] == "fashion-search"
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "prometheus"
            used |= referenced(t["expr"])
    assert used <= known, used - known
    # Every exported family is on the dashboard: rate, errors, latency, in-flight, batch size, queue, cache, index.
    families = {re.sub(r"_(bucket|count|sum)$", "", n) for n in known}
    assert families <= {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}, families - used


def test_observability_profile_mounts_the_config(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"], name
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
        for port in services[name].get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # dashboards stay on the host unless proxied
    datasource = yaml.safe_load((OBS / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == "prometheus"
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((OBS / "grafana/provisioning/dashboards/dashboards.yml").read_text())
    mount = next(v for v in services["grafana"]["volumes"] if v.startswith("./deploy/observability/grafana/dashboards"))
    assert provider["providers"][0]["options"]["path"] == mount.split(":")[1]
    for profiled in ("prometheus", "grafana"):
        assert all(profiled not in (s.get("depends_on") or {}) for n, s in services.items()
                   if n not in ("prometheus", "grafana")), "the default stack must not need the profile"
