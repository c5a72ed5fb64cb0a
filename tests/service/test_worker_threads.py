"""Each Celery pool process gets its share of the cores for inference (service.worker_threads).

Unit: the rule (cores // concurrency, at least 1; the setting wins). Integration: a real Celery worker on a real
Redis, two pool processes; each logs the thread count PyTorch reports after the setting was applied in it, and
the OpenMP wait policy service.celery_app set before torch was imported.
"""

from __future__ import annotations

import re
import time

import pytest

from devstack import start_redis, start_worker
from service.worker_threads import available_cores, threads_per_process


@pytest.mark.parametrize(("cores", "concurrency", "configured", "expected"), [
    (2, 1, None, 2), (2, 2, None, 1), (16, 4, None, 4), (16, 3, None, 5), (2, 4, None, 1), (8, 2, 3, 3),
])
def test_threads_per_process(cores, concurrency, configured, expected):
    assert threads_per_process(cores, concurrency, configured) == expected


def test_threads_per_process_refuses_zero():
    with pytest.raises(ValueError):
        threads_per_process(4, 1, 0)


def _pool_thread_lines(worker, n: int, timeout: float = 60.0) -> list[tuple[int, int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.findall(r"pool process (\d+): (\d+) inference threads, OMP_WAIT_POLICY=PASSIVE",
                           worker.log_tail(200_000))
        if len(found) >= n:
            return [(int(pid), int(t)) for pid, t in found]
        time.sleep(0.2)
    raise AssertionError(f"{n} pool processes did not report their threads:\n{worker.log_tail()}")


@pytest.mark.parametrize("configured", [None, 1])
def test_each_pool_process_gets_its_threads(tmp_path, configured):
    redis = start_redis(workdir=tmp_path / "redis")
    uploads = tmp_path / "uploads"
    uploads.mkdir(mode=0o700)
    env = {"DJLDML_BROKER_URL": redis.url, "DJLDML_UPLOAD_DIR": str(uploads)}
    if configured is not None:
        env["DJLDML_INFERENCE_THREADS"] = str(configured)
    worker = start_worker(env, workdir=tmp_path / "worker", concurrency=2)
    try:
        lines = _pool_thread_lines(worker, 2)
    finally:
        worker.stop()
        redis.stop()
    expected = configured or max(1, available_cores() // 2)
    assert len({pid for pid, _ in lines}) == 2 and worker.pid not in {pid for pid, _ in lines}
    assert [t for _, t in lines] == [expected, expected]
