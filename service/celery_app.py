"""The Celery application (full stack): Redis as broker, JSON only, at-least-once delivery.

``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after its task finished, so
a worker killed mid-job (SIGKILL, OOM, lost host) leaves the message unacknowledged and another worker runs it
again — after the visibility timeout when the whole worker died (found by a sweep every
``broker_restore_interval_s`` and when a worker starts), at once when only a pool child died. The visibility
timeout defaults to twice ``job_time_limit_s`` (Settings.visibility_timeout_s): a live job is never redelivered,
and a crashed worker's job starts again at most that long (plus the restore interval) after the crash.
The task is idempotent (see service.processing), which is what makes a second run safe. Prefetch 1: a worker
holds at most one job it has not started, so a crash strands little.

Job status and results live in the job store (Redis, with TTL = JOB_TTL_S), not in Celery's result backend:
the task returns nothing anyone waits for (``task_ignore_result``).
"""

from __future__ import annotations

import os

# Before anything in the worker imports torch: libgomp reads its wait policy once, when it is loaded. Its default
# lets an OpenMP thread spin after each parallel region; in a Celery pool process that spinning thread competed
# with OpenVINO's inference threads for the cores (measured, one slot on the shared 2-core machine: the spinning
# thread took 0.13 CPU-s per job and inference 1.38–1.66 s; passive: 0.02 CPU-s and 1.12–1.24 s, as embedded).
# Only where it is not set already; the gateway imports this module only in full-stack mode (service.wiring).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from celery import Celery  # noqa: E402

from .settings import get_settings

RUN_JOB_TASK = "djldml.run_job"  # the gateway enqueues by this name (service.runners), the worker defines it


def make_celery(broker_url: str | None, visibility_timeout_s: int = 1200, restore_interval_s: int = 60,
                job_ttl_s: int = 3600, job_time_limit_s: int = 600) -> Celery:
    app = Celery("djldml", broker=broker_url or "memory://", include=["service.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_expires=job_ttl_s,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A job past its limit gets SoftTimeLimitExceeded (it fails as job_timeout); 30 s later the pool child
        # is killed. Without a limit no visibility timeout could be "longer than the longest job".
        task_soft_time_limit=job_time_limit_s,
        task_time_limit=job_time_limit_s + 30,
        task_track_started=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2.0,
        broker_transport_options={
            "visibility_timeout": visibility_timeout_s,
            # How often a worker looks for messages whose worker died (unacked past the visibility timeout).
            "unacked_restore_interval": restore_interval_s,
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 1.0,
            "socket_timeout": 5.0,
        },
        # The gateway publishes with bounded retries so a dead Redis is a fast 503, not a hang.
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.5},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


_s = get_settings()
celery_app = make_celery(_s.broker_url, _s.visibility_timeout_s, _s.broker_restore_interval_s, _s.job_ttl_s,
                         _s.job_time_limit_s)
