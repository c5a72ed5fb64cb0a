"""Uploads in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, ``rclone serve s3``), so that the gateway
and the workers can run on different hosts. Chosen by ``DJLDML_UPLOAD_STORE=s3://bucket/prefix`` (service.wiring).

**Streaming, bounded memory.** The gateway never holds a whole video: the bytes go out as a multipart upload in
parts of ``part_bytes`` (8 MiB by default; S3's minimum is 5 MiB), one part in flight while the next fills, so an
upload costs at most two parts of memory whatever its size. An upload smaller than one part is a single
``PutObject``. The part is sent from the thread that calls ``write`` (the upload receiver runs the parser in a
worker thread, service.api.upload), never from the event loop.

**The gateway's probe.** The gateway opens each upload with the face pipeline's probe before it accepts the job
(typed 422s at once: not a video, too long). The probe demuxes the whole file, so it needs it locally: while
the bytes stream out, they are also written to a *spool*, a file unlinked as soon as it is created and reached
through ``/proc/self/fd`` — nobody else can open it, and it vanishes with the process however the process ends.
``local_copy`` hands the spool to the probe and closes it.

**Workers** get a local copy the same way: the object is streamed into an unlinked file in the private
``DJLDML_UPLOAD_DIR`` of that host, decoded from there, and gone when the job ends. The object itself is deleted
server-side when the job ends, however it ends (service.processing), and by the gateway's sweeper when its job is
gone (service.sweeper); an upload abandoned mid-way (the gateway died) is an incomplete multipart upload, which
the sweeper aborts once it has been idle for ``UPLOAD_IDLE_TIMEOUT_S + 5`` s and no upload of that job is in
progress (:meth:`S3UploadStorage.partial_uploads`).

**Privacy.** Keys are ``<prefix><job id>.upload``: random, never the client's file name; no metadata is sent.
The bucket must not keep versions (a delete would only hide the video) — see docs/deploy.md for the bucket
settings (versioning off, default encryption, a lifecycle rule as a backstop). Credentials come from the
standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an instance role) and are never
logged.

Why boto3 rather than obstore: the sweeper needs ListMultipartUploads / ListParts / AbortMultipartUpload to find
and remove the parts of an abandoned upload (video data), which obstore does not expose; boto3 (with botocore,
≈35 MB installed, pure Python) gives every S3 call, and the streaming here is a few explicit calls.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .storage import SUFFIX, CountedUpload, StorageUnavailable, check_name, ensure_private_dir

PART_BYTES = 8 * 1024 * 1024
MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest part (all but the last)
_COPY_CHUNK = 1024 * 1024
_UPLOAD_ID = "#upload-id="  # how a partial upload's reference carries its multipart upload id


def parse_store_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → (``bucket``, ``some/prefix/``); ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"an upload store is s3://bucket[/prefix], not {url!r}")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


def make_client(endpoint_url: str | None = None, region: str | None = None):
    """A boto3 S3 client (thread-safe). Path-style addressing when an endpoint is given (what self-hosted S3
    servers expect); checksums only where the API requires them (newer botocore's default CRC trailers are refused
    by several S3-compatible servers); bounded timeouts and retries so an unreachable store fails in seconds."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    config = Config(
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        retries={"max_attempts": 4, "mode": "standard"},
        connect_timeout=5, read_timeout=60, max_pool_connections=32,
        request_checksum_calculation="when_required", response_checksum_validation="when_required",
    )
    return session.client("s3", endpoint_url=endpoint_url or None,
                          region_name=region or session.region_name or "us-east-1", config=config)


def _unavailable(exc: Exception) -> StorageUnavailable:
    """A botocore error as StorageUnavailable: class and S3 error code only (messages may carry keys or hosts)."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return StorageUnavailable(f"upload store: {exc.__class__.__name__}{f' {code}' if code else ''}")


def _private_unlinked_file(directory: Path) -> tuple[Any, Path]:
    """A new 0600 file in ``directory``, unlinked at once: (open file object, a path that reaches it only from this
    process, ``/proc/self/fd/N``). Nothing is left on disk whatever happens to the process."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=".", suffix=".part")  # 0600, O_EXCL
    os.unlink(name)
    f = os.fdopen(fd, "w+b")
    return f, Path(f"/proc/self/fd/{fd}")


