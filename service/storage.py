"""Where uploads wait between the gateway and the worker.

An interface (``UploadStorage``) with two implementations: a local directory here (a shared volume in compose:
gateway and workers on one host), and an S3-compatible object store in :mod:`service.s3_storage` (gateway and
workers on different hosts), chosen by ``DJLDML_UPLOAD_STORE`` (service.wiring). An upload is known by a
*reference* (``UploadWriter.path``): a path here, ``s3://bucket/key`` there; workers get a local file to decode
from ``local_copy(ref)``. Names are the job's id (random, never the client's file name), so a sweeper can tell
which upload belongs to which job; the size limit is enforced while the bytes stream in, so an oversized upload
is refused after ``limit`` bytes, not after the whole body. ``sniff_video`` checks the first bytes for a known
video container before anything expensive runs.

Uploads are interview videos (health data): the directory is created 0700 and each file 0600, whatever the
umask, and a directory that another user owns or that is group- or world-writable is refused
(:class:`UnsafeUploadDir`), because anyone who can write there could swap or read a video between the gateway
and the worker.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol

SNIFF_BYTES = 512  # what sniff_video reads of an upload


class UploadTooLarge(Exception):
    code = "upload_too_large"


class UnsafeUploadDir(Exception):
    """The upload directory is owned by another user or is group/world-writable (refused at start-up)."""


class StorageUnavailable(OSError):
    """The upload store cannot be reached or refused a request (object store down, bad credentials). An OSError,
    so the upload path treats it as a failure on our side, never as the client's; the gateway answers 503
    ``upload_store_unavailable``, a worker fails the job with that code."""

    code = "upload_store_unavailable"


class UploadWriter(Protocol):
    """An open upload being written. ``write`` raises UploadTooLarge past the limit (and removes what was written);
    ``close`` makes the upload complete and visible; ``abort`` removes everything written, quietly."""

    path: str | Path  # the upload's reference: give it to UploadStorage.delete / local_copy
    size: int  # bytes written so far
    head: bytes  # the first 512 bytes, for sniff_video

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class UploadStorage(Protocol):
    def open_writer(self, limit: int, name: str | None = None) -> UploadWriter: ...
    def local_copy(self, ref: str | Path) -> AbstractContextManager[Path]: ...
    def uploads(self) -> list[tuple[str, str | Path, float]]: ...
    def partial_uploads(self) -> list[tuple[str, str | Path, float]]: ...
    def delete(self, ref: str | Path) -> None: ...
    def ready(self) -> tuple[bool, str]: ...


SUFFIX = ".upload"


def check_name(name: str | None) -> str:
    """The upload's name: ``name`` (the job id, hex) or a random one; ValueError unless alphanumeric (so it can
    neither escape a directory nor a key prefix)."""
    name = name or secrets.token_hex(16)
    if not name.isalnum():
        raise ValueError("upload names are alphanumeric")
    return name


class CountedUpload:
    """What every upload writer does with each chunk first: count it against the limit and keep the first bytes."""

    size: int
    limit: int
    head: bytes  # the first SNIFF_BYTES, for sniff_video

    def _count(self, data: bytes) -> None:
        """Raise UploadTooLarge past ``limit`` (after ``abort()``, which removes what was written)."""
        self.size += len(data)
        if self.size > self.limit:
            self.abort()
            raise UploadTooLarge(f"upload exceeds {self.limit} bytes")
        if len(self.head) < SNIFF_BYTES:
            self.head = (self.head + data)[:SNIFF_BYTES]

    def abort(self) -> None:
        raise NotImplementedError


class LocalUploadWriter(CountedUpload):
    """An upload being written to a file; ``write`` raises UploadTooLarge past the limit (and removes the file).

    The file is created exclusively (never follows or reuses an existing name) with mode 0600.
    """

    def __init__(self, path: Path, limit: int):
        self.path = path
        self.limit = limit
        self.size = 0
        self.head = b""  # first bytes, for sniffing
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        self._f: BinaryIO = os.fdopen(fd, "wb")  # closed in close()/abort()

    def write(self, data: bytes) -> None:
        self._count(data)
        self._f.write(data)

    def close(self) -> None:
        self._f.close()

    def abort(self) -> None:
        self._f.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def default_upload_dir() -> Path:
    """A per-user private location, not a predictable shared path: ``$XDG_CACHE_HOME/djldml/uploads``
    (``~/.cache/djldml/uploads``). Deployments set ``DJLDML_UPLOAD_DIR`` (a volume shared by gateway and worker)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "djldml" / "uploads"


def ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` with mode 0700 if absent; raise :class:`UnsafeUploadDir` if it exists but another user
    owns it or group/others may write to it (or it is a symlink or not a directory)."""
    try:
        directory.mkdir(parents=True, mode=0o700)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass
    st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeUploadDir(f"upload directory {directory} is not a plain directory")
    if st.st_uid != os.geteuid():
        raise UnsafeUploadDir(f"upload directory {directory} belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o022:
        raise UnsafeUploadDir(f"upload directory {directory} is group- or world-writable "
                              f"(mode {stat.S_IMODE(st.st_mode):o}); use a private directory (0700)")


class LocalUploadStorage:
    """Uploads as files named by job id (or at random) in one private directory (see :func:`ensure_private_dir`).

    Raises :class:`UnsafeUploadDir` when the directory is not private to this user.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        ensure_private_dir(self.directory)

    def open_writer(self, limit: int, name: str | None = None) -> LocalUploadWriter:
        """A writer for a new file ``<name>.upload`` (``name``: the job id, hex; default random)."""
        return LocalUploadWriter(self.directory / f"{check_name(name)}{SUFFIX}", limit)

    @contextlib.contextmanager
    def local_copy(self, ref: str | Path) -> Iterator[Path]:
        """The upload's own file (it is local already): nothing is copied."""
        yield Path(ref)

    def uploads(self) -> list[tuple[str, Path, float]]:
        """(name, path, seconds since last written) of every upload in the directory, for the sweeper."""
        out, now = [], time.time()
        for p in self.directory.glob(f"*{SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                out.append((p.name[: -len(SUFFIX)], p, now - p.stat().st_mtime))
        return out

    def partial_uploads(self) -> list[tuple[str, Path, float]]:
        """None apart from :meth:`uploads`: a file being written is listed there (and left alone while fresh)."""
        return []

    def ready(self) -> tuple[bool, str]:
        return (True, "") if self.directory.is_dir() else (False, f"upload directory {self.directory} is missing")

    def delete(self, path: str | Path) -> None:
        """Remove an upload; only inside our directory, and quietly if it is already gone."""
        p = Path(path)
        if p.resolve().parent != self.directory.resolve():
            raise ValueError("refusing to delete outside the upload directory")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def sniff_video(head: bytes) -> bool:
    """True when the first bytes look like a video container we can decode (mp4/mov/3gp, Matroska/WebM, AVI,
    MPEG-TS/PS, FLV, Ogg). A cheap first filter; the decoder has the last word."""
    if len(head) < 12:
        return False
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")  # ISO BMFF / QuickTime
        or head[:4] == b"\x1a\x45\xdf\xa3"  # EBML: Matroska, WebM
        or (head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"))
        or (len(head) > 188 and head[:1] == head[188:189] == b"\x47")  # MPEG-TS sync bytes
        or head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")  # MPEG-PS / elementary stream
        or head[:3] == b"FLV"
        or head[:4] == b"OggS"
    )
