"""Where uploads wait between the gateway and the worker.

An interface (``UploadStorage``) with one implementation today: a local directory (a shared volume in compose).
Names are the job's id (random, never the client's file name), so a sweeper can tell which upload belongs to
which job; the size limit is enforced while the bytes stream in, so an oversized upload is refused after
``limit`` bytes, not after the whole body. ``sniff_video`` checks the first bytes for a known video container
before anything expensive runs.

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
from pathlib import Path
from typing import BinaryIO, Protocol


class UploadTooLarge(Exception):
    code = "upload_too_large"


class UnsafeUploadDir(Exception):
    """The upload directory is owned by another user or is group/world-writable (refused at start-up)."""


class UploadWriter:
    """An open upload being written; ``write`` raises UploadTooLarge past the limit (and removes the file).

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
        self.size += len(data)
        if self.size > self.limit:
            self.abort()
            raise UploadTooLarge(f"upload exceeds {self.limit} bytes")
        if len(self.head) < 512:
            self.head = (self.head + data)[:512]
        self._f.write(data)

    def close(self) -> None:
        self._f.close()

    def abort(self) -> None:
        self._f.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class UploadStorage(Protocol):
    def open_writer(self, limit: int, name: str | None = None) -> UploadWriter: ...
    def delete(self, path: str | Path) -> None: ...


SUFFIX = ".upload"


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

    def open_writer(self, limit: int, name: str | None = None) -> UploadWriter:
        """A writer for a new file ``<name>.upload`` (``name``: the job id, hex; default random)."""
        name = name or secrets.token_hex(16)
        if not name.isalnum():
            raise ValueError("upload names are alphanumeric")
        return UploadWriter(self.directory / f"{name}{SUFFIX}", limit)

    def uploads(self) -> list[tuple[str, Path, float]]:
        """(name, path, seconds since last written) of every upload in the directory, for the sweeper."""
        out, now = [], time.time()
        for p in self.directory.glob(f"*{SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                out.append((p.name[: -len(SUFFIX)], p, now - p.stat().st_mtime))
        return out

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
