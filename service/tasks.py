"""The Celery task: run one job (ids and paths as arguments, never video bytes).

Everything the task needs (store, backend, storage) is built once per worker process and reused. A failure of
the video or the backend ends the job as ``failed`` inside :func:`run_job`. The worker's job store waits out a
Redis outage of up to STORE_PATIENCE_S (service.jobs); a longer one makes the task retry (bounded), and when
even that cannot reach the broker the job is *deferred*, never dropped: its upload stays, and the gateway's
sweeper (service.sweeper) enqueues it again (after LEASE_S if it had started, STALE_JOB_S if still queued).
Anything unexpected is caught so the worker never dies on a job.
"""

from __future__ import annotations

import contextlib
import logging
import os
from functools import lru_cache

from celery.exceptions import Retry
from celery.signals import worker_init, worker_process_init

from . import worker_threads
from .callbacks import DeliveryFailed, post_once, retry_delay_s
from .celery_app import RUN_JOB_TASK, celery_app
from .jobs import FAILED, Job, StoreUnavailable
from .lease import run_leased
from .processing import run_job
from .settings import get_settings
from .storage import UnsafeUploadDir
from .wiring import build_backend_or_unavailable, build_storage, build_store

log = logging.getLogger("service.tasks")

STORE_RETRIES = 5


@lru_cache(maxsize=1)
def _components():
    s = get_settings()
    return build_store(s, worker=True), build_backend_or_unavailable(s), build_storage(s), s


@worker_init.connect
def _refuse_an_unsafe_upload_dir(**_) -> None:
    """A worker whose upload directory is not private stops at start-up (exit 2), not at every job."""
    try:
        build_storage(get_settings())
    except UnsafeUploadDir as exc:
        log.critical("%s", exc)
        raise SystemExit(2) from None


_pool_threads: int | None = None  # set in the parent at worker_init, inherited by each forked pool process


@worker_init.connect
def _share_the_cores_among_slots(sender=None, **_) -> None:
    """Each of ``--concurrency`` pool processes gets cores // concurrency inference threads (or
    DJLDML_INFERENCE_THREADS), applied after the fork by :func:`_set_inference_threads` (service.worker_threads)."""
    global _pool_threads
    concurrency = getattr(sender, "concurrency", None)
    cores = worker_threads.available_cores()
    _pool_threads = worker_threads.threads_per_process(
        cores, concurrency if isinstance(concurrency, int) else cores, get_settings().inference_threads)


@worker_process_init.connect
def _set_inference_threads(**_) -> None:
    """In each pool process, before its first job loads the model (OpenVINO compiles for torch's thread count)."""
    if _pool_threads is not None:
        log.info("pool process %d: %d inference threads, OMP_WAIT_POLICY=%s", os.getpid(),
                 worker_threads.apply(_pool_threads), os.environ.get("OMP_WAIT_POLICY"))


@celery_app.task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True,
                 max_retries=STORE_RETRIES)
def run_job_task(self, job_id: str, upload_path: str) -> str:
    store, backend, storage, settings = _components()
    try:
        # final=False: an unreachable store keeps the upload, whatever the attempt (the job is not over).
        ran, status = run_leased(store, job_id, settings.lease_s, lambda: run_job(
            job_id, upload_path, store=store, backend=backend, storage=storage, settings=settings, final=False,
            on_finished=_queue_callback))
        if not ran:
            log.info("job %s is running in another worker; this delivery leaves it to that one", job_id)
            return "running-elsewhere"
        return status
    except StoreUnavailable as exc:
        if self.request.retries >= STORE_RETRIES:
            log.error("job %s deferred: job store unreachable; the sweeper will enqueue it again", job_id)
            return "deferred"
        try:
            raise self.retry(countdown=2 ** self.request.retries, exc=exc) from None
        except Retry:
            raise
        except Exception as publish_error:  # the broker (same Redis) is down too: the sweeper is the backstop
            log.error("job %s deferred: retry not enqueued (%s)", job_id, publish_error.__class__.__name__)
            return "deferred"
    except Exception as exc:  # run_job fails jobs itself; this guards against a malformed message
        log.error("job %s: task error %s", job_id, exc.__class__.__name__)
        with contextlib.suppress(Exception):
            store.update(job_id, status=FAILED, error={"code": "internal_error", "detail": exc.__class__.__name__})
        return FAILED


def _queue_callback(job: Job) -> None:
    """run_job's end hook: the callback goes out as its own task, so its retries never hold this worker."""
    if job.callback_url:
        deliver_callback_task.apply_async((job.id,))


@celery_app.task(name="djldml.deliver_callback", bind=True, acks_late=True, max_retries=None)
def deliver_callback_task(self, job_id: str) -> str:
    """POST a finished job's callback once (service.callbacks.post_once); on failure Celery retries it with
    doubling delays, CALLBACK_RETRIES times. A worker is held for one CALLBACK_TIMEOUT_S at most per attempt."""
    store, _, _, settings = _components()
    try:
        return "sent" if post_once(job_id, store, settings) is not None else "nothing to send"
    except (DeliveryFailed, StoreUnavailable) as exc:
        if self.request.retries >= settings.callback_retries:
            log.warning("job %s: callback not delivered after %d attempts (%s)", job_id, self.request.retries + 1,
                        exc)
            return "undelivered"
        log.warning("job %s: callback attempt %d failed (%s); retrying", job_id, self.request.retries + 1, exc)
        raise self.retry(countdown=retry_delay_s(settings, self.request.retries), exc=exc) from None