class S3UploadStorage:
    """Uploads as objects ``<prefix><name>.upload`` in ``bucket`` (see the module docstring).

    ``local_dir``: a private directory (0700, refused otherwise: :class:`service.storage.UnsafeUploadDir`) on this
    host for the transient local copies. ``client``: a boto3 S3 client (default :func:`make_client`). Raises
    ValueError for a malformed ``url``; nothing is sent to the store until it is used (a store that is down at
    start-up shows in ``ready()``, not as a crash).
    """

    def __init__(self, url: str, local_dir: str | Path, *, endpoint_url: str | None = None, region: str | None = None,
                 part_bytes: int = PART_BYTES, server_side_encryption: str | None = None, client=None):
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"S3 parts are at least {MIN_PART_BYTES} bytes")
        if not Path("/proc/self/fd").is_dir():
            raise RuntimeError("the object store needs Linux (/proc/self/fd reaches the unlinked local copies)")
        self.bucket, self.prefix = parse_store_url(url)
        self.local_dir = Path(local_dir)
        ensure_private_dir(self.local_dir)
        self.part_bytes = part_bytes
        self.extra = {"ServerSideEncryption": server_side_encryption} if server_side_encryption else {}
        self.client = client or make_client(endpoint_url, region)
        self._key_re = re.compile(re.escape(self.prefix) + r"([A-Za-z0-9]+)" + re.escape(SUFFIX))
        self._part_pool = ThreadPoolExecutor(16, thread_name_prefix="djldml-s3-part")  # shared by all writers
        self._spools: dict[str, Any] = {}  # name → open unlinked spool of a received upload (for the probe)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ names
    def key(self, name: str) -> str:
        return f"{self.prefix}{name}{SUFFIX}"

    def ref(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def _parse_ref(self, ref: str | Path) -> tuple[str, str, str | None]:
        """(name, key, multipart upload id or None); ValueError for a reference outside this bucket and prefix."""
        ref = str(ref)
        ref, _, upload_id = ref.partition(_UPLOAD_ID)
        head = f"s3://{self.bucket}/"
        m = self._key_re.fullmatch(ref[len(head):]) if ref.startswith(head) else None
        if m is None:
            raise ValueError("refusing to touch an object outside the upload store's prefix")
        return m.group(1), ref[len(head):], upload_id or None

    # ------------------------------------------------------------------------------------------ interface
    def open_writer(self, limit: int, name: str | None = None) -> S3UploadWriter:
        """A writer for the new object ``<prefix><name>.upload`` (``name``: the job id, hex; default random)."""
        return S3UploadWriter(self, check_name(name), limit)

    @contextlib.contextmanager
    def local_copy(self, ref: str | Path) -> Iterator[Path]:
        """A local, private, unlinked copy of the upload for decoding: the gateway's own spool when it still has it
        (the probe right after receiving), else the object streamed down. Gone when the block ends. Raises
        StorageUnavailable (store unreachable, object missing)."""
        name, key, _ = self._parse_ref(ref)
        with self._lock:
            spool = self._spools.pop(name, None)
        if spool is not None:
            try:
                yield Path(f"/proc/self/fd/{spool.fileno()}")
            finally:
                spool.close()
            return
        f, path = _private_unlinked_file(self.local_dir)
        with f:
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
                with contextlib.closing(body):
                    shutil.copyfileobj(body, f, _COPY_CHUNK)
                f.flush()
            except Exception as exc:  # botocore's ClientError (NoSuchKey), connection errors, timeouts, disk full
                raise _unavailable(exc) from None
            yield path  # outside the try: the caller's own errors pass through unchanged

    def uploads(self) -> list[tuple[str, str, float]]:
        """(name, reference, seconds since written) of every complete upload under the prefix, for the sweeper."""
        out, now = [], time.time()
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    m = self._key_re.fullmatch(obj["Key"])
                    if m:
                        out.append((m.group(1), self.ref(m.group(1)), max(0.0, now - obj["LastModified"].timestamp())))
        except Exception as exc:
            raise _unavailable(exc) from None
        return out

    def partial_uploads(self) -> list[tuple[str, str, float]]:
        """(name, reference, seconds since its last part) of every incomplete multipart upload under the prefix: an
        upload in progress, or one abandoned by a gateway that died. ``delete(reference)`` aborts it."""
        out, now = [], time.time()
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                 Prefix=self.prefix)
            for page in pages:
                for up in page.get("Uploads", []):
                    m = self._key_re.fullmatch(up["Key"])
                    if not m:
                        continue
                    last: datetime = up["Initiated"]
                    try:
                        parts = self.client.list_parts(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                    except self.client.exceptions.NoSuchUpload:
                        continue  # completed or aborted since the listing
                    for part in parts.get("Parts", []):
                        last = max(last, part["LastModified"])
                    out.append((m.group(1), f"{self.ref(m.group(1))}{_UPLOAD_ID}{up['UploadId']}",
                                max(0.0, now - last.timestamp())))
        except self.client.exceptions.NoSuchUpload:
            return out  # rclone serve s3 answers the listing of a bucket without uploads so (AWS: an empty list)
        except Exception as exc:
            raise _unavailable(exc) from None
        return out

    def delete(self, ref: str | Path) -> None:
        """Delete the upload server-side (quietly if already gone), or abort a partial upload's multipart upload;
        only inside this bucket and prefix (ValueError otherwise). Raises StorageUnavailable."""
        name, key, upload_id = self._parse_ref(ref)
        with self._lock:
            spool = self._spools.pop(name, None)
        if spool is not None:
            spool.close()
        try:
            if upload_id:
                with contextlib.suppress(self.client.exceptions.NoSuchUpload):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            else:
                self.client.delete_object(Bucket=self.bucket, Key=key)  # S3 answers 204 for a missing key too
        except Exception as exc:
            raise _unavailable(exc) from None

    def ready(self) -> tuple[bool, str]:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True, ""
        except Exception as exc:
            return False, str(_unavailable(exc))

    # ------------------------------------------------------------------------------------------ for the writer
    def _keep_spool(self, name: str, spool) -> None:
        with self._lock:
            old = self._spools.pop(name, None)
            self._spools[name] = spool
        if old is not None:
            old.close()


class S3UploadWriter(CountedUpload):
    """One upload streaming to the store (multipart past one part) and to the local spool; see the module docstring.

    ``write`` raises UploadTooLarge past ``limit`` (and aborts) and StorageUnavailable when the store fails. Not
    thread-safe: one caller writes; parts go out on the storage's thread pool, at most one at a time per upload.
    """

    def __init__(self, storage: S3UploadStorage, name: str, limit: int):
        self.storage, self.name, self.limit = storage, name, limit
        self.path = storage.ref(name)
        self.key = storage.key(name)
        self.size = 0
        self.head = b""
        self._spool, _ = _private_unlinked_file(storage.local_dir)
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._in_flight: Future | None = None
        self._completed = False
        self._closed = False

    def write(self, data: bytes) -> None:
        self._count(data)
        self._spool.write(data)
        self._buf += data
        n = self.storage.part_bytes
        while len(self._buf) >= n:
            part, self._buf = self._buf, self._buf[n:]  # hand the buffer itself over: no copy of the part
            del part[n:]
            self._send(part)

    def close(self) -> None:
        """Send what is left and complete the upload (then it is visible); the spool is kept for the probe."""
        s = self.storage
        try:
            if self._upload_id is None:
                s.client.put_object(Bucket=s.bucket, Key=self.key, Body=bytes(self._buf),
                                    ContentType="application/octet-stream", **s.extra)
            else:
                if self._buf or not self._parts:
                    self._send(bytes(self._buf))
                self._wait()
                s.client.complete_multipart_upload(Bucket=s.bucket, Key=self.key, UploadId=self._upload_id,
                                                   MultipartUpload={"Parts": self._parts})
        except Exception as exc:
            self.abort()
            raise exc if isinstance(exc, StorageUnavailable) else _unavailable(exc) from None
        self._completed, self._closed, self._buf = True, True, bytearray()
        self._spool.flush()
        s._keep_spool(self.name, self._spool)

    def abort(self) -> None:
        """Remove everything written: the spool, the parts sent (abort the multipart upload), the object if it was
        completed. Quiet: what fails here is left to the sweeper."""
        if self._closed and not self._completed:
            return
        self._closed = True
        self._buf = bytearray()
        s = self.storage
        with contextlib.suppress(Exception):
            self._wait()
        with contextlib.suppress(Exception):
            if self._completed:
                s.delete(self.path)  # also closes the kept spool
            elif self._upload_id is not None:
                s.client.abort_multipart_upload(Bucket=s.bucket, Key=self.key, UploadId=self._upload_id)
        self._completed = False
        self._spool.close()

    # ------------------------------------------------------------------------------------------ parts
    def _send(self, part: bytes | bytearray) -> None:
        """Start uploading ``part`` once the previous part is done (order kept, memory ≤ two parts)."""
        s = self.storage
        try:
            self._wait()
            if self._upload_id is None:
                self._upload_id = s.client.create_multipart_upload(
                    Bucket=s.bucket, Key=self.key, ContentType="application/octet-stream", **s.extra)["UploadId"]
        except StorageUnavailable:
            raise
        except Exception as exc:
            raise _unavailable(exc) from None
        number = len(self._parts) + 1
        self._parts.append({"PartNumber": number})
        self._in_flight = s._part_pool.submit(self._upload_part, number, part)

    def _upload_part(self, number: int, part: bytes | bytearray) -> None:
        s = self.storage
        etag = s.client.upload_part(Bucket=s.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number,
                                    Body=part)["ETag"]
        self._parts[number - 1]["ETag"] = etag

    def _wait(self) -> None:
        f, self._in_flight = self._in_flight, None
        if f is not None:
            try:
                f.result()
            except Exception as exc:
                raise _unavailable(exc) from None
