"""Receiving the ``video`` field of a multipart upload straight to storage, enforcing the size limit as it streams.

FastAPI's ``UploadFile`` would spool the whole body to a temp file before our code runs (the size limit would
fire only after everything was received, and the data would be written twice). Here the raw body stream goes
through python-multipart's push parser; the ``video`` part's bytes go to an :class:`~service.storage.UploadWriter`
which refuses the upload the moment it passes the limit. Other form fields are ignored (bounded in size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from ..storage import UploadStorage, UploadTooLarge, UploadWriter, sniff_video
from .problems import Problem

FIELD = "video"
_MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file, for the Content-Length pre-check
_MAX_OTHER_FIELDS_BYTES = 64 * 1024
_ACCEPTED_PART_TYPES = ("application/octet-stream", "application/mp4", "application/x-matroska", "")


@dataclass
class ReceivedUpload:
    path: Path
    size: int


def _part_type_ok(content_type: str) -> bool:
    return content_type.startswith("video/") or content_type in _ACCEPTED_PART_TYPES


async def receive_video(request: Request, storage: UploadStorage, limit: int) -> ReceivedUpload:
    """Stream the request's ``video`` part to storage; raise :class:`Problem` on anything but a plausible video."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise Problem("unsupported_media_type", "expected multipart/form-data with a 'video' file field")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + _MULTIPART_SLACK:
        raise Problem("upload_too_large", f"the limit is {limit} bytes")

    state = _PartState(storage, limit)
    parser = MultipartParser(params[b"boundary"], state.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except UploadTooLarge:
        state.abort()
        raise Problem("upload_too_large", f"the limit is {limit} bytes") from None
    except Problem:
        state.abort()
        raise
    except (MultipartParseError, ValueError) as exc:
        state.abort()
        raise Problem("invalid_request", f"malformed multipart body: {exc.__class__.__name__}") from None
    except ClientDisconnect:
        state.abort()
        raise Problem("invalid_request", "the client disconnected during the upload") from None
    except BaseException:  # client went away mid-upload, or cancelled: leave nothing behind
        state.abort()
        raise

    w = state.video
    if w is None or not state.video_done:
        state.abort()
        raise Problem("invalid_request", "the form has no complete 'video' file field")
    if w.size == 0 or not sniff_video(w.head):
        storage.delete(w.path)
        raise Problem("not_a_video", "the upload is empty or not a known video container")
    return ReceivedUpload(w.path, w.size)


class _PartState:
    """python-multipart callbacks: collect each part's headers, route the video part's data to a writer."""

    def __init__(self, storage: UploadStorage, limit: int):
        self.storage, self.limit = storage, limit
        self.video: UploadWriter | None = None
        self.video_done = False
        self._headers: dict[str, str] = {}
        self._field, self._value = b"", b""
        self._current: UploadWriter | None = None
        self._other_bytes = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: setattr(self, "_field", self._field + d[s:e]),
            "on_header_value": lambda d, s, e: setattr(self, "_value", self._value + d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._field, self._value, self._current = {}, b"", b"", None

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, disp = parse_options_header(self._headers.get("content-disposition", ""))
        if disp.get(b"name", b"").decode("latin-1") != FIELD:
            return
        if self.video is not None:
            raise Problem("invalid_request", "more than one 'video' field")
        part_type = parse_options_header(self._headers.get("content-type", ""))[0].decode("latin-1").lower()
        if not _part_type_ok(part_type):
            raise Problem("unsupported_media_type", f"the 'video' part is {part_type!r}, not a video type")
        self.video = self._current = self.storage.open_writer(self.limit)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self._current.write(data[start:end])
        else:
            self._other_bytes += end - start
            if self._other_bytes > _MAX_OTHER_FIELDS_BYTES:
                raise UploadTooLarge("form fields other than 'video' are too large")

    def _part_end(self) -> None:
        if self._current is not None:
            self._current.close()
            self.video_done = True
        self._current = None

    def abort(self) -> None:
        if self.video is not None:
            self.video.abort()
