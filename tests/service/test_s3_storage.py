"""The S3-compatible upload store beyond the storage tests both stores pass (test_storage.py), against a real
``rclone serve s3`` on 127.0.0.1: the sweeper on an object store (abandoned multipart uploads aborted, orphans
deleted, stale jobs re-enqueued with their object reference), an unreachable store as typed 503s and typed job
failures, the gateway streaming to the store, and a whole job through the local full stack (Redis + Celery worker
with its own upload directory, as on another host) with the object store."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from devstack import free_port
from service import app as app_module
from service import processing, s3_storage, wiring
from service.jobs import DONE, Job, MemoryJobStore
from service.s3_storage import MIN_PART_BYTES, S3UploadStorage
from service.settings import Settings
from service.storage import StorageUnavailable
from service.sweeper import sweep
from tests.media import carphone_path
from tests.service.conftest import KEY, MODEL_NAME, SERVICE_ENV, serve_stack, wait_job
from tests.service.fakes import FakeBackend, fake_clips


def make_storage(env: dict, directory, **kw) -> S3UploadStorage:
    return S3UploadStorage(env["DJLDML_UPLOAD_STORE"], directory, endpoint_url=env["DJLDML_S3_ENDPOINT_URL"],
                           part_bytes=MIN_PART_BYTES, **kw)


class Runner:
    def __init__(self):
        self.submitted: list[tuple[str, str]] = []

    def submit(self, job_id, upload) -> None:
        self.submitted.append((job_id, upload))


def later(monkeypatch, seconds: float) -> None:
    """Make the storage see its objects and parts ``seconds`` older (the server's clock cannot be moved)."""
    now = time.time() + seconds
    monkeypatch.setattr(s3_storage.time, "time", lambda: now)


def test_the_sweeper_aborts_abandoned_uploads_and_deletes_orphans(s3_env, tmp_path, monkeypatch):
    settings = Settings(upload_dir=tmp_path / "up", upload_idle_timeout_s=5, stale_job_s=100)
    storage, store, runner = make_storage(s3_env, tmp_path / "up"), MemoryJobStore(ttl_s=3600), Runner()

    def partial(name: str):  # one part sent, never completed: what a gateway that died leaves behind
        w = storage.open_writer(10 * MIN_PART_BYTES, name)
        w.write(b"p" * (MIN_PART_BYTES + 1))
        w._wait()
        return w

    def complete(name: str) -> str:
        w = storage.open_writer(100, name)
        w.write(b"abc")
        w.close()
        return w.path

    partial("aaaa")  # abandoned: no job, no reservation
    partial("bbbb")  # still being received: reserved
    assert store.reserve("o", "bbbb", 10)
    complete("cccc")  # its job is gone
    stale = complete("dddd")  # queued long ago: its message may be lost
    store.create(Job(id="dddd", owner="o", upload=stale))
    store._jobs["dddd"].updated_at = time.time() - 500
    complete("eeee")  # finished
    store.create(Job(id="eeee", owner="o"))
    store.update("eeee", status=DONE)

    assert sweep(store, storage, runner, settings).deleted == 0  # everything fresh: left alone
    later(monkeypatch, 60)
    report = sweep(store, storage, runner, settings)
    assert (report.deleted, report.requeued) == (3, 1)
    assert runner.submitted == [("dddd", stale)]  # the object's reference, which any worker host can read
    assert sorted(name for name, _, _ in storage.uploads()) == ["dddd"]
    assert [name for name, _, _ in storage.partial_uploads()] == ["bbbb"]


def test_an_unreachable_store_is_a_typed_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nothing")
    storage = S3UploadStorage("s3://bucket/p", tmp_path / "up", endpoint_url=f"http://127.0.0.1:{free_port()}")
    ok, reason = storage.ready()
    assert not ok and reason.startswith("upload store: ")
    w = storage.open_writer(100)
    w.write(b"abc")
    with pytest.raises(StorageUnavailable):
        w.close()
    with pytest.raises(StorageUnavailable), storage.local_copy("s3://bucket/p/abcd.upload"):
        pass
    assert list((tmp_path / "up").iterdir()) == []


def test_a_job_whose_upload_is_gone_fails_with_a_code(s3_env, tmp_path):
    settings = Settings(upload_dir=tmp_path / "up", backend_retries=0)
    storage, store = make_storage(s3_env, tmp_path / "up"), MemoryJobStore(ttl_s=3600)
    store.create(Job(id="abcd", owner="o"))
    status = processing.run_job("abcd", storage.ref("abcd"), store=store, backend=FakeBackend(), storage=storage,
                                settings=settings)
    assert status == "failed" and store.get("abcd").error["code"] == "upload_store_unavailable"


@pytest.fixture
def s3_client(s3_env, tmp_path, monkeypatch):
    """The gateway in-process (embedded wiring) on the object store; the face pipeline is a fake that checks it
    was handed the uploaded bytes."""
    seen: list[bytes] = []

    def fake_extract(path, config):
        seen.append(Path(path).read_bytes())
        return fake_clips(3)

    settings = Settings(upload_dir=tmp_path / "up", api_keys=[KEY], max_upload_bytes=50_000_000, predict_wait_s=20,
                        upload_store=s3_env["DJLDML_UPLOAD_STORE"], s3_endpoint_url=s3_env["DJLDML_S3_ENDPOINT_URL"],
                        s3_part_bytes=MIN_PART_BYTES)
    monkeypatch.setattr(wiring, "build_backend", lambda s: FakeBackend())
    monkeypatch.setattr(processing, "extract_face_clips", fake_extract)
    with TestClient(app_module.create_app(settings), headers={"X-API-Key": KEY}) as client:
        yield client, seen, make_storage(s3_env, tmp_path / "check")


def test_the_gateway_streams_to_the_store_and_the_job_deletes_the_object(s3_client, tmp_path):
    client, seen, storage = s3_client
    # The carphone clip with 12 MiB of trailing bytes (ignored by the demuxer): three parts of 5 MiB.
    video = carphone_path().read_bytes() + os.urandom(12 * 1024 * 1024)
    r = client.post("/predict", files={"video": ("x.mp4", video, "video/mp4")})
    assert r.status_code == 200, r.text
    assert seen == [video]  # the worker's local copy is the upload, byte for byte
    assert client.get("/readyz").json()["checks"]["upload_store"] == "ok"
    assert storage.uploads() == [] and storage.partial_uploads() == []  # deleted server-side
    assert list((tmp_path / "up").iterdir()) == []  # no spool, no local copy left


def test_a_refused_upload_leaves_nothing_in_the_store(s3_client, tmp_path):
    client, seen, storage = s3_client
    r = client.post("/jobs", files={"video": ("x.mp4", b"\0\0\0\x18ftypmp42" + b"\0" * 6_000_000, "video/mp4")})
    assert r.status_code == 422 and r.json()["code"] == "not_a_video"  # the probe read the gateway's spool
    r = client.post("/jobs", files={"video": ("x.mp4", b"just text, not a video", "video/mp4")})
    assert r.status_code == 422 and r.json()["code"] == "not_a_video"
    assert seen == [] and storage.uploads() == [] and storage.partial_uploads() == []
    assert list((tmp_path / "up").iterdir()) == []


@pytest.mark.integration
def test_a_job_through_the_full_stack_with_the_object_store(model_store, videos):
    """Redis + Celery worker (in-process backend) + gateway, uploads through rclone serve s3; the worker has its
    own upload directory (devstack gives it one with an object store), so the object store is the only way
    the video reaches it."""
    from devstack import LocalStack

    stack = LocalStack(model_store, MODEL_NAME, extra_env=SERVICE_ENV, torchserve=False, object_store=True)
    for svc in serve_stack(stack):
        with svc.client() as c:
            r = c.post("/predict", files={"video": ("interview.mp4", videos["face"].read_bytes(), "video/mp4")})
            assert r.status_code == 200, r.text
            result = r.json()
            assert result["quality"]["clips_used"] >= 1 and len(result["distribution"]) == 64
            assert "download" in result["timings_s"]
            r = c.post("/jobs", files={"video": ("long.mp4", videos["too_long"].read_bytes(), "video/mp4")})
            assert r.status_code == 422 and r.json()["code"] == "video_too_long"
            r = c.post("/jobs", files={"video": ("no_face.mp4", videos["no_face"].read_bytes(), "video/mp4")})
            assert r.status_code == 202, r.text
            assert wait_job(c, r.json()["id"])["error"]["code"] == "no_face"
            assert c.get("/readyz").json()["checks"]["upload_store"] == "ok"
        assert stack.s3.objects() == []  # every upload deleted server-side, however its job ended
        worker_dir = stack.workdir / "workers" / "uploads"
        assert list(svc.upload_dir.iterdir()) == [] and list(worker_dir.iterdir()) == []
        log = "".join(w.log_tail(200_000) for w in stack.workers) + stack.gateway.log_tail(200_000)
        assert "interview" not in log and stack.s3.secret_key not in log  # no file names, no secrets
