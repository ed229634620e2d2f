"""Every PromQL expression of the dashboards and the rules parses and reads only metrics that exist:
the catalogue (lensing_core/catalog.py), its named outside sources, or a recording rule of alerts/."""

from __future__ import annotations

import pytest

from lensing_core.catalog import CATALOG, OUTSIDE_SOURCES
from tests.support.promql import Query, all_queries, grafana_to_promql, recorded_names, unknown_metrics

QUERIES = all_queries()


@pytest.mark.parametrize("query", QUERIES, ids=[q.where for q in QUERIES])
def test_query_parses_and_names_only_exported_metrics(query: Query) -> None:
    try:
        expr = query.parse()
    except ValueError as exc:
        pytest.fail(f"{query.where}: does not parse ({exc}): {query.promql}")
    assert not unknown_metrics(expr, recorded_names()), f"{query.where} reads metrics nothing exports: {query.expr}"


def test_a_renamed_metric_is_caught() -> None:
    renamed = Query("x", "", grafana_to_promql("sum(rate(celery_task_runtime_second_bucket[$__rate_interval]))"))
    assert unknown_metrics(renamed.parse(), recorded_names()) == {"celery_task_runtime_second_bucket"}
    wrong_suffix = Query("x", "", "celery_queue_length_bucket")  # a gauge has no buckets
    assert unknown_metrics(wrong_suffix.parse(), set()) == {"celery_queue_length_bucket"}


def test_recording_rules_do_not_shadow_exported_metrics() -> None:
    assert not recorded_names() & (set(CATALOG) | set(OUTSIDE_SOURCES))


def test_every_catalogue_component_is_watched() -> None:
    """Each component of the catalogue shows up in at least one dashboard query and one alert."""
    from tests.support.promql import DASHBOARDS, dashboard_queries, family_of, metric_names, rule_queries

    def components(queries: list[Query]) -> set[str]:
        names = {family_of(n) for q in queries for n in metric_names(q.parse())}
        return {CATALOG[n].component for n in names if n is not None}

    every = {spec.component for spec in CATALOG.values()}
    assert components([q for p in DASHBOARDS for q in dashboard_queries(p)]) == every
    assert components(list(rule_queries())) == every
