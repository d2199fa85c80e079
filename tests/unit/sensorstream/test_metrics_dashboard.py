"""The Grafana dashboard and the Prometheus scrape config against the metrics the code exposes:
a renamed metric or a typo in a query fails here, not as an empty panel in production."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sensorstream.metrics import (
    MAINTAIN_METRICS_PORT,
    PRODUCER_METRICS_PORT,
    ROUTER_METRICS_PORT,
    SINK_METRICS_PORT,
    MetricFamilies,
)

OBSERVABILITY = Path(__file__).resolve().parents[3] / "infra" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "sensorstream.json"

# PromQL words the dashboard may use besides metric names; anything else must be a metric.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "group_left",
    "group_right", "rate", "increase", "irate", "histogram_quantile", "time", "clamp_min",
    "and", "or", "unless",
}  # fmt: skip
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def exposed_names() -> dict[str, str]:
    """Every sample name a command's registry can expose, mapped to its family."""
    names = {}
    for family in MetricFamilies().register_all().registry.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.name
    return names


def panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: what is left once label matchers, ranges,
    grouping label lists, strings, numbers and PromQL's own words are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return words - PROMQL_WORDS


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def test_the_name_extraction_sees_through_promql():
    expr = (
        'histogram_quantile(0.99, sum by (stage, le) (rate(a_seconds_bucket{job=~"x-.*"}'
        "[$__rate_interval]))) * on (job) group_left (node_id) b_info"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_info"}


def test_every_metric_a_panel_queries_exists_in_the_code(dashboard):
    exposed = exposed_names()
    exprs = expressions(dashboard)
    assert len(exprs) >= 20
    unknown = {name: e for e in exprs for name in metric_names(e) if name not in exposed}
    assert not unknown, f"not exposed by sensorstream/metrics.py: {unknown}"


def test_every_sensorstream_family_is_on_the_dashboard(dashboard):
    exposed = exposed_names()
    shown = {exposed[n] for e in expressions(dashboard) for n in metric_names(e)}
    families = {f for f in exposed.values() if f.startswith("sensorstream_")}
    assert families - shown == set()


def test_the_dashboard_is_provisionable(dashboard):
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "sensorstream"
    datasource = yaml.safe_load(
        (OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    variable = dashboard["templating"]["list"][0]
    assert (variable["type"], variable["current"]["value"]) == ("datasource", datasource["uid"])
    for panel in panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    provider = yaml.safe_load(
        (OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "sensorstream.yml").read_text()
    )["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_prometheus_scrapes_each_command_on_its_default_port():
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {
        "sensorstream-producer": [f"producer:{PRODUCER_METRICS_PORT}"],
        "sensorstream-router": [f"router:{ROUTER_METRICS_PORT}"],
        "sensorstream-sink": [f"sink:{SINK_METRICS_PORT}"],
        "sensorstream-maintain": [f"maintain:{MAINTAIN_METRICS_PORT}"],
    }
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            # A target label named like a metric label would rename the metric's own.
            assert "stage" not in static.get("labels", {}), job["job_name"]
