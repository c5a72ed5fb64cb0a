"""A Celery worker process of the local stack."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .processes import ProcessHandle, free_port, spawn


def start_worker(env: Mapping[str, str], workdir: str | Path | None = None, concurrency: int = 1,
                 timeout: float = 60.0, name: str | None = None, wait: bool = True) -> ProcessHandle:
    """A Celery worker on ``service.celery_app``; ``env`` carries the DJLDML_* settings (broker, backend).

    ``wait=False`` returns at once (start several things in parallel, then ``handle.wait_ready()``).
    """
    workdir = Path(workdir or tempfile.mkdtemp(prefix="djldml-worker-"))
    node = name or f"djldml-{os.getpid()}-{free_port()}@%h"
    cmd = [sys.executable, "-m", "celery", "-A", "service.celery_app:celery_app", "worker",
           "--concurrency", str(concurrency), "-l", "INFO", "-n", node, "--without-gossip", "--without-mingle"]
    handle = spawn("celery worker", cmd, workdir / f"worker-{node.split('@')[0]}.log", env)
    # Celery logs "<node> ready." once it consumes from the broker.
    handle.ready_check = lambda: " ready." in handle.log_tail(100_000)
    handle.ready_timeout = timeout
    if wait:
        handle.wait_ready()
    return handle


