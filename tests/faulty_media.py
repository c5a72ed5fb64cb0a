"""Capture faults built at test time: the same synthetic face scene (tests/media.py) delivered the ways phones,
camcorders and editing tools deliver it — a face-less stream first, full colour range, a lying header, damaged
packets, interlaced fields, a mirroring display matrix, a cut moov-first mp4.

Each builder writes honestly what real tools write: streams and options through PyAV/FFmpeg's encoders and
muxers, or a documented patch of one container field (the Matroska Duration, the mp4 track matrix) in a file
PyAV wrote. Use the cached ``*_video`` functions in tests (cached in the temp dir by their arguments, like
tests/media.py's). Synthetic test videos made from public test images; no patient data.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.media import CONTAINERS, _cached, face_scene, face_video, make_truncated_copy

FAULTS_VERSION = 1  # bump when a builder's output changes, so cached files are rebuilt


def _encode(
    out_path: Path,
    frames: Sequence[np.ndarray],
    *,
    fps: float = 30.0,
    encoder: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    color_range: int | None = None,
) -> Path:
    """Encode displayed RGB frames with one stream; ``color_range`` 1 (limited, "tv") or 2 (full, "pc") is set
    on the encoder and used for the RGB→YUV conversion; Interlaced coding is an encoder option (x264:
    ``flags=+ilme+ildct``, ``x264-params=interlaced=1:tff=1``); decoded frames then say ``interlaced_frame``."""
    fmt = CONTAINERS[out_path.suffix.lstrip(".")]
    with av.open(str(out_path), "w", format=fmt) as out:
        h, w = frames[0].shape[:2]
        stream = out.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001), options=options or {})
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if color_range is not None:
            stream.codec_context.color_range = color_range
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame = frame.reformat(format=pix_fmt, dst_color_range=color_range)
            if color_range is not None:
                frame.color_range = color_range
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return out_path


# --- 1. stream choice ------------------------------------------------------------------------------------------


def make_two_stream_video(out_path: str | os.PathLike, *, default_second: bool = True, seconds: float = 2.0) -> Path:
    """Two video streams: first a small (160×120) face-less track, then the 320×240 face scene. With
    ``default_second`` the face stream alone carries the ``default`` disposition (mkv FlagDefault); without it
    (avi has no dispositions) neither does."""
    out_path = Path(out_path)
    scene = face_scene(seconds=seconds, size=(320, 240))
    noface = face_scene(seconds=seconds, size=(160, 120), face=False)
    fmt = CONTAINERS[out_path.suffix.lstrip(".")]
    options = {"default_mode": "passthrough"} if fmt == "matroska" else {}
    with av.open(str(out_path), "w", format=fmt, options=options) as out:
        streams = []
        for w, h in ((160, 120), (320, 240)):
            s = out.add_stream("libx264", rate=30, options={"preset": "ultrafast", "crf": "23"})
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            streams.append(s)
        if fmt == "matroska":
            streams[0].disposition = 0
            streams[1].disposition = av.stream.Disposition.default if default_second else 0
        for i in range(scene.n_frames):
            for s, sc in zip(streams, (noface, scene), strict=True):
                frame = av.VideoFrame.from_ndarray(sc.frame(i), format="rgb24")
                frame.pts = i
                for packet in s.encode(frame):
                    out.mux(packet)
        for s in streams:
            for packet in s.encode():
                out.mux(packet)
    return out_path


def two_stream_video(*, container: str = "mkv", default_second: bool = True) -> Path:
    params = {"v": FAULTS_VERSION, "container": container, "default_second": default_second}
    return _cached("twostream", container, params, lambda p: make_two_stream_video(p, default_second=default_second))


# --- 2. colour range -------------------------------------------------------------------------------------------

# Encoders whose decoders return full range as yuv420p + color_range=JPEG (VP9) or as yuvj420p (H.264).
RANGE_CODECS = {
    "vp9": ("libvpx-vp9", "webm", {"deadline": "realtime", "cpu-used": "8", "b": "4M", "row-mt": "1"}),
    "h264": ("libx264", "mkv", {"preset": "ultrafast", "crf": "18"}),
}


def range_video(*, full: bool, codec: str = "vp9", seconds: float = 1.0) -> Path:
    """The still 320×240 face scene encoded in limited ("tv") or full ("pc") range."""
    encoder, container, options = RANGE_CODECS[codec]
    params = {"v": FAULTS_VERSION, "full": full, "codec": codec, "seconds": seconds}
    frames = list(face_scene(seconds=seconds, size=(320, 240), moving=False).frames())
    colour = 2 if full else 1
    return _cached(
        "range",
        container,
        params,
        lambda p: _encode(Path(p), frames, encoder=encoder, options=options, color_range=colour),
    )


# --- 3. a header that lies about the duration ------------------------------------------------------------------


def patch_mkv_duration(src: str | os.PathLike, out_path: str | os.PathLike, seconds: float) -> Path:
    """A copy of a Matroska file whose Segment Info Duration (EBML id 0x4489, a float in TimestampScale units,
    1 ms by default as FFmpeg writes) claims ``seconds``. Only the header field changes."""
    data = bytearray(Path(src).read_bytes())
    i = data.find(b"\x44\x89")
    while i >= 0 and data[i + 2] not in (0x84, 0x88):
        i = data.find(b"\x44\x89", i + 1)
    if i < 0:
        raise ValueError("no Duration element")
    if data[i + 2] == 0x88:
        data[i + 3 : i + 11] = struct.pack(">d", seconds * 1000.0)
    else:
        data[i + 3 : i + 7] = struct.pack(">f", seconds * 1000.0)
    Path(out_path).write_bytes(bytes(data))
    return Path(out_path)


def lying_duration_video(*, seconds: float = 6.0, claims_s: float = 9 * 3600.0) -> Path:
    src = face_video(seconds=seconds, size=(320, 240), container="mkv", gop=30)
    params = {"v": FAULTS_VERSION, "seconds": seconds, "claims_s": claims_s}
    return _cached("lyingdur", "mkv", params, lambda p: patch_mkv_duration(src, p, claims_s))


# --- 4. damaged packets ----------------------------------------------------------------------------------------


def corrupt_packets(src: str | os.PathLike, out_path: str | os.PathLike, bad: Sequence[int]) -> Path:
    """A packet-for-packet copy of ``src``'s video stream (Matroska) in which the packets numbered ``bad``
    (decoding order) have every third payload byte after the first eight XOR-ed: what a flaky SD card or a
    lost network chunk leaves. Timestamps and keyframe flags are kept."""
    out_path = Path(out_path)
    with av.open(str(src)) as inp:
        st = inp.streams.video[0]
        packets = [p for p in inp.demux(st) if p.size]
        with av.open(str(out_path), "w", format="matroska") as out:
            so = out.add_stream_from_template(st)
            for i, p in enumerate(packets):
                payload = bytearray(bytes(p))
                if i in bad:
                    for j in range(8, len(payload), 3):
                        payload[j] ^= 0x5A
                q = av.Packet(bytes(payload))
                q.pts, q.dts, q.time_base, q.stream = p.pts, p.dts, st.time_base, so
                q.is_keyframe = p.is_keyframe
                out.mux(q)
    return out_path


def damaged_video(*, bad: Sequence[int] = (40, 41, 42), gop: int = 30, seconds: float = 3.0) -> Path:
    """The moving 320×240 face scene (keyframe every ``gop`` frames, no B-frames) with packets ``bad``
    corrupted; with the defaults frames 43–59 are predicted from the damaged pictures, frame 60 is a keyframe."""
    src = face_video(seconds=seconds, size=(320, 240), container="mkv", gop=gop)
    params = {"v": FAULTS_VERSION, "bad": list(bad), "gop": gop, "seconds": seconds}
    return _cached("damaged", "mkv", params, lambda p: corrupt_packets(src, p, bad))


# --- 5. interlaced ---------------------------------------------------------------------------------------------

SWAY_PX = 40.0  # the interlaced scene's horizontal sway amplitude (pixels) ...
SWAY_PERIOD_S = 1.0  # ... and period: up to 250 px/s, 4 px between the two fields of a frame at 30 fps


def _sway(t: float) -> int:
    return int(round(SWAY_PX * math.sin(2 * math.pi * t / SWAY_PERIOD_S)))


def interlaced_frames(seconds: float, fps: float = 30.0, progressive: bool = False) -> list[np.ndarray]:
    """Frames of the still 320×240 face scene swaying sideways. Interlaced: the even rows (top field) show the
    scene at i / fps, the odd rows (bottom field) at (i + ½) / fps, as a camcorder captures them.
    ``progressive``: every row at i / fps (the reference)."""
    scene = face_scene(seconds=seconds, size=(320, 240), moving=False)
    base = scene.frame(0)
    out = []
    for i in range(scene.n_frames):
        t = i / fps
        top = np.roll(base, _sway(t), axis=1)
        if progressive:
            out.append(top)
            continue
        bottom = np.roll(base, _sway(t + 0.5 / fps), axis=1)
        frame = top.copy()
        frame[1::2] = bottom[1::2]
        out.append(frame)
    return out


def interlaced_video(*, progressive: bool = False, seconds: float = 2.0) -> Path:
    """The swaying scene encoded by x264 as interlaced (field coding, top field first), or progressive."""
    options = {"preset": "ultrafast", "crf": "18"}
    if not progressive:
        options.update({"flags": "+ilme+ildct", "x264-params": "interlaced=1:tff=1"})
    params = {"v": FAULTS_VERSION, "progressive": progressive, "seconds": seconds}
    frames = interlaced_frames(seconds, progressive=progressive)
    return _cached("interlaced", "mkv", params, lambda p: _encode(Path(p), frames, options=options))


# --- 6. a mirroring display matrix -----------------------------------------------------------------------------


def mirror_mp4(src: str | os.PathLike, out_path: str | os.PathLike, width: int) -> Path:
    """A copy of a single-track mp4 whose track header (tkhd) matrix mirrors the picture horizontally:
    [[-1, 0, 0], [0, 1, 0], [width, 0, 1]] (16.16 fixed point, w in 2.30), what an editor's "flip" writes.
    The stored pixels of ``src`` must be the mirror image of what should be displayed."""
    data = bytearray(Path(src).read_bytes())
    i = data.find(b"tkhd")
    if i < 0:
        raise ValueError("no tkhd box")
    offset = i + (44 if data[i + 4] == 0 else 56)  # version 0: 32-bit times; version 1: 64-bit
    data[offset : offset + 36] = struct.pack(">9i", -65536, 0, 0, 0, 65536, 0, width << 16, 0, 1 << 30)
    Path(out_path).write_bytes(bytes(data))
    return Path(out_path)


def mirrored_video(*, seconds: float = 2.0, size: tuple[int, int] = (320, 240)) -> Path:
    """The moving face scene stored mirrored, with a display matrix that mirrors it back: displayed, it is
    exactly ``face_scene(seconds=seconds, size=size)``."""
    params = {"v": FAULTS_VERSION, "seconds": seconds, "size": list(size)}

    def build(p: Path) -> Path:
        scene = face_scene(seconds=seconds, size=size)
        stored = p.with_name(p.name + ".stored.mp4")
        _encode(stored, [np.ascontiguousarray(f[:, ::-1]) for f in scene.frames()], options={"preset": "ultrafast"})
        mirror_mp4(stored, p, size[0])
        stored.unlink()
        return p

    return _cached("mirrored", "mp4", params, build)


# --- 7. a cut moov-first mp4 -----------------------------------------------------------------------------------


def faststart_copy(src: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """``src``'s video packets remuxed into an mp4 with the index (moov) before the data, as streaming-ready
    phone and web exports are; cutting such a file leaves a readable index that lists the missing frames."""
    with av.open(str(src)) as inp:
        st = inp.streams.video[0]
        packets = [p for p in inp.demux(st) if p.size]
        with av.open(str(out_path), "w", format="mp4", options={"movflags": "faststart"}) as out:
            so = out.add_stream_from_template(st)
            for p in packets:
                p.stream = so
                out.mux(p)
    return Path(out_path)


def cut_faststart_video(*, seconds: float = 2.0, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of the bytes of a moov-first mp4 of the moving 320×240 face scene."""
    src = face_video(seconds=seconds, size=(320, 240))
    params = {"v": FAULTS_VERSION, "seconds": seconds, "fraction": fraction}

    def build(p: Path) -> Path:
        whole = p.with_name(p.name + ".whole.mp4")
        faststart_copy(src, whole)
        make_truncated_copy(whole, p, fraction)
        whole.unlink()
        return p

    return _cached("cutfast", "mp4", params, build)
