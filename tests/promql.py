"""What the Prometheus tests share: the shipped rules, and the metric names an expression reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mcptrace import _fields as f

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yml"


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def declared_prometheus_names() -> set[str]:
    """Every metric name mcptrace declares, as Prometheus sees it (semconv names: dots and a unit)."""
    names = set()
    for key, value in vars(f).items():
        if key.startswith("M_") and isinstance(value, str):
            names.add(value.replace(".", "_") + "_seconds" if "." in value else value)
    return names


def metrics_read_by(expr: str) -> set[str]:
    """Metric names an expression reads, with histogram suffixes taken off (label names are not metrics)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    found = set(re.findall(r"\b(mcp(?:trace)?_[a-z0-9_]+)\b", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in found}
