"""A running job's lease: who runs it, renewed by a heartbeat, so that a dead worker is noticed in seconds.

The broker alone notices a dead worker only after its visibility timeout, which must exceed the longest job
(minutes). Instead, whoever runs a job (a Celery task, an embedded thread) holds a lease on it in the job store
(``LEASE_S`` seconds, renewed every third of that by a heartbeat thread) and drops it when done. The gateway's
sweeper (service.sweeper) enqueues again a job that is running by its status but has no lease: its worker
died, and a healthy worker takes it up within ``LEASE_S + SWEEP_INTERVAL_S`` (plus the time to reach the front
of the queue). A delivery that finds the lease held by someone else leaves the job to them, so a job never
runs twice at once (a redelivered message, or the sweeper and the broker both sending it again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import TypeVar

from .jobs import JobStore, StoreUnavailable

log = logging.getLogger("service.lease")

T = TypeVar("T")


def holder_id() -> str:
    """Who holds a lease: host, process and a random part (several holders may share a process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def run_leased(store: JobStore, job_id: str, lease_s: float, fn: Callable[[], T]) -> tuple[bool, T | None]:
    """Run ``fn`` while holding the job's lease; returns (True, its result), or (False, None) without running it
    when another holder has the lease. Raises StoreUnavailable if the lease cannot be taken (store down)."""
    holder = holder_id()
    if not store.take_lease(job_id, holder, lease_s):
        return False, None
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(lease_s / 3):
            try:
                if not store.take_lease(job_id, holder, lease_s):
                    log.warning("job %s: lease taken over by another worker", job_id)
            except StoreUnavailable:  # Redis away: keep trying; the job's own writes wait for it too
                pass
            except Exception as exc:  # the heartbeat must never take the job down
                log.warning("job %s: lease renewal failed: %s", job_id, exc.__class__.__name__)

    beat = threading.Thread(target=heartbeat, name=f"lease-{job_id[:8]}", daemon=True)
    beat.start()
    try:
        return True, fn()
    finally:
        stop.set()
        beat.join(2)
        with contextlib.suppress(StoreUnavailable):  # else it lapses by itself within lease_s
            store.drop_lease(job_id, holder)
