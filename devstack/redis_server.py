"""A private ``redis-server`` for the local stack and the integration tests."""

from __future__ import annotations

import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .processes import HOST, ProcessHandle, free_port, ready_or_stop, spawn, wait_until


def redis_ping(port: int, host: str = HOST) -> bool:
    """True when a Redis server answers PING on ``host:port`` (raw RESP, no client library needed)."""
    with socket.create_connection((host, port), timeout=1.0) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")



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
    h = spawn("redis", cmd, workdir / "redis.log")
    handle = RedisHandle(h.name, h.popen, h.log_path, port=port, workdir=workdir, persist=persist)
    ready_or_stop(handle, lambda: wait_until(lambda: redis_ping(port), timeout, "redis", alive=handle.alive))
    return handle
