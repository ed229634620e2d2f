"""The PromQL-backed metrics of the adapter's config file: custom (per pod, per namespace) and external.

The config file's ``customMetrics`` and ``externalMetrics`` sections (YAML or JSON)::

    customMetrics:
      - name: http_requests_per_second
        resource: pods            # pods (default) or namespaces
        query: 'sum by (pod) (rate(http_requests_total{namespace="<ns>",pod=~"<pods>"<matchers>}[2m]))'
        windowSeconds: 120        # optional: taken from the query's first range ([2m]) when left out
    externalMetrics:
      - name: api_5xx_per_second
        query: 'sum(rate(http_requests_total{code=~"5.."<matchers>}[2m]))'

Placeholders: ``<ns>`` the namespace (escaped for a PromQL string), ``<pods>`` an anchored regular
expression naming exactly the pods asked about, ``<matchers>`` the request's metric label selector as
PromQL label matchers, each preceded by a comma (empty when there is none). A pods query must return
one sample per pod carrying a ``pod`` label; a namespaces or external query returns what it returns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

DEFAULT_RATE_WINDOW = "2m"

RESOURCES = ("pods", "namespaces")
_METRIC_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_:.\-]*$")
_RANGE = re.compile(r"\[(\d+(?:ms|s|m|h|d|w|y))\]")
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class Requirement(Protocol):
    """One requirement of a parsed label selector (adapter.selectors.Requirement)."""

    @property
    def key(self) -> str: ...
    @property
    def op(self) -> str: ...
    @property
    def values(self) -> tuple[str, ...]: ...


class RuleError(ValueError):
    """A rule in the config file that cannot be used; the message names the rule and what is accepted."""


@dataclass(frozen=True, slots=True)
class CustomRule:
    name: str
    resource: str  # "pods" | "namespaces"
    query: str
    window_seconds: int | None

    @property
    def takes_metric_selector(self) -> bool:
        return "<matchers>" in self.query


@dataclass(frozen=True, slots=True)
class ExternalRule:
    name: str
    query: str

    @property
    def takes_metric_selector(self) -> bool:
        return "<matchers>" in self.query


@dataclass(frozen=True, slots=True)
class PromRules:
    custom: tuple[CustomRule, ...]
    external: tuple[ExternalRule, ...]

    def custom_rule(self, resource: str, name: str) -> CustomRule | None:
        for rule in self.custom:
            if rule.resource == resource and rule.name == name:
                return rule
        return None

    def external_rule(self, name: str) -> ExternalRule | None:
        for rule in self.external:
            if rule.name == name:
                return rule
        return None


def default_rules(window: str = DEFAULT_RATE_WINDOW) -> PromRules:
    """What the adapter serves with no config file: the API's request rate, per pod and per namespace."""
    return PromRules(
        custom=(
            CustomRule(
                "http_requests_per_second",
                "pods",
                f'sum by (pod) (rate(http_requests_total{{namespace="<ns>",pod=~"<pods>"<matchers>}}[{window}]))',
                window_seconds(window),
            ),
            CustomRule(
                "http_requests_per_second",
                "namespaces",
                f'sum(rate(http_requests_total{{namespace="<ns>"<matchers>}}[{window}]))',
                window_seconds(window),
            ),
        ),
        external=(),
    )


def window_seconds(duration: str) -> int:
    total = 0.0
    for amount, unit in _DURATION.findall(duration):
        total += int(amount) * _UNIT_SECONDS[unit]
    return max(int(total), 0)


def parse_rules(document: Mapping[str, object] | None, *, where: str = "config") -> PromRules:
    """The rules of a loaded config document; without a ``customMetrics`` section, the default rules."""
    document = document or {}
    custom_raw = document.get("customMetrics")
    external_raw = document.get("externalMetrics", [])
    custom = default_rules().custom if custom_raw is None else tuple(_custom(custom_raw, where))
    external = tuple(_external(external_raw, where))
    seen: set[tuple[str, str]] = set()
    for rule in custom:
        key = (rule.resource, rule.name)
        if key in seen:
            raise RuleError(f"{where}: customMetrics declares {rule.resource}/{rule.name} twice")
        seen.add(key)
    names = [rule.name for rule in external]
    for name in names:
        if names.count(name) > 1:
            raise RuleError(f"{where}: externalMetrics declares {name} twice")
    return PromRules(custom, external)


