"""service.client against real processes: the CLI end to end (both modes), its typed errors and exit codes, and
the library's safe retry (the same Idempotency-Key after a lost answer gives the same job)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from service.client import Client, ServiceError
from tests.service.conftest import KEY, wait_job

pytestmark = pytest.mark.integration


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.client", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_cli_scores_a_video_and_saves_the_result(service, videos, tmp_path):
    out = tmp_path / "result.json"
    p = cli(str(videos["face"]), "--url", service.url, "--api-key", KEY, "--out", str(out))
    assert p.returncode == 0, p.stderr
    result = json.loads(out.read_text())
    assert len(result["distribution"]) == 64 and result["model"]["synthetic_demo"] is True
    assert "upload 100.0 %" in p.stderr and " done " in p.stderr  # progress: the upload, then the stages
    assert "SYNTHETIC demo model" in p.stderr  # the one-line summary says what the model is
    with service.client() as c:
        assert c.get(f"/jobs/{result['job_id']}").json()["result"] == result


def test_cli_typed_errors_exit_non_zero_with_the_message(embedded_service, videos, tmp_path):
    p = cli(str(videos["text"]), "--url", embedded_service.url, "--api-key", KEY, "--quiet")
    assert p.returncode == 1 and "not_a_video (HTTP 422)" in p.stderr and p.stdout == "", p.stderr
    p = cli(str(videos["face"]), "--url", embedded_service.url, "--api-key", "wrong", "--quiet")
    assert p.returncode == 1 and "unauthorised (HTTP 401)" in p.stderr, p.stderr
    p = cli(str(videos["no_face"]), "--url", embedded_service.url, "--api-key", KEY, "--quiet")  # a failed job
    assert p.returncode == 1 and "no_face (HTTP 422)" in p.stderr and "(job " in p.stderr, p.stderr
    p = cli(str(tmp_path / "missing.mp4"), "--url", embedded_service.url)
    assert p.returncode == 2 and "no such file" in p.stderr


def test_cli_same_idempotency_key_same_job(embedded_service, videos, tmp_path):
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    for out in outs:
        p = cli(str(videos["face"]), "--url", embedded_service.url, "--api-key", KEY, "--out", str(out), "--quiet",
                "--idempotency-key", f"cli-{tmp_path.name}")
        assert p.returncode == 0, p.stderr
    assert json.loads(outs[0].read_text())["job_id"] == json.loads(outs[1].read_text())["job_id"]


class _LoseFirstAnswer(httpx.HTTPTransport):
    """Sends the first POST to the real service, then drops its answer (as a phone network might)."""

    def __init__(self):
        super().__init__()
        self.posts, self.replayed = 0, []

    def handle_request(self, request):
        response = super().handle_request(request)
        if request.method == "POST":
            self.posts += 1
            self.replayed.append(response.headers.get("idempotent-replayed"))
            if self.posts == 1:
                response.read()
                raise httpx.ReadError("connection lost after the upload", request=request)
        return response


def test_client_retry_after_a_lost_answer_is_the_same_job(embedded_service, videos):
    transport = _LoseFirstAnswer()
    with Client(embedded_service.url, api_key=KEY, transport=transport) as c:
        job = c.submit(videos["face"])
        assert transport.posts == 2  # the upload was sent twice …
        assert transport.replayed == [None, "true"]  # … and made one job: the second answer is the first's
        result = c.wait(job["id"])
    with embedded_service.client() as h:
        assert wait_job(h, job["id"])["result"] == result
    with Client(embedded_service.url, api_key=KEY) as c, pytest.raises(ServiceError) as err:
        c.submit(videos["text"])
    assert err.value.code == "not_a_video" and err.value.status == 422 and not err.value.retryable
