"""The gateway process (``python -m service``) of the local stack."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .processes import HOST, ProcessHandle, free_port, http_ok, spawn


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
    h = spawn("gateway", cmd, workdir / "gateway.log", env)
    handle = GatewayHandle(h.name, h.popen, h.log_path, port=port, ready_timeout=timeout)
    handle.ready_check = lambda: http_ok(handle.url + ready_path)
    if wait:
        handle.wait_ready()
    return handle
