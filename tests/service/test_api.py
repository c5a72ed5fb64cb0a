"""The API against real processes, in both modes: embedded (one uvicorn process, in-process backend) and the
full stack (Redis + Celery worker + TorchServe + uvicorn). Same tests, same expectations."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from djldml import labels
from tests.service.conftest import KEY, OTHER_KEY, wait_job

pytestmark = pytest.mark.integration


def upload(path, content_type="video/mp4"):
    return {"video": (path.name, path.read_bytes(), content_type)}


def assert_problem(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["code"] == code and body["status"] == status, body
    if status == 503:
        assert int(r.headers["retry-after"]) > 0
    return body


def assert_valid_result(result: dict) -> None:
    d = np.array(result["distribution"])
    assert d.shape == (labels.NUM_BINS,) and (d >= 0).all() and d.sum() == pytest.approx(1.0, abs=1e-9)
    assert result["bdi_score"] == pytest.approx(float((d * labels.SCORES).sum()), abs=1e-9)
    assert labels.MIN_SCORE <= result["bdi_score"] <= labels.MAX_SCORE
    assert result["interval"]["low"] <= result["bdi_score"] <= result["interval"]["high"] + 1
    assert result["severity"] == labels.severity_of(result["bdi_score"])
    assert sum(result["band_probabilities"].values()) == pytest.approx(1.0)
    q = result["quality"]
    assert q["clips_used"] == len(result["timeline"]) >= 1 and q["frames_with_face"] > 0 and q["duration_s"] > 0
    assert [p["start_time"] for p in result["timeline"]] == sorted(p["start_time"] for p in result["timeline"])
    m = result["model"]
    assert m["name"] == "djldml-test" and len(m["sha256"]) == 64 and m["synthetic_demo"] is True
    assert {"face_clips", "inference", "total"} <= set(result["timings_s"])


def test_predict_real_face_video(service, videos):
    with service.client() as c:
        r = c.post("/predict", files=upload(videos["face"]))
        assert r.status_code == 200, r.text
        assert_valid_result(r.json())
        models = c.get("/models").json()["models"]
        assert models[0]["sha256"] == r.json()["model"]["sha256"] and models[0]["synthetic_demo"] is True
    assert list(service.upload_dir.iterdir()) == []  # the upload is gone once the job ended


def test_async_flow(service, videos):
    with service.client() as c:
        r = c.post("/jobs", files=upload(videos["face"]))
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/jobs/{r.json()['id']}"
        assert r.json()["status"] in ("queued", "preprocessing", "inferring", "done")
        job = wait_job(c, r.json()["id"])
        assert job["status"] == "done" and job["progress"] == 1.0 and job["error"] is None
        assert_valid_result(job["result"])
        assert job["result"]["job_id"] == job["id"]
        assert_problem(c.get(r.headers["location"], headers={"X-API-Key": OTHER_KEY}), 404, "unknown_job")
        assert c.delete(r.headers["location"]).status_code == 204
        assert_problem(c.get(r.headers["location"]), 404, "unknown_job")
        assert_problem(c.delete(r.headers["location"]), 404, "unknown_job")


def test_predict_answers_202_with_the_job_url_when_the_wait_runs_out(service, videos):
    with service.client() as c:
        r = c.post("/predict", params={"wait_s": 0}, files=upload(videos["face"]))
        assert r.status_code == 202, r.text
        assert r.json()["status"] in ("queued", "preprocessing") and r.headers["location"].endswith(r.json()["id"])
        assert c.delete(r.headers["location"]).status_code == 204  # cancel: the worker stops at its next step
    deadline = time.monotonic() + 30
    while list(service.upload_dir.iterdir()):  # the cancelled job still removes its upload
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.parametrize(("name", "status", "code"), [
    ("text", 422, "not_a_video"),
    ("truncated", 422, "not_a_video"),
    ("too_short", 422, "video_too_short"),
    ("too_long", 422, "video_too_long"),
    ("huge_frames", 422, "frame_too_large"),
    ("no_face", 422, "no_face"),
    ("few_face_clips", 422, "too_few_face_clips"),
])
def test_video_errors(service, videos, name, status, code):
    with service.client() as c:
        body = assert_problem(c.post("/predict", files=upload(videos[name])), status, code)
        if code in ("no_face", "too_few_face_clips"):  # found by the worker: the job says the same
            job = c.get(f"/jobs/{body['job_id']}").json()
            assert job["status"] == "failed" and job["error"]["code"] == code
    assert list(service.upload_dir.iterdir()) == []


def test_request_errors(service, videos):
    with service.client() as c:
        assert_problem(c.post("/predict", data={"video": "x"}), 415, "unsupported_media_type")
        assert_problem(c.post("/predict", files=upload(videos["face"], "text/plain")), 415, "unsupported_media_type")
        assert_problem(c.post("/predict", files={"clip": ("a.txt", b"a", "text/plain")}), 422, "invalid_request")
        assert_problem(c.get("/jobs/0123456789abcdef"), 404, "unknown_job")
        assert_problem(c.get("/nowhere"), 404, "not_found")
    with service.client(key=None) as c:
        assert_problem(c.post("/predict", files=upload(videos["face"])), 401, "unauthorised")
    with service.client(key="not-a-key") as c:
        assert_problem(c.get("/jobs/x"), 401, "unauthorised")
        assert c.get("/healthz").status_code == 200


def test_upload_too_large_is_refused_while_streaming(service):
    """A raw chunked upload: the 413 arrives while the client is still sending, long before the body ends."""
    u = urlparse(service.url)
    limit, chunk, total_chunks = 3_000_000, 64 * 1024, 400  # 26 MB offered, 3 MB allowed
    boundary = "b0undary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n").encode() + b"\0\0\0\x18ftypmp42"
    sent = 0
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(f"POST /predict HTTP/1.1\r\nHost: {u.hostname}\r\nX-API-Key: {KEY}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n"
                  .encode())
        s.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        s.settimeout(0.02)
        response = b""
        try:
            for _ in range(total_chunks):
                s.sendall(b"%x\r\n%s\r\n" % (chunk, b"\0" * chunk))
                sent += chunk
                try:
                    response += s.recv(65536)
                    if response:
                        break
                except TimeoutError:
                    pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(10)
        try:
            while b"\r\n\r\n" not in response:
                more = s.recv(65536)
                if not more:
                    break
                response += more
        except (ConnectionResetError, TimeoutError):
            pass
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"upload_too_large" in response or b"\r\n\r\n" in response
    assert sent < limit + 2 * 1024 * 1024, f"the server read {sent} bytes before refusing"
    time.sleep(0.2)
    assert list(service.upload_dir.iterdir()) == []


def _start_stalled_upload(url: str, key: str) -> socket.socket:
    """A POST /jobs that sends its headers and the start of a video part, then nothing more (left open)."""
    u = urlparse(url)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    part = (b'--b0undary\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n'
            b"Content-Type: video/mp4\r\n\r\n\0\0\0\x18ftypmp42" + b"\0" * 4000)
    s.sendall(f"POST /jobs HTTP/1.1\r\nHost: {u.hostname}\r\nX-API-Key: {key}\r\nContent-Length: 2000000\r\n"
              "Content-Type: multipart/form-data; boundary=b0undary\r\n\r\n".encode() + part)
    return s


def _status_line(s: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        more = s.recv(4096)
        if not more:
            break
        data += more
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0


def test_simultaneous_uploads_against_the_key_limit_accept_exactly_the_limit_and_stalls_time_out(service):
    """The per-key slot is reserved before the body streams in: of N uploads in flight at once against a limit
    K, exactly N-K are refused (429) at once. The K in flight then stall, and each is dropped after the idle
    timeout (2 s here) with 408, its partial file deleted and its slot released."""
    limit, extra = 8, 3  # DJLDML_MAX_CONCURRENT_JOBS_PER_KEY in SERVICE_ENV
    socks = [_start_stalled_upload(service.url, OTHER_KEY) for _ in range(limit + extra)]
    try:
        t = time.monotonic()
        with ThreadPoolExecutor(len(socks)) as pool:
            statuses = list(pool.map(_status_line, socks))
        elapsed = time.monotonic() - t
    finally:
        for s in socks:
            s.close()
    assert sorted(statuses) == [408] * limit + [429] * extra, statuses
    assert elapsed < 15  # the idle timeout, not the client, ended the stalled uploads
    time.sleep(0.2)
    assert list(service.upload_dir.iterdir()) == []  # the partial files are gone
    with service.client(OTHER_KEY) as c:  # every slot was given back
        r = c.post("/jobs", files={"video": ("v.mp4", b"not a video at all, but a complete upload", "video/mp4")})
        assert_problem(r, 422, "not_a_video")


def test_upload_parser_errors_are_typed_4xx(service):
    """An over-long boundary (the multipart parser raises), the video under another field name (over the 64 KB
    allowed to other fields), and a body of nothing but empty parts past the limit."""
    with service.client() as c:
        b = "x" * 300
        body = (f'--{b}\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n\r\n'
                f"data\r\n--{b}--\r\n").encode()
        for path in ("/predict", "/jobs"):
            assert_problem(c.post(path, content=body, headers={"Content-Type": f"multipart/form-data; boundary={b}"}),
                           422, "invalid_request")
        r = c.post("/jobs", files={"file": ("v.mp4", b"\0\0\0\x18ftypmp42" + b"\0" * 200_000, "video/mp4")})
        detail = assert_problem(r, 422, "invalid_request")["detail"]
        assert "'video'" in detail and "'file'" in detail

        empty = b"".join(f'--b\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n\r\n'.encode()
                         for i in range(1000))  # ≈ 50 KB of empty parts

        def parts():
            for _ in range(400):  # ≈ 20 MB in all, limit 3 MB
                yield empty

        t = time.monotonic()
        try:
            r = c.post("/jobs", content=parts(), headers={"Content-Type": "multipart/form-data; boundary=b"})
            assert_problem(r, 413, "upload_too_large")
        except httpx.WriteError:  # the server answered and closed while we were still sending: also right
            pass
        assert time.monotonic() - t < 20
    assert list(service.upload_dir.iterdir()) == []


def test_concurrent_uploads_all_complete(service, videos):
    def one(_):
        with service.client() as c:
            return c.post("/predict", files=upload(videos["face"]))

    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(one, range(3)))
    assert [r.status_code for r in responses] == [200] * 3, [r.text[:200] for r in responses]
    for r in responses:
        assert_valid_result(r.json())
    assert len({r.json()["job_id"] for r in responses}) == 3


def test_operations_endpoints(service):
    with service.client(key=None) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["mode"] == service.mode
        assert set(ready.json()["checks"].values()) == {"ok"}
        metrics = c.get("/metrics").text
        assert "djldml_http_requests_total" in metrics and "djldml_queue_depth" in metrics
        assert "djldml_job_stage_seconds_bucket" in metrics
        spec = c.get("/openapi.json").json()
        assert {"/predict", "/jobs", "/jobs/{job_id}", "/healthz", "/readyz", "/metrics", "/models"} <= set(
            spec["paths"])
