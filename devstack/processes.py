"""Child processes of the local stack: free ports, readiness polling, and process-group handles.

Every process runs in its own process group (``start_new_session``), so a stop takes its children (Celery's
pool, TorchServe's Python workers) with it; logs go to files, never to pipes (``torchserve --start``
daemonises, and a captured pipe that nobody reads blocks the daemon).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

HOST = "127.0.0.1"


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


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment with the venv's bin first on PATH (``torchserve`` and its Python), plus ``extra``."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


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
            ready_or_stop(self, lambda: wait_until(self.ready_check, self.ready_timeout, self.name, interval=0.2,
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


def spawn(name: str, cmd: list[str], log_path: Path, env: Mapping[str, str] | None = None,
           cwd: str | Path | None = None) -> ProcessHandle:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=child_env(env), cwd=str(cwd or repo_root()), start_new_session=True)
    return ProcessHandle(name, popen, log_path)


def ready_or_stop(handle: ProcessHandle, wait: Callable[[], None]) -> None:
    """Run ``wait``; on failure stop the process and re-raise with the end of its log."""
    try:
        wait()
    except Exception as exc:
        handle.stop(5)
        tail = handle.log_tail()
        raise RuntimeError(f"{handle.name} did not start: {exc}\n--- {handle.log_path} ---\n{tail}") from exc


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
    return members


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait until process group ``pgid`` has no live member; False after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
