"""Local full stack without Docker: private Redis + TorchServe + Celery worker + uvicorn gateway.

Two faces:
- a Python API for integration tests (``start_redis``, ``start_torchserve``, ``start_worker``,
  ``start_gateway``, or all of them at once with :class:`LocalStack`), each returning a handle with
  ``stop()`` (graceful) and ``kill()`` (SIGKILL, for fault-injection tests);
- a CLI for ``make stack``: ``python -m service.stack --port 8000`` runs everything until Ctrl-C.

Every process gets its own ports (free ports on 127.0.0.1), its own work directory (logs, TorchServe's
TMPDIR with its pid file and sockets) and its own process group, so two stacks never collide and a stop
takes the children (Celery's pool, TorchServe's Python workers) with it. Logs go to files, never to pipes:
``torchserve --start`` daemonises, and a captured pipe that nobody reads blocks the daemon.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.backends.torchserve import WORKER_READY, worker_states

HOST = "127.0.0.1"
DEFAULT_MODEL_NAME = "djldml-demo"

#: TorchServe's request-size limit for this stack: 64 MiB (default 6,553,500 bytes ≈ 10 clips). The backend
#: also splits batches under the limit it is configured with, so the two must agree (service.backends.torchserve).
TORCHSERVE_MAX_REQUEST_BYTES = 64 * 1024 * 1024


# ---------------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (sockets held open together so the OS cannot hand out one twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1,
               alive: Callable[[], bool] | None = None) -> None:
    """Poll ``check`` until it returns True; TimeoutError after ``timeout`` s, RuntimeError if ``alive`` fails."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # not up yet: connection refused, partial response, ...
            pass
        if alive is not None and not alive():
            raise RuntimeError(f"{what}: process exited before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(interval)


def http_ok(url: str, headers: Mapping[str, str] | None = None, timeout: float = 2.0) -> bool:
    return httpx.get(url, headers=dict(headers or {}), timeout=timeout).status_code == 200


def redis_ping(port: int, host: str = HOST) -> bool:
    """True when a Redis server answers PING on ``host:port`` (raw RESP, no client library needed)."""
    with socket.create_connection((host, port), timeout=1.0) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment with the venv's bin first on PATH (``torchserve`` and its Python), plus ``extra``."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------- handles


@dataclass
class ProcessHandle:
    """A child process started in its own process group; stop/kill act on the whole group."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    ready_check: Callable[[], bool] | None = field(default=None, repr=False)
    ready_timeout: float = 60.0

    def wait_ready(self) -> None:
        """Block until ``ready_check`` passes; on failure stop the process and raise with the end of its log."""
        if self.ready_check is not None:
            _ready_or_stop(self, lambda: wait_until(self.ready_check, self.ready_timeout, self.name, interval=0.2,
                                                    alive=self.alive))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)  # pgid == pid: started with start_new_session=True

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the group, wait up to ``timeout`` s, then SIGKILL what is left."""
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the group at once (a crash, for fault-injection tests)."""
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL cannot be ignored; a D-state child can
            self.popen.wait(10)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _spawn(name: str, cmd: list[str], log_path: Path, env: Mapping[str, str] | None = None,
           cwd: str | Path | None = None) -> ProcessHandle:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=_child_env(env), cwd=str(cwd or _repo_root()), start_new_session=True)
    return ProcessHandle(name, popen, log_path)


def _ready_or_stop(handle: ProcessHandle, wait: Callable[[], None]) -> None:
    """Run ``wait``; on failure stop the process and re-raise with the end of its log."""
    try:
        wait()
    except Exception as exc:
        handle.stop(5)
        tail = handle.log_tail()
        raise RuntimeError(f"{handle.name} did not start: {exc}\n--- {handle.log_path} ---\n{tail}") from exc


# ---------------------------------------------------------------------------------------------- Redis


@dataclass
class RedisHandle(ProcessHandle):
    port: int = 0
    workdir: Path | None = None
    persist: bool = False

    def restart(self, timeout: float = 15.0) -> RedisHandle:
        """Stop (SIGTERM: a persistent Redis writes its data) and start again on the same port and directory."""
        self.stop()
        return start_redis(self.port, self.workdir, persist=self.persist, timeout=timeout)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


def start_redis(port: int | None = None, workdir: str | Path | None = None, persist: bool = False,
                timeout: float = 15.0) -> RedisHandle:
    """A private ``redis-server`` in the foreground on 127.0.0.1. ``persist``: append-only file with an fsync
    every second in ``workdir``, so queued jobs and job status survive a restart (what the local stack uses);
    otherwise nothing is written to disk."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server not found: apt-get install -y redis-server")
    port = port or free_port()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="djldml-redis-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = ["redis-server", "--port", str(port), "--bind", HOST, "--dir", str(workdir), "--daemonize", "no"]
    cmd += ["--appendonly", "yes", "--appendfsync", "everysec"] if persist else ["--save", "", "--appendonly", "no"]
    h = _spawn("redis", cmd, workdir / "redis.log")
    handle = RedisHandle(h.name, h.popen, h.log_path, port=port, workdir=workdir, persist=persist)
    _ready_or_stop(handle, lambda: wait_until(lambda: redis_ping(port), timeout, "redis", alive=handle.alive))
    return handle


