"""docker-compose.yml and docker/ checked offline (no Docker engine here): schema, wiring, build inputs, entrypoint."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

import devstack as stack
from devstack.processes import child_env, wait_group_gone

from .conftest import MODEL_NAME

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True, timeout=60, check=False)


def test_compose_file_matches_the_compose_spec():
    done = _check_jsonschema(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_schema_check_catches_a_broken_file(tmp_path, compose):
    bad = dict(compose)
    bad["services"] = {**compose["services"], "worker": {**compose["services"]["worker"], "depends_on": 7}}
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(bad))
    assert _check_jsonschema(tmp_path / "docker-compose.yml").returncode != 0


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose 1.29 not installed")
def test_docker_compose_v1_accepts_it():
    done = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_services_wiring(compose):
    s = compose["services"]
    assert set(s) == {"redis", "gateway", "worker", "torchserve"}
    # Only the gateway is reachable from outside; TorchServe's management API is not published.
    assert [name for name, svc in s.items() if svc.get("ports")] == ["gateway"]
    assert "container_name" not in s["worker"]  # scalable: --scale worker=N
    for name in ("gateway", "worker"):
        deps = s[name]["depends_on"]
        assert deps["redis"]["condition"] == deps["torchserve"]["condition"] == "service_healthy"
        assert "uploads:/data/uploads" in s[name]["volumes"]  # the shared upload volume
        env = s[name]["environment"]
        assert env["DJLDML_BROKER_URL"].startswith("redis://redis:") and "torchserve:" in env["DJLDML_TORCHSERVE_URL"]
    for name in ("redis", "gateway", "torchserve"):
        assert s[name]["healthcheck"]["test"], name
    gpu = s["torchserve"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert any(v.endswith(":/data") for v in s["redis"]["volumes"]) and "--appendonly" in s["redis"]["command"]
    assert compose["networks"]["backend"]["internal"] is True
    assert s["redis"]["networks"] == s["torchserve"]["networks"] == ["backend"]


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR}`` with ``env`` as the shell environment."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def _gateway_refusal(compose: dict, shell_env: dict[str, str]) -> str | None:
    from service.__main__ import open_api_refusal
    from service.settings import Settings

    env = {k: _interpolate(str(v), shell_env) for k, v in compose["services"]["gateway"]["environment"].items()}
    cmd = re.search(r"^CMD (.+)$", (REPO / "docker" / "Dockerfile.gateway").read_text(), re.M).group(1)
    argv = yaml.safe_load(cmd)  # a JSON array
    host = argv[argv.index("--host") + 1]
    settings = Settings(**{k.removeprefix("DJLDML_").lower(): v for k, v in env.items()
                           if k in ("DJLDML_API_KEYS", "DJLDML_ALLOW_OPEN_API")})
    return open_api_refusal(settings, host)


def test_production_compose_never_starts_an_open_api_by_default(compose):
    """With nothing set, compose's gateway (0.0.0.0 in the image) refuses to start; keys, or the explicit
    DJLDML_ALLOW_OPEN_API=true, let it start."""
    refusal = _gateway_refusal(compose, {})
    assert refusal and "DJLDML_API_KEYS" in refusal
    assert _gateway_refusal(compose, {"DJLDML_API_KEYS": "k1,k2"}) is None
    assert _gateway_refusal(compose, {"DJLDML_ALLOW_OPEN_API": "true"}) is None
    assert _gateway_refusal(compose, {"DJLDML_ALLOW_OPEN_API": "false"}) is not None


def test_the_gateway_process_refuses_an_open_api_on_a_public_address(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJLDML_")}
    env.update(DJLDML_UPLOAD_DIR=str(tmp_path / "up"), DJLDML_MODEL_STORE=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "service", "--host", "0.0.0.0", "--port", str(stack.free_port())],
                          env=env, capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert done.returncode == 2 and "refusing to serve an open API" in done.stderr, done.stderr[-2000:]


def _properties(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def test_torchserve_config_agrees_with_the_compose_file(compose):
    props = _properties(REPO / "docker" / "config.properties")
    env = compose["services"]["worker"]["environment"]
    assert {"inference_address", "management_address", "metrics_address"} <= set(props)
    assert int(props["max_request_size"]) >= int(env["DJLDML_TORCHSERVE_MAX_REQUEST_BYTES"]) > 6_553_500
    assert int(props["max_response_size"]) >= int(props["max_request_size"])
    model = env["DJLDML_MODEL_NAME"]
    assert props["load_models"] == f"{model}={model}.mar"
    assert f"/models/{model}" in " ".join(compose["services"]["torchserve"]["healthcheck"]["test"])
    assert props.get("enable_model_api", "false") == "false"
    port = props["inference_address"].rsplit(":", 1)[1]
    assert env["DJLDML_TORCHSERVE_URL"].endswith(f":{port}")


def _copy_sources(dockerfile: Path) -> list[str]:
    """Source paths of COPY/ADD instructions (not --from=stage copies), line continuations joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources = []
    for line in text.splitlines():
        parts = shlex.split(line.strip()) if line.strip().upper().startswith(("COPY ", "ADD ")) else []
        if not parts or any(p.startswith("--from") for p in parts):
            continue
        args = [p for p in parts[1:] if not p.startswith("--")]
        sources += args[:-1]
    return sources


