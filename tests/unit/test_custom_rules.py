"""The config file's PromQL rules: parsing, errors, and filling in the placeholders."""

from __future__ import annotations

import pytest

from adapter.providers.rules import RuleError, default_rules, label_matchers, parse_rules, render, window_seconds
from adapter.selectors import parse_selector


def test_default_rules_serve_http_requests_per_second_for_pods_and_namespaces() -> None:
    rules = parse_rules(None)
    assert [(r.resource, r.name) for r in rules.custom] == [
        ("pods", "http_requests_per_second"),
        ("namespaces", "http_requests_per_second"),
    ]
    pods = rules.custom_rule("pods", "http_requests_per_second")
    assert pods is not None and pods.window_seconds == 120
    assert pods.query.startswith('sum by (pod) (rate(http_requests_total{namespace="<ns>",pod=~"<pods>"')
    assert rules == default_rules()


def test_rules_from_a_document() -> None:
    rules = parse_rules(
        {
            "customMetrics": [
                {
                    "name": "jobs_per_second",
                    "query": 'sum by (pod) (rate(jobs_total{namespace="<ns>",pod=~"<pods>"}[90s]))',
                },
                {"name": "load", "resource": "namespaces", "query": 'sum(load{namespace="<ns>"})', "windowSeconds": 0},
            ],
            "externalMetrics": [{"name": "api_5xx_per_second", "query": 'sum(rate(x{code=~"5.."<matchers>}[1m]))'}],
        }
    )
    assert rules.custom_rule("pods", "jobs_per_second").window_seconds == 90  # type: ignore[union-attr]
    assert rules.custom_rule("namespaces", "load").window_seconds == 0  # type: ignore[union-attr]
    assert rules.custom_rule("pods", "load") is None
    assert rules.external_rule("api_5xx_per_second").takes_metric_selector  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"customMetrics": {}}, "customMetrics must be a list"),
        ({"customMetrics": ["x"]}, "customMetrics[0] must be a mapping"),
        ({"customMetrics": [{"name": "a b", "query": 'q{namespace="<ns>"}'}]}, "name must be a metric name"),
        ({"customMetrics": [{"name": "a", "query": ""}]}, "query must be a PromQL expression"),
        ({"customMetrics": [{"name": "a", "query": "up", "resource": "pods"}]}, "must use <ns>"),
        ({"customMetrics": [{"name": "a", "query": 'up{namespace="<ns>"}'}]}, "must use <pods>"),
        ({"customMetrics": [{"name": "a", "query": "<ns>", "resource": "nodes"}]}, "resource must be one of pods"),
        ({"customMetrics": [{"name": "a", "query": "<ns><pods>", "windowSeconds": -1}]}, "windowSeconds must be"),
        ({"customMetrics": [{"name": "a", "query": "<ns><pods>", "typo": 1}]}, "unknown key(s) typo; accepted"),
        ({"customMetrics": [{"name": "a", "query": "<ns><pods>"}] * 2}, "declares pods/a twice"),
        ({"externalMetrics": [{"name": "e", "query": "up"}] * 2}, "declares e twice"),
    ],
)
def test_bad_rules_are_named(document: dict[str, object], message: str) -> None:
    with pytest.raises(RuleError, match=None) as info:
        parse_rules(document, where="adapter.yaml")
    assert str(info.value).startswith("adapter.yaml: ")
    assert message in str(info.value)


def test_render_escapes_namespace_and_anchors_pod_names() -> None:
    query = 'x{namespace="<ns>",pod=~"<pods>"<matchers>}'
    assert render(query, namespace="lensing", pods=["api-1", "api-0", "api-0"]) == (
        'x{namespace="lensing",pod=~"api\\\\-0|api\\\\-1"}'
    )
    assert render(query, namespace='a"b\\c', pods=None) == 'x{namespace="a\\"b\\\\c",pod=~".+"}'


def test_label_matchers_cover_the_selector_grammar() -> None:
    selector = parse_selector("a=1,b!=2,c in (x,y),d notin (z),e,!f")
    assert label_matchers(selector.requirements) == (',a="1",b!="2",c=~"x|y",d!~"z",e!="",f=""')
    with pytest.raises(RuleError, match="not a Prometheus label name"):
        label_matchers(parse_selector("app.kubernetes.io/name=api").requirements)
    with pytest.raises(RuleError, match="cannot be a PromQL matcher"):
        label_matchers(parse_selector("a>1").requirements)


def test_window_seconds() -> None:
    assert window_seconds("2m") == 120
    assert window_seconds("1h30m") == 5400
    assert window_seconds("500ms") == 0
