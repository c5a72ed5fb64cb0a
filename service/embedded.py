"""Embedded mode's job runner: a thread pool inside the gateway process, no broker.

Jobs run through the same :func:`service.processing.run_job` as in the Celery worker. A job lost here (the
process dies) is lost with its in-memory store; that is the trade-off of running without Redis. Callbacks go
out from a separate small pool (service.callbacks.CallbackSender), so a slow receiver never holds a job thread.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .backends.base import InferenceBackend
from .callbacks import CallbackSender
from .jobs import JobStore
from .lease import run_leased
from .processing import run_job
from .settings import Settings
from .storage import UploadStorage

log = logging.getLogger("service.embedded")


class EmbeddedRunner:
    def __init__(self, store: JobStore, backend: InferenceBackend, storage: UploadStorage, settings: Settings):
        self.store, self.backend, self.storage, self.settings = store, backend, storage, settings
        self._pool = ThreadPoolExecutor(settings.embedded_workers, thread_name_prefix="djldml-job")
        self.callbacks = CallbackSender(store, settings)
        self._pending = 0
        self._lock = threading.Lock()

    def submit(self, job_id: str, upload: Path) -> None:
        with self._lock:
            self._pending += 1
        self._pool.submit(self._run, job_id, upload)

    def _run(self, job_id: str, upload: Path) -> None:
        try:
            run_leased(self.store, job_id, self.settings.lease_s, lambda: run_job(
                job_id, upload, store=self.store, backend=self.backend, storage=self.storage, settings=self.settings,
                on_finished=self.callbacks.job_finished))
        except Exception:  # run_job already turned job failures into "failed"; this is the last guard
            log.exception("embedded job crashed")
        finally:
            with self._lock:
                self._pending -= 1

    def queue_depth(self) -> int:
        """Jobs submitted and not finished (waiting or running)."""
        return self._pending

    def ready(self) -> tuple[bool, str]:
        return True, ""

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.callbacks.close()
