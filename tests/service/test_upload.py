"""The upload receiver (service.api.upload) driven with hand-made ASGI bodies: every parser error is a typed
4xx, the limit counts the whole body, a stalled body times out, and no partial file is ever left. Plus raw
multipart fuzzing of the real endpoint (hypothesis) that must never produce a 5xx."""

from __future__ import annotations

import time

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from service.api.problems import Problem
from service.api.upload import receive_video
from service.storage import LocalUploadStorage
from tests.service.test_api_unit import KEY, assert_problem, make_client, video_bytes  # noqa: F401 (fixture)

MP4_HEAD = b"\0\0\0\x18ftypmp42" + b"\0" * 500


def part(name: str, data: bytes, boundary: str = "b0undary", ctype: str = "video/mp4") -> bytes:
    return (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="v.mp4"\r\n'
            f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"


def end(boundary: str = "b0undary") -> bytes:
    return f"--{boundary}--\r\n".encode()


def receive(chunks, tmp_path, limit=1_000_000, boundary="b0undary", idle_timeout_s=5.0, stall_after=None):
    """Run receive_video on ``chunks``; returns (result or Problem, chunks read). ``stall_after``: after that
    many chunks the client sends nothing more (the receive never returns)."""
    read = {"n": 0}

    async def recv():
        i = read["n"]
        if stall_after is not None and i >= stall_after:
            await anyio.sleep(3600)
        read["n"] += 1
        return {"type": "http.request", "body": chunks[i], "more_body": i + 1 < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/jobs", "query_string": b"",
             "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())]}
    storage = LocalUploadStorage(tmp_path / "up")
    try:
        out = anyio.run(receive_video, Request(scope, recv), storage, limit, idle_timeout_s)
    except Problem as exc:
        out = exc
    return out, read["n"]


def test_a_complete_video_part_is_stored(tmp_path):
    out, _ = receive([part("note", b"hello"), part("video", MP4_HEAD) + end()], tmp_path)
    assert not isinstance(out, Problem), out.detail
    assert out.path.read_bytes() == MP4_HEAD and out.size == len(MP4_HEAD)
    assert out.path.stat().st_mode & 0o777 == 0o600


def test_an_overlong_boundary_is_a_422_not_a_500(tmp_path):
    b = "x" * 300  # python-multipart refuses boundaries this long (the 500)
    out, _ = receive([part("video", MP4_HEAD, b) + end(b)], tmp_path, boundary=b)
    assert isinstance(out, Problem) and out.code == "invalid_request" and out.status == 422
    assert list((tmp_path / "up").iterdir()) == []


@pytest.mark.parametrize("body", [
    b"--b0undary\r\nContent-Disposition: form-data; name=\"video\"\r\n\r\n" + MP4_HEAD,  # never closed
    b"garbage before any boundary",
    b"--b0undary\r\n" + b"X" * 20_000,  # a header line that never ends
    b"--b0undary\r\nno colon in this header\r\n\r\ndata\r\n--b0undary--\r\n",
])
def test_malformed_bodies_are_422_and_leave_no_file(tmp_path, body):
    out, _ = receive([body], tmp_path)
    assert isinstance(out, Problem) and out.code == "invalid_request", out
    assert list((tmp_path / "up").iterdir()) == []


def test_a_video_in_a_wrongly_named_field_is_a_missing_video_not_a_413(tmp_path):
    big = MP4_HEAD + b"\0" * 200_000  # past the 64 KiB allowed to other fields
    out, _ = receive([part("file", big) + end()], tmp_path)
    assert isinstance(out, Problem) and (out.code, out.status) == ("invalid_request", 422)
    assert "'video'" in out.detail and "'file'" in out.detail, out.detail
    small, _ = receive([part("file", MP4_HEAD) + end()], tmp_path)
    assert small.code == "invalid_request" and "'file'" in small.detail
    assert list((tmp_path / "up").iterdir()) == []


def test_the_limit_counts_the_whole_body_not_only_the_video_part(tmp_path):
    empty_parts = b"".join(part(f"f{i}", b"", ctype="text/plain") for i in range(500))  # ≈ 50 KB of parts
    chunks = [empty_parts] * 200  # ≈ 10 MB, all of it boundaries and headers; limit 1 MB
    out, read = receive(chunks, tmp_path, limit=1_000_000)
    assert isinstance(out, Problem) and out.code == "upload_too_large", out
    assert read * len(empty_parts) < 1_000_000 + 256 * 1024, f"read {read} chunks before refusing"


def test_a_stalled_body_times_out_with_408_and_the_partial_file_is_deleted(tmp_path):
    chunks = [part("video", MP4_HEAD)[:-2], b"\0" * 10_000, b"never sent"]
    start = time.monotonic()
    out, read = receive(chunks, tmp_path, idle_timeout_s=0.5, stall_after=2)
    assert isinstance(out, Problem) and (out.code, out.status) == ("request_timeout", 408), out
    assert 0.4 < time.monotonic() - start < 3
    assert list((tmp_path / "up").iterdir()) == []


def test_a_slow_but_live_body_is_not_timed_out(tmp_path):
    """The timeout is per read: a body that keeps coming, however slowly overall, is received."""
    pieces = [part("video", MP4_HEAD)[:40], part("video", MP4_HEAD)[40:] + end()]
    read = {"n": 0}

    async def recv():
        await anyio.sleep(0.3)
        i = read["n"]
        read["n"] += 1
        return {"type": "http.request", "body": pieces[i], "more_body": i + 1 < len(pieces)}

    scope = {"type": "http", "method": "POST", "path": "/jobs", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=b0undary")]}
    out = anyio.run(receive_video, Request(scope, recv), LocalUploadStorage(tmp_path / "up"), 10_000, 0.5)
    assert out.size == len(MP4_HEAD)


_part_names = st.sampled_from(["video", "file", "x", "", 'vi"deo'])
_raw_part = st.builds(
    lambda name, ctype, data, cut: (f'--fz\r\nContent-Disposition: form-data; name="{name}"\r\n'
                                    f"Content-Type: {ctype}\r\n\r\n").encode() + data[:cut],
    _part_names, st.sampled_from(["video/mp4", "", "text/plain", "video/x\0"]),
    st.binary(max_size=300) | st.just(MP4_HEAD), st.integers(0, 600),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_raw_part, max_size=4), tail=st.sampled_from([b"", b"\r\n--fz--\r\n", b"--fz--", b"\r\n"]),
       noise=st.binary(max_size=64), boundary=st.sampled_from(["fz", "fz; charset=x", "x" * 300, "\"fz\"", ""]))
def test_fuzzed_multipart_bodies_never_answer_5xx(make_client, parts, tail, noise, boundary):  # noqa: F811
    c = fuzz_client(make_client)
    body = b"\r\n".join(parts) + tail + noise
    r = c.post("/jobs", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code < 500, r.text
    assert r.status_code in (202, 408, 413, 415, 422, 429), r.text


_clients: dict[int, object] = {}


def fuzz_client(make_client):  # noqa: F811
    """One app per test function (hypothesis calls the body many times with the same fixture)."""
    key = id(make_client)
    if key not in _clients:
        _clients.clear()
        _clients[key] = make_client(max_concurrent_jobs_per_key=1000)
    return _clients[key]
