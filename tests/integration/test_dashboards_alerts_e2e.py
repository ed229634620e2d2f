"""End to end: a real Prometheus scrapes `lensing-metrics exporter` reading the real Redis, with a real Celery
worker, and evaluates the project's rules; a real Alertmanager delivers the page to a webhook of the test.

The exporter runs with its default sources, the broker and the Celery event stream (both required: a test that
passed with the event source exporting nothing would not test its panels); no GPU, no adapter (another program),
no kube-state-metrics, no lensing API. Every dashboard query whose metrics all come from a source that runs must
return data; the others are printed as excluded, with the source they wait for (or the fault that would make
their series, e.g. a failed broker read).
"""

from __future__ import annotations

import pytest
from celery import Celery

from tests.support.promql import (
    DASHBOARDS,
    RULE_FILES,
    dashboard_queries,
    interpolate,
    metric_names,
    missing_source,
    rules,
    running_components,
)
from tests.support.promstack import NAMESPACE, monitoring_stack
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

VARIABLES = {
    "namespace": NAMESPACE,
    "queue": ".*",
    "hpa": "lensing-celery-worker-hpa",
    "hpa_target": "10",
    "gpu_price": "0.158",
}
RUNBOOK = "https://github.com/lensing/lensing-metrics/blob/main/docs/runbook.md#lensingceleryqueuenoworkers"


def test_dashboards_and_alerts_against_real_prometheus_and_alertmanager(redis_url: str, celery_worker) -> None:  # type: ignore[no-untyped-def]
    producer = Celery("producer", broker=redis_url)
    for i in range(6):  # a queue nobody consumes: the no-worker page
        producer.send_task("lensing.analyse_lens", args=[i, 0.1], queue="orphan")
    worker = celery_worker(redis_url, queues=["analyses"], concurrency=2, prefetch=2)

    with monitoring_stack(redis_url, ["analyses", "orphan"], {"LensingCeleryQueueNoWorkers": "1s"}) as stack:
        prometheus, webhook = stack["prometheus"], stack["webhook"]
        wait_for(lambda: prometheus.query("celery_broker_up == 1"), 30, interval=0.5, what="the first scrape")
        stored = {r["metric"]["__name__"] for r in prometheus.query('count by (__name__) ({job=~".+"})')}
        running = running_components(stored)
        assert {"exporter-broker", "exporter-events"} <= running, running
        wait_for(lambda: prometheus.query('celery_workers{queue="analyses"} > 0'), 30, what="a live worker")
        producer.send_task("lensing.fail", queue="analyses")  # finished tasks for the task panels
        producer.send_task("lensing.analyse_lens", args=[0, 0.1], queue="analyses")
        for i in range(10):  # then tasks in flight and waiting
            producer.send_task("lensing.analyse_lens", args=[i, 30], queue="analyses")

        # The page: the no-worker alert for the orphan queue reaches the receiver with its runbook link.
        def page() -> dict | None:  # type: ignore[type-arg]
            for alert in webhook.alerts():
                labels = alert["labels"]
                if labels.get("alertname") == "LensingCeleryQueueNoWorkers" and labels.get("queue") == "orphan":
                    return alert  # type: ignore[no-any-return]
            return None

        alert = wait_for(page, 45, interval=0.5, what="the LensingCeleryQueueNoWorkers page at the webhook")
        assert alert["status"] == "firing"
        assert alert["labels"]["severity"] == "critical"
        assert alert["labels"]["namespace"] == NAMESPACE
        assert alert["annotations"]["runbook_url"] == RUNBOOK
        assert alert["annotations"]["dashboard_url"].endswith(f"?var-namespace={NAMESPACE}&var-queue=orphan")
        assert alert["annotations"]["description"].startswith(f"Queue orphan in {NAMESPACE} has 6 tasks waiting")

        # Every rule of alerts/ is loaded and evaluates without error.
        expected = {(r.get("alert") or r["record"]) for _, r in rules(RULE_FILES)}

        def loaded_ok() -> bool:
            groups = prometheus.rule_groups()
            loaded = [rule for group in groups for rule in group["rules"]]
            return {r["name"] for r in loaded} == expected and all(r["health"] == "ok" for r in loaded)

        wait_for(loaded_ok, 30, interval=0.5, what="every rule loaded with health ok")

        # Celery's default acknowledgement: the 2 processes run 2 slow tasks (acknowledged when they started)
        # and the worker holds 2 x prefetch 2 = 4 more unacknowledged; 4 wait; the backlog counts all 10.
        settled = (
            'celery_queue_running{queue="analyses"} == 2 and on (queue) celery_queue_inflight{queue="analyses"} == 4'
            ' and on (queue) celery_queue_length{queue="analyses"} == 4'
        )
        wait_for(lambda: prometheus.query(settled), 45, interval=0.5, what="2 running, 4 in flight, 4 waiting")
        backlog = prometheus.query('celery_queue_backlog{queue="analyses"}')
        assert float(backlog[0]["value"][1]) == 10

        # Every dashboard query whose source runs here returns data.
        checked, excluded = [], {}
        for path in DASHBOARDS:
            for query in dashboard_queries(path):
                if "variable" in query.where:
                    continue
                why = missing_source(metric_names(query.parse()), running)
                if why:
                    excluded[query.where] = why
                    continue
                promql = interpolate(query.expr, VARIABLES, rate_interval="10s", range_="1m")
                wait_for(lambda p=promql: prometheus.query(p), 30, interval=0.5, what=f"data for {query.where}")
                checked.append(query.where)
        must = {
            "lensing-api-performance.json: Celery Queue Length [A]",
            "celery-gpu-workers.json: Waiting [A]",
            "celery-gpu-workers.json: In flight [A]",
            "celery-gpu-workers.json: Backlog (waiting + delivered, not finished) [A]",
            "celery-gpu-workers.json: Worker HPA: replicas against the backlog [D]",
            "celery-gpu-workers.json: Sources up [A]",
            "celery-gpu-workers.json: Broker reads and errors [A]",
            "celery-gpu-workers.json: Running [A]",
            "celery-gpu-workers.json: Live workers [A]",
            "celery-gpu-workers.json: Task rate by state [A]",
            "celery-gpu-workers.json: Task runtime [A]",
            "lensing-api-performance.json: Active Analyses [A]",
        }
        assert must <= {where.removeprefix("dashboards/") for where in checked}, checked
        print(f"\nsources running: {sorted(running)}; {len(checked)} dashboard queries returned data; excluded:")
        for where, why in sorted(excluded.items()):
            print(f"  {where}: {why}")
    worker.kill()  # its 30 s tasks need not finish: the fixture flushes the database
