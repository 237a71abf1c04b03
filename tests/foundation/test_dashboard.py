"""The Grafana dashboard in the chart is well formed and asks only for metrics vidup exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType

from prometheus_client.metrics import MetricWrapperBase

from vidup_ingest import metrics as ingest_metrics
from vidup_operator import metrics as operator_metrics
from vidup_transcoder import metrics as worker_metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "vidup" / "dashboards" / "vidup-overview.json"
_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
             "summary": ("_sum", "_count", "")}


def _series_names(*modules: ModuleType) -> set[str]:
    """Every series name the components' metrics can expose: their metric objects (counters end
    in _total, histograms in _bucket/_sum/_count) and the gauge families their custom collectors
    build at scrape time (named in the module's source)."""
    names: set[str] = set()
    for module in modules:
        for obj in vars(module).values():
            if isinstance(obj, MetricWrapperBase):
                names.update(obj._name + suffix for suffix in _SUFFIXES[obj._type])
        source = Path(str(module.__file__)).read_text()
        names.update(re.findall(r'GaugeMetricFamily\(\s*"(vidup_[a-z_]+)"', source))
    return names


def _targets(dashboard: dict) -> list[dict]:
    return [t for p in dashboard["panels"] for t in p["targets"]]


def test_the_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert dashboard["id"] is None  # an import creates it; a fixed id would overwrite another dashboard
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))


def test_every_query_names_metrics_the_components_export() -> None:
    exported = _series_names(ingest_metrics, operator_metrics, worker_metrics)
    asked: set[str] = set()
    for target in _targets(json.loads(DASHBOARD.read_text())):
        expr = target["expr"]
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        asked.update(re.findall(r"\bvidup_[a-z_]+", expr))
    assert asked and asked <= exported, sorted(asked - exported)
    # The dashboard covers what the issue names: uploads, throughput, queue, encode speed, failures.
    for wanted in ("vidup_ingest_uploads_created_total", "vidup_ingest_received_bytes_total",
                   "vidup_operator_queue_depth", "vidup_worker_realtime_factor_bucket", "vidup_worker_failures_total"):
        assert wanted in asked
