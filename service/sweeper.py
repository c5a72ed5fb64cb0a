"""The sweeper: no accepted job is lost and no upload outlives its job, whatever broke in between.

It runs in the gateway (a thread, every ``SWEEP_INTERVAL_S``) and looks at the uploads on disk, which are named
by job id. For each upload that nobody is writing any more (untouched for longer than the upload idle timeout)
and whose id is not still reserved by the gateway (received, being probed, job not yet created):

- the job is gone (deleted, expired, or never created) or finished → the upload is deleted;
- the job is running by its status (preprocessing, inferring) but nobody holds its lease (service.lease) and
  it has not been updated for ``LEASE_S`` → its worker died: it is enqueued again at once, so a healthy worker
  resumes it within about ``LEASE_S + SWEEP_INTERVAL_S``, not after the broker's visibility timeout;
- the job is queued and has not been updated for ``STALE_JOB_S`` (5 min) → its message may be lost (a Redis
  without persistence restarted; a retry that could not be published while Redis stalled; a message that a
  worker popped just as its connection dropped — kombu's Redis transport loses those): it is enqueued again.
  A job that merely waits behind others gets a duplicate message, which is a no-op when it arrives.

Either way ``updated_at`` is touched, so the job is not enqueued again before another period.

With an object store (service.s3_storage) an upload still being received, or abandoned by a gateway that died,
is an incomplete multipart upload: once idle for the same while and not reserved, it is aborted (its parts
deleted).

Enqueuing a job twice is safe: the task is idempotent (a finished job is left alone, see service.processing).
So an upload outlives its job by at most ``SWEEP_INTERVAL_S`` (plus the idle timeout for an abandoned upload),
a job whose worker died runs again after about ``LEASE_S + SWEEP_INTERVAL_S``, and one whose message was lost
after at most ``STALE_JOB_S + SWEEP_INTERVAL_S``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from .jobs import INFERRING, PREPROCESSING, QUEUED, JobStore, StoreUnavailable
from .settings import Settings
from .storage import UploadStorage

log = logging.getLogger("service.sweeper")

RUNNING = (PREPROCESSING, INFERRING)


@dataclass
class SweepReport:
    deleted: int = 0  # uploads whose job was gone or finished
    requeued: int = 0  # unfinished jobs enqueued again (worker lost, or message lost)


def sweep(store: JobStore, storage: UploadStorage, runner, settings: Settings,
          now: float | None = None) -> SweepReport:
    """One pass over the upload directory (see the module docstring); raises StoreUnavailable when the job
    store cannot be read (nothing is deleted then: an unreadable job is not a gone job)."""
    now = time.time() if now is None else now
    report = SweepReport()
    quiet_s = settings.upload_idle_timeout_s + 5.0  # an upload still streaming in is written to at least this often
    for job_id, path, age_s in storage.uploads():
        if age_s < quiet_s:
            continue
        job = store.get(job_id)
        if job is None and store.reserved(job_id):  # received, being probed: its job is about to exist
            continue
        if job is None or job.finished:
            storage.delete(path)
            report.deleted += 1
        elif (job.status in RUNNING and now - job.updated_at > settings.lease_s and not store.has_lease(job_id)) \
                or (job.status == QUEUED and now - job.updated_at > settings.stale_job_s):
            if store.update(job_id) is None:  # touch: not again for another STALE_JOB_S
                continue
            try:
                runner.submit(job_id, path)
                report.requeued += 1
            except StoreUnavailable:
                log.warning("sweeper: broker unreachable, job not enqueued again yet")
    for job_id, ref, age_s in storage.partial_uploads():  # an object store's incomplete multipart uploads
        # Abandoned (the gateway died mid-upload) once idle and not being received (not reserved, no job yet).
        if age_s >= quiet_s and not (store.get(job_id) is None and store.reserved(job_id)):
            storage.delete(ref)
            report.deleted += 1
    if report.deleted or report.requeued:
        log.info("sweeper: %d uploads deleted, %d stale jobs enqueued again", report.deleted, report.requeued)
    return report


class Sweeper:
    """Runs :func:`sweep` every ``settings.sweep_interval_s`` in a daemon thread until ``stop()``."""

    def __init__(self, store: JobStore, storage: UploadStorage, runner, settings: Settings):
        self.store, self.storage, self.runner, self.settings = store, storage, runner, settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="djldml-sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.sweep_interval_s):
            try:
                sweep(self.store, self.storage, self.runner, self.settings)
            except StoreUnavailable:
                log.warning("sweeper: job store unreachable; next pass in %.0f s", self.settings.sweep_interval_s)
            except Exception as exc:  # the sweeper must outlive any one bad pass
                log.error("sweeper pass failed: %s", exc.__class__.__name__)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
