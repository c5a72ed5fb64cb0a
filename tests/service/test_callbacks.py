"""Job-end callbacks against real processes in both modes: a receiver on 127.0.0.1 checks each POST's Standard
Webhooks signature by hand (HMAC-SHA256 as docs/api.md shows it, not through the signing library), a receiver
that fails twice gets the result on the third attempt, and a host off the allow-list is refused up front."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.service.conftest import CALLBACK_SECRET, OTHER_KEY, wait_job
from tests.service.test_api import assert_problem, upload

pytestmark = pytest.mark.integration


def verify(secret: str, headers, body: bytes, tolerance_s: float = 300) -> dict:
    """The receiver's check (docs/api.md): HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}"."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(ts)) > tolerance_s:
        raise ValueError("stale timestamp")
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    if not any(hmac.compare_digest(sig.split(",", 1)[1], expected)
               for sig in headers["webhook-signature"].split() if sig.startswith("v1,")):
        raise ValueError("bad signature")
    return json.loads(body)


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST; the first ``fail_first`` get HTTP 500."""

    def __init__(self, fail_first: int = 0):
        self.fail_first, self.posts, self.lock = fail_first, [], threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                with outer.lock:
                    outer.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status = 500 if len(outer.posts) <= outer.fail_first else 204
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/djldml"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 30.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.posts) >= n:
                    return list(self.posts)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.posts)} callback POSTs after {timeout} s, expected {n}")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(fail_first: int = 0) -> Receiver:
        made.append(Receiver(fail_first))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_done_job_is_posted_signed(service, videos, receiver):
    rx = receiver()
    with service.client() as c:
        r = c.post("/jobs", files=upload(videos["face"]), data={"callback_url": rx.url})
        assert r.status_code == 202, r.text
        assert r.json()["callback_url"] == rx.url
        job = wait_job(c, r.json()["id"])
    (path, headers, body), = rx.wait_for(1)
    assert path == "/hooks/djldml" and headers["content-type"] == "application/json"
    event = verify(CALLBACK_SECRET, headers, body)
    assert headers["webhook-id"] == f"msg_{job['id']}"
    assert event["type"] == "job.done" and event["data"]["id"] == job["id"] and event["data"]["status"] == "done"
    assert event["data"]["result"] == job["result"]  # the same document GET /jobs/{id} answers
    with pytest.raises(ValueError, match="bad signature"):  # the check is not vacuous: a changed body fails it
        verify(CALLBACK_SECRET, headers, body.replace(b'"job.done"', b'"job.fail"'))
    with pytest.raises(ValueError, match="bad signature"):
        verify("whsec_" + base64.b64encode(b"another secret").decode(), headers, body)
    # the logs name the job and the HTTP status, never the result
    logs = [service.gateway.log_path] + [w.log_path for w in getattr(service.stack, "workers", [])]
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert f"job {job['id']}: callback delivered (HTTP 204)" in text
    assert "bdi_score" not in text and repr(job["result"]["bdi_score"]) not in text


def test_receiver_failing_twice_gets_the_result_on_retry(service, videos, receiver):
    rx = receiver(fail_first=2)
    with service.client() as c:
        r = c.post("/jobs", files=upload(videos["face"]), data={"callback_url": rx.url})
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["id"])
    posts = rx.wait_for(3)
    assert len({h["webhook-id"] for _, h, _ in posts}) == 1  # one event, three attempts: receivers dedupe by id
    events = [verify(CALLBACK_SECRET, h, b) for _, h, b in posts]  # each attempt signed afresh, all valid
    assert all(e["data"]["result"] == job["result"] for e in events)
    time.sleep(1.0)
    assert len(rx.posts) == 3  # acknowledged: no further attempt


def test_retries_are_bounded(embedded_service, videos, receiver):
    rx = receiver(fail_first=100)
    with embedded_service.client() as c:
        r = c.post("/jobs", files=upload(videos["face"]), data={"callback_url": rx.url})
        wait_job(c, r.json()["id"])
    rx.wait_for(4)  # CALLBACK_RETRIES=3: the first attempt and three retries (0.2 + 0.4 + 0.8 s apart)
    time.sleep(2.0)
    assert len(rx.posts) == 4


def test_failed_job_is_posted_too(service, videos, receiver):
    rx = receiver()
    with service.client() as c:
        r = c.post("/jobs", files=upload(videos["no_face"]), data={"callback_url": rx.url})
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["id"])
    assert job["status"] == "failed"
    (_, headers, body), = rx.wait_for(1)
    event = verify(CALLBACK_SECRET, headers, body)
    assert event["type"] == "job.failed" and event["data"]["error"]["code"] == "no_face"


@pytest.mark.parametrize("url, why", [
    ("https://evil.example.org/hook", "allow-list"),
    ("http://127.0.0.2:9/hook", "allow-list"),
    ("ftp://127.0.0.1/hook", "https"),
    ("http://user:pw@127.0.0.1/hook", "user name"),
    ("not a url", "https"),
])
def test_disallowed_callback_is_refused_before_a_job_exists(embedded_service, videos, url, why):
    with embedded_service.client() as c:
        # the field comes first, so the refusal happens before the video streams in
        r = c.post("/jobs", files={"callback_url": (None, url), "video": ("v.mp4", videos["face"].read_bytes(),
                                                                          "video/mp4")})
        body = assert_problem(r, 422, "callback_not_allowed")
        assert why in body["detail"]
    assert list(embedded_service.upload_dir.iterdir()) == []


def test_a_key_without_a_secret_cannot_ask_for_callbacks(service, videos, receiver):
    with service.client(OTHER_KEY) as c:
        r = c.post("/predict", files=upload(videos["face"]), data={"callback_url": receiver().url})
        body = assert_problem(r, 422, "callback_not_allowed")
        assert "secret" in body["detail"]
