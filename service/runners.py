"""The gateway's job runner in the full stack: Celery through Redis.

It enqueues by task *name* (``RUN_JOB_TASK``), so the gateway never imports the worker's task module
(service.tasks) and what it builds (model, storage); the embedded thread pool is service.embedded.EmbeddedRunner.
"""

from __future__ import annotations

from .celery_app import RUN_JOB_TASK, celery_app
from .jobs import StoreUnavailable


class CeleryRunner:
    """The gateway's side of the task: enqueue jobs, report queue depth and broker health."""

    QUEUE = "celery"  # Celery's default queue name: a Redis list of waiting messages

    def __init__(self, broker_url: str):
        import redis

        self._redis = redis.Redis.from_url(broker_url, socket_connect_timeout=1.0, socket_timeout=3.0)

    def submit(self, job_id: str, upload) -> None:
        """Enqueue; raises StoreUnavailable (→ 503 queue_unavailable) when the broker cannot take it."""
        try:
            celery_app.send_task(RUN_JOB_TASK, (job_id, str(upload)), task_id=job_id)
        except Exception as exc:  # kombu/redis raise many connection error types
            raise StoreUnavailable(f"broker unreachable: {exc.__class__.__name__}") from None

    def queue_depth(self) -> int:
        try:
            return int(self._redis.llen(self.QUEUE))
        except Exception:
            return -1

    def ready(self) -> tuple[bool, str]:
        try:
            self._redis.ping()
            return True, ""
        except Exception as exc:
            return False, f"broker unreachable: {exc.__class__.__name__}"

    def close(self) -> None:
        self._redis.close()
