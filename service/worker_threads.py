"""Inference threads of each Celery pool process: the cores divided among the job slots, not all cores each.

PyTorch's intra-op pool and OpenVINO's CPU plugin (djldml.runtime follows ``torch.get_num_threads()``) each take
every core by default. A prefork worker with ``--concurrency C`` runs C pool processes, each with its own model,
so C jobs' inferences ran ``C × cores`` compute threads on ``cores`` cores, beside the face pipeline's threads;
their OpenMP/TBB workers then wait on each other at every layer's barrier. Measured on the shared 2-core machine
(docs/deploy.md, "Throughput under load"): with two slots a job's inference took 2.6–2.8 s in the worker against
1.8 s in the embedded gateway (whose jobs share one model and take turns), and 1.6–2.1 s with one thread per
pool process. The embedded gateway is left alone: its job threads share one model behind a lock, so one
inference at a time uses every core.

The count is computed in the parent at ``worker_init`` (which knows ``--concurrency``) and applied in each pool
process at ``worker_process_init``, i.e. after the fork and before the process loads its model, so OpenVINO
compiles the network for that many threads. Setting: ``DJLDML_INFERENCE_THREADS`` (service.settings).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("service.worker_threads")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. ``taskset``/cpuset), else ``os.cpu_count()``.

    A CPU quota (cgroup ``cpu.max``, ``docker --cpus``) is not an affinity: set DJLDML_INFERENCE_THREADS there."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def threads_per_process(cores: int, concurrency: int, configured: int | None = None) -> int:
    """Inference threads for one of ``concurrency`` pool processes on ``cores`` cores: ``configured`` when set,
    else ``max(1, cores // concurrency)`` (cores shared out evenly; never 0). Raises ValueError on a count < 1."""
    if configured is not None:
        if configured < 1:
            raise ValueError(f"inference threads must be ≥ 1, got {configured}")
        return configured
    return max(1, cores // max(1, concurrency))


def apply(threads: int) -> int:
    """Set PyTorch's intra-op threads (which OpenVINO's engine follows when the model loads) in this process;
    returns what PyTorch reports afterwards."""
    import torch  # the worker imports it anyway; here only when a pool process starts

    torch.set_num_threads(threads)
    return torch.get_num_threads()
