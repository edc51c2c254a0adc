"""The queries of deploy/grafana/couponpop-batch.json, as Grafana sends them for this
service."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "couponpop-batch.json"


def dashboard_queries() -> list[str]:
    """The PromQL of every panel target and every query variable."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [
        target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
            assert found, variable["definition"]
            queries.append(f"count by ({found[2]}) ({found[1]})")
    return queries


def resolved(query: str, rate_interval: str = "1m") -> str:
    """The query with Grafana's variables: this service's application name, every job
    (a repeated panel's `$job`), and `$__rate_interval` (four scrape intervals at least)."""
    query = query.replace("$application", "batch-service")
    query = query.replace("$job", ".+")
    query = query.replace("$__rate_interval", rate_interval)
    assert "$" not in query, query
    return query