def test_every_image_builds_from_files_that_exist(compose):
    built = {name: svc["build"] for name, svc in compose["services"].items() if "build" in svc}
    assert set(built) == {"gateway", "worker", "torchserve"}
    for name, build in built.items():
        context = (REPO / build["context"]).resolve()
        dockerfile = context / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        sources = _copy_sources(dockerfile)
        assert sources, f"{name}: no COPY"
        for src in sources:
            assert (context / src).exists(), f"{name}: COPY source {src} does not exist"
    base = re.search(r"^FROM\s+(\S+)", (REPO / "docker" / "Dockerfile.torchserve").read_text(), re.M).group(1)
    assert base == "pytorch/torchserve:0.12.0-gpu"


def test_copy_parser_reads_multi_source_and_flags(tmp_path):
    f = tmp_path / "Dockerfile"
    f.write_text("FROM x AS a\nCOPY --chown=1:1 a.txt \\\n  b.txt /dst/\nCOPY --from=a /x /y\nADD c /c\n")
    assert _copy_sources(f) == ["a.txt", "b.txt", "c"]


def _run_entrypoint(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(tmp_path / "entrypoint.log", "ab") as log:
        return subprocess.Popen(["/bin/sh", str(REPO / "docker" / "torchserve-entrypoint.sh")], env=env, cwd=tmp_path,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


FAKE_TORCHSERVE = """#!/bin/sh
case "$1" in
  --start) sleep 600 & echo $! > "$TMPDIR/.model_server.pid"; echo "$@" > "$TMPDIR/start-args" ;;
  --stop) kill "$(cat "$TMPDIR/.model_server.pid")"; rm "$TMPDIR/.model_server.pid"; touch "$TMPDIR/stopped" ;;
esac
"""


@pytest.mark.integration
@pytest.mark.parametrize("ending", ["docker stop", "torchserve dies"])
def test_entrypoint_logic_with_a_fake_torchserve(tmp_path, ending):
    """The entrypoint's two endings without a JVM: SIGTERM → `torchserve --stop`, exit 0; daemon gone → exit 1."""
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "torchserve"
    fake.write_text(FAKE_TORCHSERVE)
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "TMPDIR": str(tmp_path),
           "TS_CONFIG": "/cfg", "MODEL_STORE": "/store"}
    proc = _run_entrypoint(tmp_path, env)
    try:
        stack.wait_until(lambda: (tmp_path / ".model_server.pid").exists(), 10, "fake torchserve")
        time.sleep(0.3)  # let the script reach its wait loop (the trap is set right after --start)
        if ending == "docker stop":
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0 and (tmp_path / "stopped").exists()
        else:
            os.kill(int((tmp_path / ".model_server.pid").read_text()), signal.SIGKILL)
            assert proc.wait(10) == 1 and not (tmp_path / "stopped").exists()
        assert "--ts-config /cfg --model-store /store" in (tmp_path / "start-args").read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.integration
def test_torchserve_container_entrypoint_serves_and_stops(model_store, tmp_path):
    """docker/torchserve-entrypoint.sh with the real TorchServe, as the container runs it: ready, then SIGTERM
    (docker stop) → exit 0 with nothing left running."""
    ports = stack.TorchServePorts.free()
    config = tmp_path / "config.properties"
    config.write_text(stack.torchserve_config(model_store, ports, {MODEL_NAME: f"{MODEL_NAME}.mar"},
                                              token_auth=False, workers=1, max_request_bytes=1 << 24))
    (tmp_path / "tmp").mkdir()
    env = child_env({"TS_CONFIG": str(config), "MODEL_STORE": str(model_store), "TEMP": str(tmp_path / "tmp"),
                            "TMPDIR": str(tmp_path / "tmp"), "LOG_LOCATION": str(tmp_path / "logs"),
                            "METRICS_LOCATION": str(tmp_path / "logs")})
    proc = _run_entrypoint(tmp_path, env)
    try:
        management = f"http://127.0.0.1:{ports.management}/models/{MODEL_NAME}"
        stack.wait_until(lambda: any(w["status"] == "READY" for v in httpx.get(management).json()
                                     for w in v["workers"]), 60, "entrypoint torchserve", interval=0.3,
                         alive=lambda: proc.poll() is None)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert wait_group_gone(proc.pid, 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
