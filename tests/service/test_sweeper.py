"""The sweeper (service.sweeper) with the in-memory store and a recording runner: uploads whose job is gone or
finished are deleted, stale unfinished jobs are enqueued again (once per STALE_JOB_S), running jobs whose lease
lapsed at once, fresh uploads are left. And the lease itself (service.lease)."""

from __future__ import annotations

import os
import time

from service.jobs import DONE, PREPROCESSING, Job, MemoryJobStore
from service.lease import run_leased
from service.settings import Settings
from service.storage import LocalUploadStorage
from service.sweeper import sweep


class Runner:
    def __init__(self):
        self.submitted: list[str] = []

    def submit(self, job_id, upload) -> None:
        self.submitted.append(job_id)


def _upload(storage: LocalUploadStorage, name: str, age_s: float):
    w = storage.open_writer(100, name)
    w.write(b"x")
    w.close()
    t = time.time() - age_s
    os.utime(w.path, (t, t))
    return w.path


def test_sweep_deletes_orphans_and_requeues_stale_jobs(tmp_path):
    settings = Settings(upload_dir=tmp_path / "up", upload_idle_timeout_s=5, stale_job_s=100)
    store, storage, runner = MemoryJobStore(ttl_s=3600), LocalUploadStorage(tmp_path / "up"), Runner()
    gone = _upload(storage, "aaaa", 60)  # its job expired or was deleted
    done = _upload(storage, "bbbb", 60)
    store.create(Job(id="bbbb", owner="o"))
    store.update("bbbb", status=DONE)
    streaming = _upload(storage, "cccc", 1)  # still being received: no job yet, but fresh
    stale = _upload(storage, "dddd", 60)
    store.create(Job(id="dddd", owner="o", upload=str(stale)))
    store._jobs["dddd"].updated_at = time.time() - 500  # queued for 500 s with no sign of life
    running = _upload(storage, "eeee", 60)
    store.create(Job(id="eeee", owner="o"))  # updated just now
    probing = _upload(storage, "ffff", 60)  # received a while ago, still being probed: reserved, no job yet
    assert store.reserve("o", "ffff", 10)

    report = sweep(store, storage, runner, settings)
    assert (report.deleted, report.requeued) == (2, 1)
    assert not gone.exists() and not done.exists()
    assert streaming.exists() and stale.exists() and running.exists() and probing.exists()
    assert runner.submitted == ["dddd"]
    assert sweep(store, storage, runner, settings).requeued == 0  # touched: not again before STALE_JOB_S
    later = sweep(store, storage, runner, settings, now=time.time() + 101)  # both unfinished jobs stale by then
    assert later.requeued == 2 and runner.submitted == ["dddd", "dddd", "eeee"]


def test_a_running_job_whose_lease_lapsed_is_requeued_at_once_a_leased_one_is_not(tmp_path):
    settings = Settings(upload_dir=tmp_path / "up", upload_idle_timeout_s=5, lease_s=2, stale_job_s=1000)
    store, storage, runner = MemoryJobStore(ttl_s=3600), LocalUploadStorage(tmp_path / "up"), Runner()
    for jid in ("dead", "alive"):
        _upload(storage, jid, 60)
        store.create(Job(id=jid, owner="o"))
        store.update(jid, status=PREPROCESSING)
        store._jobs[jid].updated_at = time.time() - 10  # no status write for 10 s (> LEASE_S)
    assert store.take_lease("alive", "worker-1", 30)
    assert sweep(store, storage, runner, settings).requeued == 1
    assert runner.submitted == ["dead"]


def test_run_leased_runs_once_at_a_time_and_the_heartbeat_keeps_the_lease(tmp_path):
    store = MemoryJobStore(ttl_s=3600)
    inner: list = []

    def job():
        time.sleep(0.5)  # longer than the lease: only the heartbeat keeps it
        inner.append(store.has_lease("j"))
        inner.append(run_leased(store, "j", 0.2, lambda: "second"))  # a second delivery meanwhile
        return "first"

    assert run_leased(store, "j", 0.2, job) == (True, "first")
    assert inner == [True, (False, None)]
    assert not store.has_lease("j")  # dropped when done


def test_a_lapsed_lease_can_be_taken_over():
    store = MemoryJobStore(ttl_s=3600)
    assert store.take_lease("j", "a", 0.05) and not store.take_lease("j", "b", 0.05)
    assert store.take_lease("j", "a", 0.05)  # renewal by the holder
    time.sleep(0.08)
    assert not store.has_lease("j") and store.take_lease("j", "b", 0.05)
    store.drop_lease("j", "a")  # not the holder: nothing happens
    assert store.has_lease("j")
