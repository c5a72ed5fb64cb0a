"""The sweeper (service.sweeper) with the in-memory store and a recording runner: uploads whose job is gone or
finished are deleted, stale unfinished jobs are enqueued again (once per STALE_JOB_S), fresh uploads are left."""

from __future__ import annotations

import os
import time

from service.jobs import DONE, Job, MemoryJobStore
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

    report = sweep(store, storage, runner, settings)
    assert (report.deleted, report.requeued) == (2, 1)
    assert not gone.exists() and not done.exists()
    assert streaming.exists() and stale.exists() and running.exists()
    assert runner.submitted == ["dddd"]
    assert sweep(store, storage, runner, settings).requeued == 0  # touched: not again before STALE_JOB_S
    later = sweep(store, storage, runner, settings, now=time.time() + 101)  # both unfinished jobs stale by then
    assert later.requeued == 2 and runner.submitted == ["dddd", "dddd", "eeee"]
