"""Receiving the ``video`` field of a multipart upload straight to storage, enforcing the size limit as it streams.

FastAPI's ``UploadFile`` would spool the whole body to a temp file before our code runs (the size limit would
fire only after everything was received, and the data would be written twice). Here the raw body stream goes
through python-multipart's push parser; the ``video`` part's bytes go to an :class:`~service.storage.UploadWriter`
which refuses the upload the moment it passes the limit. Other form fields are ignored (bounded in size), and
the whole body is counted against the limit too. The video's bytes are hashed (SHA-256) as they stream by, for
the Idempotency-Key fingerprint; a few small text fields the caller names are kept and handed to a check the
moment their part ends (so a refused ``callback_url`` sent before the video stops the upload there). Each read of
the body has an idle timeout, so a client that stops sending cannot hold a connection and a partial file open.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio import to_thread
from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from ..storage import UploadStorage, UploadTooLarge, UploadWriter, sniff_video
from .problems import Problem

FIELD = "video"
#: Bytes of the body besides the video part's data: boundaries, part headers and the other form fields. The
#: whole body may be at most ``limit + _MULTIPART_SLACK``; checked against Content-Length first, then counted.
_MULTIPART_SLACK = 128 * 1024
_MAX_OTHER_FIELDS_BYTES = 64 * 1024
_MAX_HEADER_BYTES = 8 * 1024  # one part's headers (a header that never ends must not grow without bound)
_MAX_NAMES_SHOWN = 5
_FEED_BYTES = 256 * 1024  # bytes handed to the parser per thread hop (reads are ≈64 KiB)
_ACCEPTED_PART_TYPES = ("application/octet-stream", "application/mp4", "application/x-matroska", "")


@dataclass
class ReceivedUpload:
    path: str | Path  # the storage's reference: a path (local directory) or s3://bucket/key (object store)
    size: int
    sha256: str = ""  # hex SHA-256 of the video part's bytes
    fields: dict[str, str] = field(default_factory=dict)  # the text fields asked for that were sent


class _StorageFailure(Exception):
    """Writing the upload failed on our side (disk full, permissions): a server error, not the client's."""


def _part_type_ok(content_type: str) -> bool:
    return content_type.startswith("video/") or content_type in _ACCEPTED_PART_TYPES


async def receive_video(request: Request, storage: UploadStorage, limit: int, idle_timeout_s: float = 30.0,
                        name: str | None = None, text_fields: Collection[str] = (),
                        check_field: Callable[[str, str], None] | None = None) -> ReceivedUpload:
    """Stream the request's ``video`` part to storage (as ``<name>.upload``, ``name`` the job id); raise
    :class:`Problem` on anything but a plausible video. Whatever fails, no file is left behind.

    ``text_fields``: names of form fields to keep (UTF-8 text, within the 64 KiB of other fields; a repeated
    one keeps its last value); ``check_field(name, value)`` runs as each ends and may raise Problem.

    Raises Problem with code ``unsupported_media_type`` (not multipart, or a non-video part type),
    ``upload_too_large`` (the video part over ``limit`` bytes, or the whole body over ``limit`` + 128 KiB),
    ``request_timeout`` (no bytes for ``idle_timeout_s`` seconds), ``invalid_request`` (any error of the
    multipart parser, no complete ``video`` field, other fields over 64 KiB, the client disconnected) and
    ``not_a_video`` (empty, or not a known container). A storage failure (disk full) propagates (500).
    """
    boundary = _boundary(request, limit)
    state = _PartState(storage, limit, name, text_fields, check_field)
    with _upload_failures(state, limit, idle_timeout_s):
        # Any exception of the parser — including its constructor (e.g. an over-long boundary) — is the body's
        # fault: _upload_failures makes it a 422, never a 500.
        parser = MultipartParser(boundary, state.callbacks())
        await _feed(request, parser, limit + _MULTIPART_SLACK, idle_timeout_s)
    return _received(state, storage)


