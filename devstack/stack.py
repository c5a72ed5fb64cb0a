"""The whole local stack: Redis + TorchServe + Celery worker(s) + gateway, wired through DJLDML_* settings."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .gateway import GatewayHandle, start_gateway
from .processes import ProcessHandle, free_port
from .redis_server import RedisHandle, start_redis
from .s3_server import S3ServerHandle, start_s3_server
from .torchserve import TorchServeHandle, start_torchserve
from .worker import start_worker

DEFAULT_MODEL_NAME = "djldml-demo"


class LocalStack:
    """Redis + TorchServe + Celery worker + gateway, wired through DJLDML_* settings; a context manager.

    ``torchserve=False`` leaves the worker on the in-process backend; ``broker=False`` gives the embedded
    gateway (no Redis, no worker). ``env`` holds the settings every process got; ``stop()`` stops in reverse.
    ``object_store=True`` puts the uploads in an S3-compatible store (``rclone serve s3`` on 127.0.0.1, see
    :func:`devstack.s3_server.start_s3_server`) instead of the shared upload directory, and gives each worker its
    own upload directory, as on separate hosts. ``concurrency``: jobs each Celery worker runs at once.
    Secure by default: TorchServe's token authorisation is on (the worker gets the keys; any other local
    process that reaches its ports is refused) and Redis persists its data in the work directory (a Redis
    restart keeps every accepted job). ``token_auth=False`` / ``persist=False`` are for experiments only.
    """

    def __init__(self, model_store: str | Path = "model_store", model_name: str = DEFAULT_MODEL_NAME, *,
                 port: int | None = None, workdir: str | Path | None = None, broker: bool = True,
                 torchserve: bool = True, token_auth: bool = True, workers: int = 1, persist: bool = True,
                 extra_env: Mapping[str, str] | None = None, object_store: bool = False, concurrency: int = 1):
        self.model_store = Path(model_store).resolve()
        self.model_name = model_name
        self.port = port
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="djldml-stack-")).resolve()
        self.use_broker, self.use_torchserve, self.token_auth, self.n_workers = broker, torchserve, token_auth, workers
        self.persist = persist
        self.use_object_store, self.concurrency = object_store, concurrency
        self.s3: S3ServerHandle | None = None
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
            if self.use_object_store:
                self.s3 = start_s3_server(self.workdir / "s3")
                self.env.update(self.s3.settings_env())
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
        env = self.env
        if self.use_object_store:  # as on another host: the worker shares nothing with the gateway but the store
            local = self.workdir / "workers" / "uploads"
            local.mkdir(parents=True, exist_ok=True, mode=0o700)
            env = {**env, "DJLDML_UPLOAD_DIR": str(local)}
        w = start_worker(env, workdir=self.workdir / "workers", name=name, wait=wait, concurrency=self.concurrency)
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
        if self.s3 is not None:
            self.s3.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
