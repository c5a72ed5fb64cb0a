"""The local stack launcher: free ports, Redis, TorchServe isolation, and `python -m devstack` end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

import devstack as stack

from .conftest import MODEL_NAME


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment contains ``text`` (our work dirs are unique)."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            blob = " ".join(proc.cmdline()) + " ".join(f"{k}={v}" for k, v in proc.environ().items())
            if text in blob and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def test_free_ports_are_distinct_and_bindable():
    ports = stack.free_ports(5)
    assert len(set(ports)) == 5 and all(1024 < p < 65536 for p in ports)


def test_torchserve_config_is_private_and_loopback(tmp_path):
    cfg = stack.torchserve_config(tmp_path, stack.TorchServePorts(1, 2, 3, 4, 5), {"m": "m.mar"}, token_auth=False,
                                  workers=1, max_request_bytes=123)
    assert "management_address=http://127.0.0.1:2" in cfg and "grpc_management_port=5" in cfg
    assert "max_request_size=123" in cfg and "load_models=m=m.mar" in cfg
    assert "disable_token_authorization=true" in cfg


@pytest.mark.integration
def test_redis_handle_starts_and_kills(tmp_path):
    r = stack.start_redis(workdir=tmp_path)
    try:
        assert stack.redis_ping(r.port) and r.url.startswith("redis://127.0.0.1:")
        r.kill()
        assert not r.alive()
        with pytest.raises(OSError):
            stack.redis_ping(r.port)
    finally:
        r.stop()


@pytest.mark.integration
def test_torchserve_instance_keeps_its_pid_file_and_keys_private(torchserve):
    assert (torchserve.workdir / "tmp" / ".model_server.pid").exists()
    assert torchserve.frontend_pid is not None and torchserve.alive()
    assert torchserve.token and torchserve.management_token and torchserve.token != torchserve.management_token
    assert torchserve.model_ready(MODEL_NAME)
    r = httpx.get(f"{torchserve.inference_url}/ping", timeout=5)
    assert r.status_code != 200  # token auth is on: even /ping needs the key


@pytest.mark.integration
def test_stack_cli_serves_and_stops_everything(model_store, tmp_path):
    """`python -m devstack` beside the session's TorchServe (own TMPDIR), ready end to end, SIGTERM → clean."""
    port, workdir = stack.free_port(), tmp_path / "stack"
    log = tmp_path / "stack.log"
    with open(log, "wb") as out:
        cli = subprocess.Popen([sys.executable, "-m", "devstack", "--port", str(port), "--model-store",
                                str(model_store), "--model-name", MODEL_NAME, "--workdir", str(workdir)],
                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            r = httpx.get(f"{url}/readyz", timeout=5)
            return r.status_code == 200 and r.json().get("ready") is True

        stack.wait_until(ready, 90, "stack", interval=0.5, alive=lambda: cli.poll() is None)
        models = httpx.get(f"{url}/models", timeout=10).json()["models"]
        assert [m["name"] for m in models] == [MODEL_NAME] and models[0]["synthetic_demo"] is True
        assert _processes_mentioning(str(workdir))  # redis, torchserve, worker, gateway
        # Secure defaults: TorchServe refuses a local process without the key (it could scale the model to 0
        # workers), and Redis keeps an append-only file (a restart keeps the accepted jobs).
        cfg = dict(line.split("=", 1) for line in (workdir / "torchserve" / "config.properties").read_text()
                   .splitlines() if "=" in line)
        assert cfg["disable_token_authorization"] == "false"
        management = cfg["management_address"]
        for r in (httpx.put(f"{management}/models/{MODEL_NAME}?min_worker=0", timeout=5),
                  httpx.get(f"{management}/models/{MODEL_NAME}", timeout=5)):
            assert r.status_code == 400 and "Token Authorization failed" in r.text, r.text  # TorchServe's answer
        assert list((workdir / "redis").glob("appendonly*"))
    except BaseException:
        print(log.read_text(errors="replace")[-3000:])
        raise
    finally:
        cli.send_signal(signal.SIGTERM)
        try:
            rc = cli.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(cli.pid, signal.SIGKILL)
            raise
    assert rc == 0, log.read_text(errors="replace")[-3000:]
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(workdir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(str(workdir)) == []


@pytest.mark.integration
def test_torchserve_kill_takes_its_workers_and_the_backend_reports_it(model_store, tmp_path):
    """A second instance beside the session's one (own TMPDIR and ports); kill() is a crash of the whole group."""
    import numpy as np

    from service.backends.base import BackendUnavailable
    from service.backends.torchserve import TorchServeBackend

    ts = stack.start_torchserve(model_store, {MODEL_NAME: f"{MODEL_NAME}.mar"}, workdir=tmp_path / "ts")
    try:
        backend = TorchServeBackend(ts.inference_url, ts.management_url, MODEL_NAME)
        assert backend.ready() == (True, "")
        assert backend.clip_distributions(np.zeros((1, 16, 112, 112, 3), np.uint8)).shape == (1, 64)
        assert len(_processes_mentioning(str(tmp_path / "ts"))) >= 2  # the JVM and its Python worker
        ts.kill()
        assert not ts.alive() and _processes_mentioning(str(tmp_path / "ts")) == []
        assert backend.ready()[0] is False
        with pytest.raises(BackendUnavailable):
            backend.clip_distributions(np.zeros((1, 16, 112, 112, 3), np.uint8))
    finally:
        ts.stop()
