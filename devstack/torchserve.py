"""A private TorchServe (its own ports, TMPDIR and process group) for the local stack and the tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from service.backends.torchserve import WORKER_READY, worker_states

from .processes import HOST, child_env, free_ports, wait_group_gone, wait_until

#: TorchServe's request-size limit for this stack: 64 MiB (default 6,553,500 bytes ≈ 10 clips). The backend
#: also splits batches under the limit it is configured with, so the two must agree (service.backends.torchserve).
TORCHSERVE_MAX_REQUEST_BYTES = 64 * 1024 * 1024


@dataclass
class TorchServePorts:
    inference: int
    management: int
    metrics: int
    grpc_inference: int
    grpc_management: int

    @classmethod
    def free(cls) -> TorchServePorts:
        return cls(*free_ports(5))


def torchserve_config(model_store: Path, ports: TorchServePorts, models: Mapping[str, str], *,
                      token_auth: bool, workers: int, max_request_bytes: int) -> str:
    """config.properties for a private instance: loopback only, its own ports, models loaded at start."""
    lines = [
        f"inference_address=http://{HOST}:{ports.inference}",
        f"management_address=http://{HOST}:{ports.management}",
        f"metrics_address=http://{HOST}:{ports.metrics}",
        f"grpc_inference_address={HOST}",
        f"grpc_management_address={HOST}",
        f"grpc_inference_port={ports.grpc_inference}",
        f"grpc_management_port={ports.grpc_management}",
        f"model_store={model_store}",
        "allowed_urls=file://.*",  # archives from the model store only, never fetched from a URL
        "load_models=" + ",".join(f"{name}={mar}" for name, mar in models.items()),
        f"default_workers_per_model={workers}",
        f"max_request_size={max_request_bytes}",
        f"max_response_size={max_request_bytes}",
        f"disable_token_authorization={'false' if token_auth else 'true'}",
        "enable_envvars_config=false",
        "install_py_dep_per_model=false",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class TorchServeHandle:
    """A TorchServe daemon: the JVM frontend plus its Python workers, all in one process group."""

    workdir: Path  # cwd (key_file.json lands here), TMPDIR (pid file, sockets), logs/
    ports: TorchServePorts
    env: dict[str, str]
    pgid: int
    log_path: Path
    models: dict[str, str]
    token_auth: bool = False
    keys: dict[str, str] = field(default_factory=dict)  # "inference" / "management" → bearer key

    @property
    def inference_url(self) -> str:
        return f"http://{HOST}:{self.ports.inference}"

    @property
    def management_url(self) -> str:
        return f"http://{HOST}:{self.ports.management}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.ports.metrics}"

    @property
    def token(self) -> str | None:
        return self.keys.get("inference")

    @property
    def management_token(self) -> str | None:
        return self.keys.get("management")

    @property
    def frontend_pid(self) -> int | None:
        try:
            return int((self.workdir / "tmp" / ".model_server.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        pid = self.frontend_pid
        if pid is None:
            return False
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def management_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.management_token}"} if self.management_token else {}

    def model_ready(self, name: str) -> bool:
        r = httpx.get(f"{self.management_url}/models/{name}", headers=self.management_headers(), timeout=2.0)
        return r.status_code == 200 and WORKER_READY in worker_states(r.json())

    def wait_models(self, timeout: float = 90.0) -> None:
        """Block until every model has a READY worker (``/ping`` is healthy long before); stop on failure."""
        try:
            for name in self.models:
                wait_until(lambda n=name: self.model_ready(n), timeout, f"torchserve model {name}", interval=0.2,
                           alive=self.alive)
        except Exception as exc:
            tail = self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""
            self.stop(10)
            raise RuntimeError(f"torchserve did not load its models: {exc}\n{tail}") from exc

    def stop(self, timeout: float = 30.0) -> None:
        """``torchserve --stop`` under the same TMPDIR and cwd; SIGKILL the group if it lingers."""
        if self.alive():
            subprocess.run(["torchserve", "--stop"], env=self.env, cwd=self.workdir, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout, check=False)
            wait_group_gone(self.pgid, timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the frontend and every worker at once (a crash)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)
        wait_group_gone(self.pgid, 10)


def _read_keys(path: Path) -> dict[str, str]:
    """{"inference": key, "management": key, ...} from TorchServe's key_file.json; {} if absent or partial."""
    try:
        keys = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v["key"] for k, v in keys.items() if isinstance(v, dict) and "key" in v}


def start_torchserve(model_store: str | Path, models: Mapping[str, str] | None = None,
                     ports: TorchServePorts | None = None, workdir: str | Path | None = None, *,
                     token_auth: bool = False, workers: int = 1,
                     max_request_bytes: int = TORCHSERVE_MAX_REQUEST_BYTES, timeout: float = 90.0,
                     wait_models: bool = True) -> TorchServeHandle:
    """Start a private TorchServe serving ``models`` (name → .mar file in ``model_store``; default: every .mar).

    Returns once every model has a READY worker (``/ping`` is healthy long before that). ``token_auth`` turns
    TorchServe's token authorisation on; the keys are then read from ``key_file.json`` into ``handle.keys``.
    """
    if shutil.which("torchserve") is None and not (Path(sys.executable).parent / "torchserve").exists():
        raise RuntimeError("torchserve not found (pip install torchserve==0.12.0; needs Java 17)")
    model_store = Path(model_store).resolve()
    if models is None:
        models = {p.stem: p.name for p in sorted(model_store.glob("*.mar"))}
    if not models:
        raise RuntimeError(f"no .mar archive in {model_store}")
    ports = ports or TorchServePorts.free()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="djldml-torchserve-")).resolve()
    tmp = workdir / "tmp"
    logs = workdir / "logs"
    tmp.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    (workdir / "key_file.json").unlink(missing_ok=True)  # a restart in the same directory: wait for new keys
    config = workdir / "config.properties"
    config.write_text(torchserve_config(model_store, ports, models, token_auth=token_auth, workers=workers,
                                        max_request_bytes=max_request_bytes))
    # TMPDIR/TEMP: the pid file (/tmp/.model_server.pid by default) and the worker sockets live there, so a
    # private temp dir is what lets several instances run on one machine.
    env = child_env({"TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(logs),
                      "METRICS_LOCATION": str(logs)})
    cmd = ["torchserve", "--start", "--ncs", "--model-store", str(model_store), "--ts-config", str(config)]
    if not token_auth:
        cmd.append("--disable-token-auth")
    log_path = logs / "torchserve-launcher.log"
    with open(log_path, "ab") as log:
        launcher = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=workdir, start_new_session=True)
    handle = TorchServeHandle(workdir, ports, env, launcher.pid, logs / "ts_log.log", dict(models), token_auth)
    try:
        launcher.wait(30)  # the launcher forks the JVM (same process group) and exits
        wait_until(lambda: handle.frontend_pid is not None, 15, "torchserve pid file")
        if token_auth:  # key_file.json appears in the frontend's cwd; it may be read half-written: retry
            wait_until(lambda: bool(_read_keys(workdir / "key_file.json")), 30, "torchserve key file",
                       alive=handle.alive)
            handle.keys = _read_keys(workdir / "key_file.json")
    except Exception as exc:
        tail = log_path.read_text(errors="replace")[-2000:]
        if handle.log_path.exists():
            tail += "\n" + handle.log_path.read_text(errors="replace")[-4000:]
        handle.stop(10)
        raise RuntimeError(f"torchserve did not start: {exc}\n{tail}") from exc
    if wait_models:
        handle.wait_models(timeout)
    return handle
