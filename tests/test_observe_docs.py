"""The Grafana dashboard and the alert rules in docs/ parse and name only real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from surestep.observe.cluster import Figures
from surestep.observe.collector import families
from surestep.observe.drift import DriftReport
from surestep.observe.quality import ConfidenceHistogram, ModelFigures
from surestep.review.records import ReviewStats

DOCS = Path(__file__).resolve().parent.parent / "docs"


def emitted_names() -> set[str]:
    stats = ReviewStats("k", 0, 0, 1, 0, 0.5, 0.5, 0.5, 1.0, 2.0)
    figures = Figures(
        at=0.0,
        window=3600.0,
        runs={("w", "pending"): 1},
        finished={("w", "success"): 1},
        oldest_due={"w": 1.0},
        review_open={"k": 1},
        review_overdue={"k": 1},
        reviews={"k": stats},
        review_needed={"w": 0.5},
        failed_attempts=2,
        recovered_attempts=1,
        workflows=["w"],
        llm=ModelFigures(
            calls={("w", "p:m", "ok"): 1},
            cost_usd={"w": 0.1},
            succeeded_runs={"w": 1},
            succeeded_cost_usd={"w": 0.1},
            confidence={("s", "p:m"): ConfidenceHistogram((0,) * 9 + (1,), 1, 0.9)},
            drift=[DriftReport("s", "p:m", 0.3, 0.5, 40, 100, True)],
        ),
    )
    # Sample names too: a histogram's series are NAME_bucket, NAME_sum and NAME_count.
    return {name for family in families(figures) for name in (family.name, *sample_names(family))}


def sample_names(family: Any) -> set[str]:
    return {sample.name for sample in family.samples}


def metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bsurestep_[a-z_]+\b", text))


def test_the_grafana_dashboard_is_json_over_emitted_metrics() -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text("utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs and dashboard["title"]
    used = metric_names("\n".join(exprs))
    assert used and used <= emitted_names(), used - emitted_names()


def test_the_alert_rules_name_emitted_metrics() -> None:
    text = (DOCS / "alerts.yml").read_text("utf-8")
    expressions = "\n".join(re.findall(r"expr:.*(?:\n {10,}.*)*", text))
    used = metric_names(expressions)
    assert used and used <= emitted_names(), used - emitted_names()
    assert len(re.findall(r"- alert: ", text)) == 6


def test_the_alert_rules_are_yaml() -> None:
    yaml = pytest.importorskip("yaml")
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text("utf-8"))
    assert [r["alert"] for r in rules["groups"][0]["rules"]] == [
        "SurestepDeadLettersGrowing",
        "SurestepQueueBehind",
        "SurestepReviewsOverdue",
        "SurestepOverrideRateJump",
        "SurestepConfidenceDrift",
        "SurestepCostPerSuccessJump",
    ]
