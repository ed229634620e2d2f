"""Pod deletion cost from running work (``--pod-deletion-cost``, off by default).

When the HPA lowers a Deployment's replicas, the ReplicaSet deletes the pods of lowest
``controller.kubernetes.io/pod-deletion-cost`` first (among pods of the same phase, readiness and node
placement). This loop keeps that annotation on each worker pod equal to the number of tasks its Celery
worker runs now, from the event stream the adapter already consumes: idle workers (0) go first, a worker
running a 20-minute analysis stays while an idle one exists.

Why the count of running tasks and not their summed run time: it changes only when a task starts or ends,
so it costs a PATCH per change, where a run time would change at every pass; and any running task is work
lost (early acks) or restarted (late acks) when its pod goes, however long it has run.

Worker to pod: a worker's hostname (Celery's default node name is ``celery@<hostname>``, and a pod's
hostname is its name) gives the pod name through ``--worker-pod-pattern`` (a regular expression with a
group named ``pod``). The pods are those of ``--worker-namespace`` and ``--worker-pod-selector``, listed
every ``--pod-deletion-cost-interval``; only pods whose value changed are patched, at most
``--pod-deletion-cost-max-patches`` a pass (busy pods first), so a flood of task events is never a flood
of PATCHes. It needs ``get``/``list``/``watch``/``patch`` on pods in that namespace (a Role), nothing more.

Nothing here touches the metrics: while the event stream is down or settling nothing is patched (no
worker is known to be idle), and a failed list or PATCH is counted, logged once per kind of failure, and
retried at the next pass.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from adapter.config import ConfigError
from adapter.kubeapi import KubeAPIError
from adapter.selectors import SelectorError, parse_selector
from lensing_core import catalog
from lensing_core.options import add_option, positive_float, positive_int

log = logging.getLogger("adapter.pod_cost")

COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
DEFAULT_POD_PATTERN = r"^[^@]*@(?P<pod>[^.]+)"
_FINISHED = {"Succeeded", "Failed"}
_REASONS = {403: "forbidden", 401: "forbidden", 404: "not_found"}


class KubePatcher(Protocol):
    """adapter.kubeapi.KubeClient: a JSON request and a merge patch (both raise KubeAPIError)."""

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]: ...

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PodCostSettings:
    namespace: str
    selector: str
    pod_pattern: re.Pattern[str]
    interval: float = 5.0
    max_patches: int = 20

    def pod_of(self, worker: str) -> str | None:
        match = self.pod_pattern.search(worker)
        return match.group("pod") if match else None


class PodCostAnnotator:
    def __init__(
        self, kube: KubePatcher, running: Callable[[], Mapping[str, int] | None], settings: PodCostSettings
    ) -> None:
        self.kube = kube
        self.running = running
        self.settings = settings
        self.patches = 0
        self.failures: Counter[str] = Counter()
        self.pods_tracked: int | None = None
        self._logged: set[str] = set()  # failure reasons logged since the last success

    async def run(self) -> None:
        """Pass after pass until cancelled (under lensing_core.background.supervise)."""
        while True:
            await self.run_once()
            await asyncio.sleep(self.settings.interval)

    async def run_once(self) -> int:
        """One pass: list the worker pods, patch those whose cost changed; the number of PATCHes sent."""
        running = self.running()
        if running is None:
            log.debug("pod deletion cost: the event stream is down or settling; nothing patched")
            return 0
        try:
            pods = await self._pods()
        except KubeAPIError as exc:
            self._failed(exc, f"cannot list pods in namespace {self.settings.namespace}")
            return 0
        self.pods_tracked = len(pods)
        costs: dict[str, int] = {}
        for worker, count in running.items():
            pod = self.settings.pod_of(worker)
            if pod is not None:
                costs[pod] = costs.get(pod, 0) + count
        changed = [(name, cost) for name, current in sorted(pods.items()) if (cost := costs.get(name, 0)) != current]
        changed.sort(key=lambda item: item[1] == 0)  # busy pods first: they are the ones to protect
        sent = 0
        for name, cost in changed[: self.settings.max_patches]:
            sent += 1
            try:
                await self.kube.merge_patch(
                    self._pod_path(name), {"metadata": {"annotations": {COST_ANNOTATION: str(cost)}}}
                )
            except KubeAPIError as exc:
                self._failed(exc, f"cannot patch pod {self.settings.namespace}/{name}")
                continue
            self.patches += 1
            self._logged.clear()
        if len(changed) > self.settings.max_patches:
            log.info(
                "pod deletion cost: %d pods changed, %d patched this pass", len(changed), self.settings.max_patches
            )
        return sent

    async def _pods(self) -> dict[str, int]:
        """Worker pods that can still be deleted by a scale-down, with their current cost (no annotation: 0)."""
        query = urlencode({"labelSelector": self.settings.selector}) if self.settings.selector else ""
        path = f"/api/v1/namespaces/{quote(self.settings.namespace, safe='')}/pods" + (f"?{query}" if query else "")
        body = await self.kube.request("GET", path)
        pods: dict[str, int] = {}
        for item in body.get("items", []):
            meta = item.get("metadata", {})
            if "name" not in meta or meta.get("deletionTimestamp") or item.get("status", {}).get("phase") in _FINISHED:
                continue
            pods[meta["name"]] = _cost((meta.get("annotations") or {}).get(COST_ANNOTATION))
        return pods

    def _pod_path(self, name: str) -> str:
        return f"/api/v1/namespaces/{quote(self.settings.namespace, safe='')}/pods/{quote(name, safe='')}"

    def _failed(self, exc: KubeAPIError, what: str) -> None:
        reason = _REASONS.get(exc.status, "unreachable" if exc.status == 0 else "error")
        self.failures[reason] += 1
        if reason in self._logged:
            log.debug("pod deletion cost: %s: %s", what, exc)
            return
        self._logged.add(reason)
        if reason == "forbidden":
            log.warning(
                "pod deletion cost: %s: forbidden; the adapter's identity needs get, list, watch and patch on pods "
                "in namespace %s (the chart's podDeletionCost Role). Retrying every %gs; the metrics are unaffected",
                what,
                self.settings.namespace,
                self.settings.interval,
            )
        else:
            log.warning("pod deletion cost: %s: %s (retrying; the metrics are unaffected)", what, exc)

    def collector(self) -> Collector:
        return PodCostCollector(self)

    async def close(self) -> None:
        await self.kube.close()


def _cost(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0  # absent or not ours: the ReplicaSet reads it as 0 too


class PodCostCollector(Collector):
    def __init__(self, annotator: PodCostAnnotator) -> None:
        self.annotator = annotator

    def collect(self) -> Iterator[Metric]:
        patches = catalog.counter("lensing_adapter_pod_deletion_cost_patches_total")
        patches.add_metric([], self.annotator.patches)
        yield patches
        failures = catalog.counter("lensing_adapter_pod_deletion_cost_failures_total")
        for reason, count in sorted(self.annotator.failures.items()):
            failures.add_metric([reason], count)
        yield failures
        if self.annotator.pods_tracked is not None:
            pods = catalog.gauge("lensing_adapter_pod_deletion_cost_pods")
            pods.add_metric([], self.annotator.pods_tracked)
            yield pods


# -- options ---------------------------------------------------------------------------------------------------


def pod_pattern(text: str) -> re.Pattern[str]:
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression ({exc}): {text!r}") from None
    if "pod" not in pattern.groupindex:
        raise argparse.ArgumentTypeError(f"expected a regular expression with a group named pod, got {text!r}")
    return pattern


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pod deletion cost (scale down idle workers first)")
    add_option(
        group,
        "--pod-deletion-cost",
        action="store_true",
        env="LENSING_ADAPTER_POD_DELETION_COST",
        help="keep controller.kubernetes.io/pod-deletion-cost on each worker pod equal to the tasks its worker "
        "runs, so a scale-down deletes idle workers first (off by default; needs --worker-namespace and "
        "--worker-pod-selector, and patch on pods there; the API server from --lister-kubeconfig or in-cluster)",
    )
    add_option(
        group,
        "--worker-namespace",
        default="",
        env="LENSING_ADAPTER_WORKER_NAMESPACE",
        help="the namespace of the Celery worker pods",
    )
    add_option(
        group,
        "--worker-pod-selector",
        default="",
        env="LENSING_ADAPTER_WORKER_POD_SELECTOR",
        help="label selector of the worker pods, such as app=lensing,component=celery-worker",
    )
    add_option(
        group,
        "--worker-pod-pattern",
        type=pod_pattern,
        default=DEFAULT_POD_PATTERN,
        env="LENSING_ADAPTER_WORKER_POD_PATTERN",
        help="regular expression taking the pod name (group 'pod') from a worker's hostname; the default takes "
        "what follows @ up to the first dot: Celery's celery@<hostname>, and a pod's hostname is its name "
        "(default %(default)s)",
    )
    add_option(
        group,
        "--pod-deletion-cost-interval",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        env="LENSING_ADAPTER_POD_DELETION_COST_INTERVAL",
        help="how often the worker pods are listed and their cost brought up to date (default 5)",
    )
    add_option(
        group,
        "--pod-deletion-cost-max-patches",
        type=positive_int,
        default=20,
        metavar="N",
        env="LENSING_ADAPTER_POD_DELETION_COST_MAX_PATCHES",
        help="PATCHes at most per pass; busy pods first (default 20)",
    )


def settings_from(args: argparse.Namespace) -> PodCostSettings | None:
    """The annotator's settings, or None when --pod-deletion-cost is off. Raises ConfigError when on without
    an explicit namespace and selector."""
    if not args.pod_deletion_cost:
        return None
    if not args.worker_namespace or not args.worker_pod_selector:
        raise ConfigError("--pod-deletion-cost needs --worker-namespace and --worker-pod-selector (the worker pods)")
    try:
        parse_selector(args.worker_pod_selector)
    except SelectorError as exc:
        raise ConfigError(f"--worker-pod-selector {args.worker_pod_selector!r}: {exc}") from None
    return PodCostSettings(
        args.worker_namespace,
        args.worker_pod_selector,
        args.worker_pod_pattern,  # compiled by argparse, the default too
        interval=args.pod_deletion_cost_interval,
        max_patches=args.pod_deletion_cost_max_patches,
    )
