"""GPU process -> Celery task: the key both sides compute, the hook's file, bounded labels."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lensing_core.labels import LabelCap
from lensing_sources.gpu import celery_hook
from lensing_sources.gpu.attribution import OTHER, TaskAttributor
from lensing_sources.gpu.celery_hook import STALE_AFTER_SECONDS, process_key


def fake_proc(root: Path, pid: int, nspids: str, starttime: int, comm: str = "celery) worker (x") -> None:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "status").write_text(f"Name:\tcelery\nTgid:\t{pid}\nNSpid:\t{nspids}\nPPid:\t1\n")
    rest = " ".join(["S", "1", *["0"] * 17, str(starttime), "123"])  # fields 3..21, starttime is field 22
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) {rest}\n")


def test_key_of_a_process_in_a_container_is_its_innermost_pid_and_start_time(tmp_path: Path) -> None:
    fake_proc(tmp_path, 31337, "31337\t7", 889911)
    assert process_key(31337, str(tmp_path)) == "7-889911"  # what the worker computes as its own key
    fake_proc(tmp_path, 4242, "4242", 5)
    assert process_key(4242, str(tmp_path)) == "4242-5"
    assert process_key(99, str(tmp_path)) is None  # gone


def test_own_key_matches_what_the_exporter_computes_from_the_host_pid() -> None:
    assert process_key() == process_key(os.getpid())


def test_hook_publishes_and_attributor_reads_then_finish_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LENSING_GPU_TASK_DIR", str(tmp_path / "tasks"))
    monkeypatch.setitem(celery_hook._state, "key", None)
    task = SimpleNamespace(name="lensing.analyse_lens", request=SimpleNamespace(delivery_info={"routing_key": "gpu"}))
    celery_hook._task_started(task=task)
    attributor = TaskAttributor(str(tmp_path / "tasks"), max_task_names=10)
    assert attributor.lookup(os.getpid()) == ("gpu", "lensing.analyse_lens")
    celery_hook._task_finished()
    assert attributor.lookup(os.getpid()) is None
    assert list((tmp_path / "tasks").iterdir()) == []


def test_hook_never_breaks_the_task_when_the_directory_is_unwritable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("LENSING_GPU_TASK_DIR", str(blocker / "tasks"))
    task = SimpleNamespace(name="t", request=SimpleNamespace(delivery_info={}))
    celery_hook._task_started(task=task)  # no exception
    celery_hook._task_finished()


def test_the_first_task_of_a_process_removes_files_older_than_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    monkeypatch.setenv("LENSING_GPU_TASK_DIR", str(tasks))
    monkeypatch.setitem(celery_hook._state, "key", None)
    monkeypatch.setitem(celery_hook._state, "pruned", False)
    now = time.time()
    for name, age in (("7-100.json", STALE_AFTER_SECONDS + 3600), ("8-200.json", STALE_AFTER_SECONDS - 3600)):
        (tasks / name).write_text('{"queue": "q", "task": "left by a SIGKILLed process"}')
        os.utime(tasks / name, (now - age, now - age))
    task = SimpleNamespace(name="t", request=SimpleNamespace(delivery_info={}))
    celery_hook._task_started(task=task)
    assert sorted(p.name for p in tasks.iterdir()) == sorted(["8-200.json", f"{process_key()}.json"])


def test_a_file_left_by_a_dead_process_matches_nothing(tmp_path: Path) -> None:
    fake_proc(tmp_path / "proc", 500, "500\t7", 1000)  # the new process with namespace pid 7
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "7-999.json").write_text('{"queue": "q", "task": "old"}')  # pid 7 before a restart
    attributor = TaskAttributor(str(tmp_path / "tasks"), 10, proc=str(tmp_path / "proc"))
    assert attributor.lookup(500) is None
    (tmp_path / "tasks" / "7-1000.json").write_text('{"queue": "q", "task": "new"}')
    assert attributor.lookup(500) == ("q", "new")
    (tmp_path / "tasks" / "7-1000.json").write_text("{not json")
    assert attributor.lookup(500) is None


def test_label_values_are_capped() -> None:
    label = LabelCap(2)
    assert [label(v) for v in ["a", "b", "c", "a", "d", "b"]] == ["a", "b", OTHER, "a", OTHER, "b"]