def _boundary(request: Request, limit: int) -> bytes:
    """The multipart boundary; Problem for another content type, or a declared length already over the limit."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise Problem("unsupported_media_type", "expected multipart/form-data with a 'video' file field")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + _MULTIPART_SLACK:
        raise Problem("upload_too_large", f"the limit is {limit} bytes")
    return params[b"boundary"]


async def _feed(request: Request, parser: MultipartParser, body_limit: int, idle_timeout_s: float) -> None:
    """Every chunk of the body into the parser, counted against ``body_limit`` (UploadTooLarge) with an idle
    timeout per read (TimeoutError). The parser and the storage writer run in a worker thread, a batch of reads
    at a time: a write may block (disk, or an object store's part upload) and must not stall the event loop and
    every other request."""
    received = 0
    batch: list[bytes] = []
    batched = 0
    chunks = request.stream().__aiter__()
    while True:
        try:
            with anyio.fail_after(idle_timeout_s):  # per read: a slow but live client is fine
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            break
        received += len(chunk)
        if received > body_limit:  # every part counts, not only the video's bytes
            raise UploadTooLarge("request body too large")
        batch.append(chunk)
        batched += len(chunk)
        if batched >= _FEED_BYTES:
            await to_thread.run_sync(parser.write, b"".join(batch))
            batch, batched = [], 0
    if batch:
        await to_thread.run_sync(parser.write, b"".join(batch))
    await to_thread.run_sync(parser.finalize)


@contextlib.contextmanager
def _upload_failures(state: _PartState, limit: int, idle_timeout_s: float) -> Iterator[None]:
    """Whatever fails while the body streams in, the partial upload is deleted and the client gets its Problem;
    a storage failure on our side (disk full) propagates as itself (500)."""
    try:
        yield
    except UploadTooLarge:
        state.abort()
        raise Problem("upload_too_large", f"the limit is {limit} bytes") from None
    except TimeoutError:
        state.abort()
        raise Problem("request_timeout", f"nothing received for {idle_timeout_s:g} s") from None
    except Problem:
        state.abort()
        raise
    except ClientDisconnect:
        state.abort()
        raise Problem("invalid_request", "the client disconnected during the upload") from None
    except _StorageFailure as exc:
        state.abort()
        raise exc.__cause__ from None  # our disk, not the client's body: the 500 handler logs the class
    except Exception as exc:  # the multipart parser's errors (MultipartParseError, ValueError, ...)
        state.abort()
        raise Problem("invalid_request", f"malformed multipart body: {exc.__class__.__name__}") from None
    except BaseException:  # cancelled (the server is stopping): leave nothing behind
        state.abort()
        raise


def _received(state: _PartState, storage: UploadStorage) -> ReceivedUpload:
    """The complete video part, or Problem (and nothing left behind): missing or unfinished, empty, not a video."""
    w = state.video
    if w is None or not state.video_done:
        state.abort()
        raise Problem("invalid_request", state.missing_video_detail())
    if w.size == 0 or not sniff_video(w.head):
        storage.delete(w.path)
        raise Problem("not_a_video", "the upload is empty or not a known video container")
    return ReceivedUpload(w.path, w.size, state.sha256.hexdigest(), state.fields)


class _PartState:
    """python-multipart callbacks: collect each part's headers, route the video part's data to a writer."""

    def __init__(self, storage: UploadStorage, limit: int, name: str | None = None,
                 text_fields: Collection[str] = (), check_field: Callable[[str, str], None] | None = None):
        self.storage, self.limit, self.name = storage, limit, name
        self.text_fields, self.check_field = frozenset(text_fields), check_field
        self.fields: dict[str, str] = {}
        self.sha256 = hashlib.sha256()
        self._text: tuple[str, bytearray] | None = None  # (name, bytes so far) of a kept text field
        self.other_names: list[str] = []  # names of the non-video fields sent (a few, for the error detail)
        self.video: UploadWriter | None = None
        self.video_done = False
        self._headers: dict[str, str] = {}
        self._field, self._value = b"", b""
        self._current: UploadWriter | None = None
        self._other_bytes = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_bytes("_field", d[s:e]),
            "on_header_value": lambda d, s, e: self._header_bytes("_value", d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._field, self._value, self._current, self._text = {}, b"", b"", None, None

    def _header_bytes(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)
        if len(self._field) + len(self._value) > _MAX_HEADER_BYTES:
            raise Problem("invalid_request", "a part header is too long")

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, disp = parse_options_header(self._headers.get("content-disposition", ""))
        field_name = disp.get(b"name", b"").decode("latin-1")
        if field_name != FIELD:
            if len(self.other_names) < _MAX_NAMES_SHOWN:
                self.other_names.append(field_name[:40])
            if field_name in self.text_fields:
                self._text = (field_name, bytearray())
            return
        if self.video is not None:
            raise Problem("invalid_request", "more than one 'video' field")
        part_type = parse_options_header(self._headers.get("content-type", ""))[0].decode("latin-1").lower()
        if not _part_type_ok(part_type):
            raise Problem("unsupported_media_type", f"the 'video' part is {part_type!r}, not a video type")
        try:
            self.video = self._current = self.storage.open_writer(self.limit, self.name)
        except OSError as exc:
            raise _StorageFailure() from exc

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self.sha256.update(data[start:end])
            try:
                self._current.write(data[start:end])
            except OSError as exc:
                raise _StorageFailure() from exc
        else:
            if self._text is not None:
                self._text[1].extend(data[start:end])
            self._other_bytes += end - start
            if self._other_bytes > _MAX_OTHER_FIELDS_BYTES:  # e.g. the video sent under another field name
                raise Problem("invalid_request", self.missing_video_detail() if self.video is None else
                              f"form fields other than '{FIELD}' exceed {_MAX_OTHER_FIELDS_BYTES} bytes")

    def missing_video_detail(self) -> str:
        """What the client sent instead of a complete ``video`` field (field names, truncated)."""
        if self.video is not None:
            return f"the '{FIELD}' part ends before the body's closing boundary"
        sent = ", ".join(repr(n) for n in self.other_names) or "no fields"
        return f"the form has no '{FIELD}' file field (it has {sent}); send the video in a field named '{FIELD}'"

    def _part_end(self) -> None:
        if self._current is not None:
            self._current.close()
            self.video_done = True
        self._current = None
        if self._text is not None:
            name, raw = self._text
            self._text = None
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise Problem("invalid_request", f"the form field {name!r} is not UTF-8 text") from None
            if self.check_field:
                self.check_field(name, value)
            self.fields[name] = value

    def abort(self) -> None:
        if self.video is not None:
            self.video.abort()
