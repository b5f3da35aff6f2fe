"""The Grafana dashboard charts exactly the metrics `actors/metrics.py` records, under the names Ray exports."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "docs" / "grafana" / "potstill-generation.json"
SUFFIX = {"Counter": ["_total"], "Gauge": [""], "Histogram": ["_bucket", "_count", "_sum"]}


def recorded_series() -> dict[str, str]:
    """Exported series name -> metric kind, read from the metric constructors in actors/metrics.py."""
    tree = ast.parse((REPO / "actors" / "metrics.py").read_text())
    series = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SUFFIX:
            name = node.args[0].value
            for suffix in SUFFIX[node.func.id]:
                series[f"ray_{name}{suffix}"] = node.func.id  # Ray prefixes `ray_`; counters get `_total`
    return series


def test_every_panel_queries_a_recorded_metric_and_every_metric_is_charted():
    dashboard = json.loads(DASHBOARD.read_text())
    recorded = recorded_series()
    used = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bray_potstill_[a-z_]+", target["expr"]))
            assert names and names <= set(recorded), (panel["title"], names - set(recorded))
            assert 'run_id=~"$run_id"' in target["expr"], panel["title"]
            used |= names
    charted = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in used}
    assert charted == {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in recorded}
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "run_id"}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
