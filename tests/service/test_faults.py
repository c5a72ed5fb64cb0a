"""Faults in the full stack: a worker killed mid-job, Redis down, TorchServe down. Each test restores what it
broke, so the session's shared stack is whole again for the next test."""

from __future__ import annotations

import time

import httpx
import pytest

from service.stack import start_redis, start_torchserve
from tests.service.conftest import wait_job
from tests.service.test_api import assert_problem, assert_valid_result, upload

pytestmark = pytest.mark.integration


def wait_status(c: httpx.Client, job_id: str, statuses: tuple[str, ...], timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = c.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert job["status"] not in ("done", "failed"), job
        assert time.monotonic() < deadline, job
        time.sleep(0.02)


def test_worker_killed_mid_job_the_job_still_completes(stack_service, videos):
    stack = stack_service.stack
    with stack_service.client() as c:
        job_id = c.post("/jobs", files=upload(videos["face"])).json()["id"]
        wait_status(c, job_id, ("preprocessing", "inferring"))
        killed = list(stack.workers)
        for w in killed:
            w.kill()  # SIGKILL the whole worker (main process and pool child) mid-job
        stack.workers = []
        time.sleep(0.5)
        assert c.get(f"/jobs/{job_id}").json()["status"] in ("preprocessing", "inferring")  # not lost, not failed
        stack.add_worker()
        job = wait_job(c, job_id, timeout=90)
        assert job["status"] == "done", job
        assert_valid_result(job["result"])
    assert not any(w.alive() for w in killed)


def test_redis_down_gives_503_then_recovers(stack_service, videos):
    stack = stack_service.stack
    port, workdir = stack.redis.port, stack.redis.log_path.parent
    stack.redis.stop()
    try:
        with stack_service.client() as c:
            t = time.monotonic()
            assert_problem(c.post("/predict", files=upload(videos["face"])), 503, "queue_unavailable")
            assert_problem(c.get("/jobs/0123456789abcdef"), 503, "queue_unavailable")
            assert time.monotonic() - t < 10  # fast failure, no hang
            ready = c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["job_store"] != "ok"
            assert c.get("/healthz").status_code == 200  # alive, just not ready
    finally:
        stack.redis = start_redis(port=port, workdir=workdir)
    stack_service.wait_ready(60)
    with stack_service.client() as c:
        r = c.post("/predict", files=upload(videos["face"]))
        assert r.status_code == 200, r.text
        assert_valid_result(r.json())


def test_torchserve_down_typed_failure_no_hang_then_recovers(stack_service, videos, model_store):
    stack = stack_service.stack
    ts = stack.torchserve
    with stack_service.client() as c:
        job_id = c.post("/jobs", files=upload(videos["face"])).json()["id"]
        wait_status(c, job_id, ("preprocessing",))
        ts.kill()  # TorchServe crashes while the worker is still making face clips
        try:
            t = time.monotonic()
            job = wait_job(c, job_id, timeout=60)
            # bounded retries (2 × 0.5 s, doubling), then a typed failure — never a hang
            assert job["status"] == "failed" and job["error"]["code"] == "backend_unavailable", job
            assert job["error"]["status"] == 503
            assert time.monotonic() - t < 45
            time.sleep(2.5)  # the gateway caches backend readiness for 2 s
            assert_problem(c.post("/predict", files=upload(videos["face"])), 503, "backend_unavailable")
            assert c.get("/readyz").json()["checks"]["backend"] != "ok"
        finally:
            stack.torchserve = start_torchserve(model_store, ts.models, ports=ts.ports,
                                                workdir=ts.workdir.parent / "torchserve-restarted")
    stack_service.wait_ready(60)
    with stack_service.client() as c:
        r = c.post("/predict", files=upload(videos["face"]))
        assert r.status_code == 200, r.text
