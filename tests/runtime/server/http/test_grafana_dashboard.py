"""docs/grafana/radixserve.json: valid Grafana dashboard JSON whose every query names metrics a
real server exports (a renamed metric would leave a panel empty without any error)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow
DASHBOARD = Path(__file__).resolve().parents[4] / "docs" / "grafana" / "radixserve.json"
METRIC = re.compile(r"\bradixserve_[a-z0-9_]+")


def exported_series(client: httpx.Client) -> set[str]:
    text = client.get("/metrics").text
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_panel_queries_metrics_the_server_exports(client: httpx.Client) -> None:
    body = {"text": "Hello", "sampling_params": {"max_new_tokens": 2}}
    assert client.post("/generate", json=body).status_code == 200  # histograms get samples
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "radixserve" and dashboard["title"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    exported = exported_series(client)
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = METRIC.findall(target["expr"])
            assert names, target["expr"]
            missing = set(names) - exported
            assert not missing, f"{panel['title']}: {sorted(missing)} not in /metrics"
            assert '{instance=~"$instance"}' in target["expr"] or "instance=~" in target["expr"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
