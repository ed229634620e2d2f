"""The demo's live view: columns appear with their metric families; the extra-lines hook."""

from __future__ import annotations

from lensing_metrics import demo

BASE = """\
celery_broker_up{transport="redis"} 1
celery_broker_read_duration_seconds 0.002
celery_queue_length{queue="analyses"} 12
celery_queue_length{queue="cpu"} 0
celery_queue_inflight{queue="analyses"} 4
celery_queue_inflight{queue="cpu"} 0
celery_queue_running{queue="analyses"} 2
celery_queue_running{queue="cpu"} 0
celery_queue_backlog{queue="analyses"} 18
celery_queue_backlog{queue="cpu"} 0
"""


def test_table_from_broker_metrics_only() -> None:
    lines = demo.render_table(demo.Metrics.parse(BASE))
    assert lines[0].split() == ["queue", "waiting", "in", "flight", "running", "backlog"]
    assert lines[2].split() == ["analyses", "12", "4", "2", "18"]
    assert "broker up, last read 2.0 ms" in lines


def test_unknown_running_part_shows_a_dash_not_the_waiting_part() -> None:
    text = "\n".join(line for line in BASE.splitlines() if "running" not in line and "backlog" not in line)
    lines = demo.render_table(demo.Metrics.parse(text + "\n"))
    assert lines[2].split() == ["analyses", "12", "4", "-", "-"]


def test_event_columns_and_hook(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    text = BASE + (
        'active_analyses{queue="analyses"} 2\ncelery_workers{queue="analyses"} 1\n'
        'celery_worker_slots{queue="analyses"} 2\ncelery_worker_slots_busy{queue="analyses"} 2\n'
    )
    metrics = demo.Metrics.parse(text)
    lines = demo.render_table(metrics)
    assert "active" in lines[0] and "workers" in lines[0] and "slots busy" in lines[0]
    assert lines[2].split() == ["analyses", "12", "4", "2", "18", "2", "1", "2", "2"]
    needed = demo.render_table(demo.Metrics.parse(text + 'celery_queue_workers_needed{queue="analyses"} 9\n'))
    assert needed[0].split()[-1] == "needed" and needed[2].split()[-1] == "9"
    monkeypatch.setattr(demo, "EXTRA_LINES", [lambda m: [f"HPA wants {m.value('celery_queue_length'):g}"]])
    assert demo.extra_lines(metrics) == ["HPA wants 12"]


def test_broker_down_says_so() -> None:
    metrics = demo.Metrics.parse('celery_broker_up{transport="redis"} 0\n')
    lines = demo.render_table(metrics)
    assert "(no queues yet)" in lines and any("BROKER DOWN" in line for line in lines)