def _items(raw: object, section: str, where: str) -> Iterable[tuple[str, Mapping[str, object]]]:
    if not isinstance(raw, list):
        raise RuleError(f"{where}: {section} must be a list of rules, got {type(raw).__name__}")
    for i, item in enumerate(raw):
        label = f"{where}: {section}[{i}]"
        if not isinstance(item, dict):
            raise RuleError(f"{label} must be a mapping with name and query, got {type(item).__name__}")
        yield label, item


def _common(label: str, item: Mapping[str, object], allowed: Sequence[str]) -> tuple[str, str]:
    unknown = sorted(set(item) - set(allowed))
    if unknown:
        raise RuleError(f"{label}: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(allowed)}")
    name, query = item.get("name"), item.get("query")
    if not isinstance(name, str) or not _METRIC_NAME.match(name):
        raise RuleError(f"{label}: name must be a metric name such as http_requests_per_second, got {name!r}")
    if not isinstance(query, str) or not query.strip():
        raise RuleError(f"{label} ({name}): query must be a PromQL expression (a non-empty string)")
    return name, query


def _custom(raw: object, where: str) -> Iterable[CustomRule]:
    for label, item in _items(raw, "customMetrics", where):
        name, query = _common(label, item, ("name", "resource", "query", "windowSeconds"))
        resource = item.get("resource", "pods")
        if resource not in RESOURCES:
            raise RuleError(f"{label} ({name}): resource must be one of {', '.join(RESOURCES)}, got {resource!r}")
        if "<ns>" not in query:
            raise RuleError(f"{label} ({name}): query must use <ns> so that one namespace never reads another's")
        if resource == "pods" and "<pods>" not in query:
            raise RuleError(f"{label} ({name}): a pods query must use <pods> (the pods the request names)")
        window = item.get("windowSeconds")
        if window is None:
            ranges = _RANGE.findall(query)
            window = window_seconds(ranges[0]) if ranges else None
        elif not isinstance(window, int) or isinstance(window, bool) or window < 0:
            raise RuleError(f"{label} ({name}): windowSeconds must be a whole number of seconds >= 0, got {window!r}")
        yield CustomRule(name, str(resource), query, window)


def _external(raw: object, where: str) -> Iterable[ExternalRule]:
    for label, item in _items(raw, "externalMetrics", where):
        name, query = _common(label, item, ("name", "query"))
        yield ExternalRule(name, query)


# -- filling in the placeholders ------------------------------------------------------------------


def promql_string(value: str) -> str:
    """``value`` escaped for the inside of a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def pods_regex(pods: Iterable[str]) -> str:
    """A regular expression matching exactly these pod names (Prometheus anchors it)."""
    return "|".join(re.escape(pod) for pod in sorted(set(pods)))


def render(query: str, *, namespace: str = "", pods: Iterable[str] | None = None, matchers: str = "") -> str:
    """``query`` with its placeholders filled in; ``pods=None`` means every pod of the namespace."""
    regex = ".+" if pods is None else pods_regex(pods)
    return (
        query.replace("{<matchers>", "{" + matchers[1:])  # no leading comma in a matcher list
        .replace("<ns>", promql_string(namespace))
        .replace("<pods>", promql_string(regex))
        .replace("<matchers>", matchers)
    )


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def label_matchers(requirements: Iterable[Requirement]) -> str:
    """A metric label selector's requirements as PromQL matchers, each preceded by a comma.

    Operators: ``=``/``==``, ``!=``, ``in``, ``notin``, ``exists``, ``!`` (does not exist); not ``gt``/``lt``.
    """
    parts = []
    for req in requirements:
        key, op, values = req.key, str(getattr(req.op, "value", req.op)), req.values
        if not _LABEL_NAME.match(key):
            raise RuleError(
                f"metric label {key!r} is not a Prometheus label name (letters, digits and _, not first a digit)"
            )
        alternation = "|".join(re.escape(v) for v in sorted(values))
        if op in ("=", "=="):
            parts.append(f'{key}="{promql_string(values[0])}"')
        elif op == "!=":
            parts.append(f'{key}!="{promql_string(values[0])}"')
        elif op == "in":
            parts.append(f'{key}=~"{promql_string(alternation)}"')
        elif op == "notin":
            parts.append(f'{key}!~"{promql_string(alternation)}"')
        elif op == "exists":
            parts.append(f'{key}!=""')
        elif op == "!":
            parts.append(f'{key}=""')
        else:
            raise RuleError(
                f"selector operator {op!r} cannot be a PromQL matcher; use =, ==, !=, in, notin, exists or !"
            )
    return "".join("," + part for part in parts)
