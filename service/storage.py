"""Where uploads wait between the gateway and the worker.

An interface (``UploadStorage``) with one implementation today: a local directory (a shared volume in compose).
Names are random — never the client's file name — and the size limit is enforced while the bytes stream in, so
an oversized upload is refused after ``limit`` bytes, not after the whole body. ``sniff_video`` checks the first
bytes for a known video container before anything expensive runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Protocol


class UploadTooLarge(Exception):
    code = "upload_too_large"


class UploadWriter:
    """An open upload being written; ``write`` raises UploadTooLarge past the limit (and removes the file)."""

    def __init__(self, path: Path, limit: int):
        self.path = path
        self.limit = limit
        self.size = 0
        self.head = b""  # first bytes, for sniffing
        self._f: BinaryIO = open(path, "xb")  # noqa: SIM115 — closed in close()/abort()

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
    def open_writer(self, limit: int) -> UploadWriter: ...
    def delete(self, path: str | Path) -> None: ...


class LocalUploadStorage:
    """Uploads as files with random names in one private directory."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def open_writer(self, limit: int) -> UploadWriter:
        return UploadWriter(self.directory / f"{secrets.token_hex(16)}.upload", limit)

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