# ---------------------------------------------------------------------------------------------- TorchServe


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
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return not _is_zombie(pid)

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
            _wait_group_gone(self.pgid, timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the frontend and every worker at once (a crash)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)
        _wait_group_gone(self.pgid, 10)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _group_members(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and not _is_zombie(int(entry)):
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


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
    env = _child_env({"TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(logs),
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


# ---------------------------------------------------------------------------------------------- worker, gateway


def start_worker(env: Mapping[str, str], workdir: str | Path | None = None, concurrency: int = 1,
                 timeout: float = 60.0, name: str | None = None, wait: bool = True) -> ProcessHandle:
    """A Celery worker on ``service.celery_app``; ``env`` carries the DJLDML_* settings (broker, backend).

    ``wait=False`` returns at once (start several things in parallel, then ``handle.wait_ready()``).
    """
    workdir = Path(workdir or tempfile.mkdtemp(prefix="djldml-worker-"))
    node = name or f"djldml-{os.getpid()}-{free_port()}@%h"
    cmd = [sys.executable, "-m", "celery", "-A", "service.celery_app:celery_app", "worker",
           "--concurrency", str(concurrency), "-l", "INFO", "-n", node, "--without-gossip", "--without-mingle"]
    handle = _spawn("celery worker", cmd, workdir / f"worker-{node.split('@')[0]}.log", env)
    # Celery logs "<node> ready." once it consumes from the broker.
    handle.ready_check = lambda: " ready." in handle.log_tail(100_000)
    handle.ready_timeout = timeout
    if wait:
        handle.wait_ready()
    return handle


@dataclass
class GatewayHandle(ProcessHandle):
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def start_gateway(env: Mapping[str, str], port: int | None = None, workdir: str | Path | None = None,
                  ready_path: str = "/openapi.json", timeout: float = 60.0, wait: bool = True) -> GatewayHandle:
    """The FastAPI gateway (``python -m service``) on 127.0.0.1; ready when ``ready_path`` answers 200."""
    port = port or free_port()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="djldml-gateway-"))
    cmd = [sys.executable, "-m", "service", "--host", HOST, "--port", str(port)]
    h = _spawn("gateway", cmd, workdir / "gateway.log", env)
    handle = GatewayHandle(h.name, h.popen, h.log_path, port=port, ready_timeout=timeout)
    handle.ready_check = lambda: http_ok(handle.url + ready_path)
    if wait:
        handle.wait_ready()
    return handle


# ---------------------------------------------------------------------------------------------- the whole stack


class LocalStack:
    """Redis + TorchServe + Celery worker + gateway, wired through DJLDML_* settings; a context manager.

    ``torchserve=False`` leaves the worker on the in-process backend; ``broker=False`` gives the embedded
    gateway (no Redis, no worker). ``env`` holds the settings every process got; ``stop()`` stops in reverse.
    Secure by default: TorchServe's token authorisation is on (the worker gets the keys; any other local
    process that reaches its ports is refused) and Redis persists its data in the work directory (a Redis
    restart keeps every accepted job). ``token_auth=False`` / ``persist=False`` are for experiments only.
    """

    def __init__(self, model_store: str | Path = "model_store", model_name: str = DEFAULT_MODEL_NAME, *,
                 port: int | None = None, workdir: str | Path | None = None, broker: bool = True,
                 torchserve: bool = True, token_auth: bool = True, workers: int = 1, persist: bool = True,
                 extra_env: Mapping[str, str] | None = None):
        self.model_store = Path(model_store).resolve()
        self.model_name = model_name
        self.port = port
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="djldml-stack-")).resolve()
        self.use_broker, self.use_torchserve, self.token_auth, self.n_workers = broker, torchserve, token_auth, workers
        self.persist = persist
        self.env: dict[str, str] = {"DJLDML_MODEL_NAME": model_name, "DJLDML_MODEL_STORE": str(self.model_store),
                                    "DJLDML_UPLOAD_DIR": str(self.workdir / "uploads"), **(extra_env or {})}
        self.redis: RedisHandle | None = None
        self.torchserve: TorchServeHandle | None = None
        self.workers: list[ProcessHandle] = []
        self.gateway: GatewayHandle | None = None

    @property
    def url(self) -> str:
        assert self.gateway is not None, "stack not started"
        return self.gateway.url

    def start(self) -> LocalStack:
        """Redis first (seconds); then TorchServe, the workers and the gateway start side by side and are
        awaited together (each takes seconds of imports on a busy machine)."""
        (self.workdir / "uploads").mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.workdir / "uploads", 0o700)
        try:
            if self.use_broker:
                self.redis = start_redis(workdir=self.workdir / "redis", persist=self.persist)
                self.env["DJLDML_BROKER_URL"] = self.redis.url
            if self.use_torchserve:
                mar = f"{self.model_name}.mar"
                self.torchserve = start_torchserve(self.model_store, {self.model_name: mar}, wait_models=False,
                                                   workdir=self.workdir / "torchserve", token_auth=self.token_auth)
                self.env["DJLDML_TORCHSERVE_URL"] = self.torchserve.inference_url
                self.env["DJLDML_TORCHSERVE_MANAGEMENT_URL"] = self.torchserve.management_url
                if self.token_auth:  # the keys change at each TorchServe start: workers follow the file
                    self.env["DJLDML_TORCHSERVE_KEY_FILE"] = str(self.torchserve.workdir / "key_file.json")
            if self.use_broker:
                for i in range(self.n_workers):
                    self.add_worker(name=f"djldml-{i}-{free_port()}@%h", wait=False)
            self.gateway = start_gateway(self.env, self.port, workdir=self.workdir / "gateway", wait=False)
            if self.torchserve is not None:
                self.torchserve.wait_models()
            for h in [*self.workers, self.gateway]:
                h.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def restart_torchserve(self, kill: bool = False) -> TorchServeHandle:
        """Stop (or ``kill``) TorchServe and start it again on the same ports and directory, with new keys that
        the workers and the gateway pick up from the key file; returns once the model is READY."""
        ts = self.torchserve
        assert ts is not None, "no torchserve in this stack"
        ts.kill() if kill else ts.stop()
        self.torchserve = start_torchserve(self.model_store, ts.models, ports=ts.ports, workdir=ts.workdir,
                                           token_auth=ts.token_auth)
        return self.torchserve

    def add_worker(self, name: str | None = None, wait: bool = True) -> ProcessHandle:
        """One more Celery worker on the same broker (scaling, or replacing a killed one)."""
        w = start_worker(self.env, workdir=self.workdir / "workers", name=name, wait=wait)
        self.workers.append(w)
        return w

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        for w in self.workers:
            w.stop()
        if self.torchserve is not None:
            self.torchserve.stop()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.stack", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8000, help="gateway port on 127.0.0.1")
    p.add_argument("--model-store", default="model_store")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    p.add_argument("--workdir", default=None, help="logs, uploads, TorchServe temp dir (default: a new temp dir)")
    p.add_argument("--workers", type=int, default=1, help="Celery workers")
    p.add_argument("--no-token-auth", action="store_true",
                   help="turn TorchServe token authorisation off (any local process could then manage the model)")
    p.add_argument("--no-persist", action="store_true", help="Redis keeps nothing on disk (jobs lost on restart)")
    p.add_argument("--no-torchserve", action="store_true", help="workers use the in-process backend")
    args = p.parse_args(argv)

    stack = LocalStack(args.model_store, args.model_name, port=args.port, workdir=args.workdir,
                       torchserve=not args.no_torchserve, token_auth=not args.no_token_auth, workers=args.workers,
                       persist=not args.no_persist)
    stopping = False

    def _stop(signum, frame):  # SIGTERM behaves like Ctrl-C
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        print(f"starting the local stack in {stack.workdir} ...", flush=True)
        stack.start()
        print(f"gateway     {stack.url}  (docs: {stack.url}/docs)")
        if stack.redis:
            print(f"redis       {stack.redis.url}")
        if stack.torchserve:
            print(f"torchserve  {stack.torchserve.inference_url} (management {stack.torchserve.management_url})")
        print(f"logs        {stack.workdir}\nCtrl-C stops everything.", flush=True)
        while True:
            for h in [stack.gateway, *stack.workers, stack.redis]:
                if h is not None and not h.alive():
                    print(f"{h.name} exited; see {h.log_path}", file=sys.stderr)
                    return 1
            if stack.torchserve is not None and not stack.torchserve.alive():
                print(f"torchserve exited; see {stack.torchserve.log_path}", file=sys.stderr)
                return 1
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping ...", flush=True)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
