"""Local full stack without Docker: private Redis + TorchServe + Celery worker + uvicorn gateway.

A development package (``make stack`` and the integration tests); the service images do not ship it.

Two faces:
- a Python API for integration tests (``start_redis``, ``start_torchserve``, ``start_worker``,
  ``start_gateway``, or all of them at once with :class:`LocalStack`), each returning a handle with
  ``stop()`` (graceful) and ``kill()`` (SIGKILL, for fault-injection tests);
- a CLI for ``make stack``: ``python -m devstack --port 8000`` runs everything until Ctrl-C.

Every process gets its own ports (free ports on 127.0.0.1), its own work directory (logs, TorchServe's
TMPDIR with its pid file and sockets) and its own process group, so two stacks never collide and a stop
takes the children (Celery's pool, TorchServe's Python workers) with it.

Modules, one concern each: ``processes`` (ports, readiness polling, process-group handles and scans),
``redis_server``, ``s3_server`` (``rclone serve s3``), ``torchserve`` (config.properties and launch), ``worker``,
``gateway``, ``stack`` (:class:`LocalStack`) and ``__main__`` (the CLI).
"""

from .gateway import GatewayHandle, start_gateway
from .processes import HOST, ProcessHandle, free_port, free_ports, http_ok, wait_until
from .redis_server import RedisHandle, redis_ping, start_redis
from .s3_server import S3ServerHandle, start_s3_server
from .stack import DEFAULT_MODEL_NAME, LocalStack
from .torchserve import (
    TORCHSERVE_MAX_REQUEST_BYTES,
    TorchServeHandle,
    TorchServePorts,
    start_torchserve,
    torchserve_config,
)
from .worker import start_worker

__all__ = [
    "DEFAULT_MODEL_NAME", "HOST", "TORCHSERVE_MAX_REQUEST_BYTES", "GatewayHandle", "LocalStack", "ProcessHandle",
    "RedisHandle", "S3ServerHandle", "TorchServeHandle", "TorchServePorts", "free_port", "free_ports", "http_ok",
    "redis_ping", "start_gateway", "start_redis", "start_s3_server", "start_torchserve", "start_worker",
    "torchserve_config", "wait_until",
]
