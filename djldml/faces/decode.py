"""Decoding: open an upload safely, learn its shape cheaply, then stream its frames in presentation order.

Everything a phone or webcam produces goes through FFmpeg (PyAV): mp4/mov/webm/mkv/avi with H.264, HEVC,
VP8/9, AV1, MJPEG. What makes it safe for uploads:

- only video container demuxers and the ``file`` protocol are allowed, so a playlist or concat file cannot make
  FFmpeg read other files; probing reads at most ``probe_bytes``;
- a demux-only pass (no decoding, ≈100× faster) counts the frames and measures the duration first, so a video
  that is too long or too short is refused before any decoding, and the sampled mode can plan clips evenly;
- the frame size is checked from the header and again on every decoded frame (it can change mid-stream);
- one wall-clock deadline covers the whole video.

The demux pass also records every frame's timestamp and where the keyframes are (:class:`FrameTable`). With it,
a caller that needs only some frames (the service's sampled clips) tells the decoder which frame it needs next
(:class:`SkipPlan`), and whole GOPs before that frame's keyframe are demuxed but never decoded: decoding is the
floor of the pipeline's cost, and phone recordings commonly have a keyframe every second or two. Frames are
then numbered by their timestamp's rank in the table, so indices stay exact across skips.

Frames are not converted while decoding: :class:`DecodedFrame` holds FFmpeg's frame, and the pipeline converts
(:class:`FrameConverter`) only the frames it needs: a small BGR copy for the detector, RGB of the face's region
for alignment.
Rotation metadata is not applied to pixels; :func:`stored_to_display` gives the affine map that the pipeline
folds into the alignment warp.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ..errors import NotAVideo, VideoTooLarge, VideoTooLong, VideoTooShort
from .config import FaceConfig

log = logging.getLogger(__name__)

# Demuxers we accept (FFmpeg names; "mov" covers mp4/m4v/3gp). Images, playlists, concat lists are refused.
DEMUXERS = "mov,matroska,avi,mpegts"
MAX_DECODE_ERRORS = 50  # corrupt packets tolerated before the file is declared undecodable


class Deadline:
    """Wall-clock budget for one video; ``check`` raises NotAVideo once it has passed."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise NotAVideo(f"processing took longer than {self.seconds:.0f} s", reason="deadline")


@dataclass(frozen=True, eq=False)
class FrameTable:
    """Every frame's presentation timestamp (sorted: index i ↔ ``pts[i]``) and the keyframes' timestamps, in
    stream time-base units. Built by :func:`probe` only when every packet has a distinct timestamp."""

    pts: np.ndarray  # int64 [n_frames], ascending
    key_pts: np.ndarray  # int64 [n_keyframes], ascending
    time_base: float

    def index_of(self, pts: int | None) -> int | None:
        """The frame index of a decoded frame's timestamp, or None when it is not in the table."""
        if pts is None:
            return None
        i = int(np.searchsorted(self.pts, pts))
        return i if i < len(self.pts) and self.pts[i] == pts else None

    def next_keyframe(self, index: int) -> int | None:
        """Index of the first keyframe at or after frame ``index``, or None."""
        if not 0 <= index < len(self.pts):
            return None
        k = int(np.searchsorted(self.key_pts, self.pts[index]))
        return self.index_of(int(self.key_pts[k])) if k < len(self.key_pts) else None

    def keyframe_for(self, index: int) -> int | None:
        """Timestamp of the last keyframe at or before frame ``index``: decoding from it yields that frame
        intact (for an open GOP too: frames shown after a keyframe never reference frames before it)."""
        index = min(max(index, 0), len(self.pts) - 1)
        k = int(np.searchsorted(self.key_pts, self.pts[index], side="right")) - 1
        return int(self.key_pts[k]) if k >= 0 else None


def _frame_table(pts: list[int | None], keys: list[int], time_base: float) -> FrameTable | None:
    if not pts or not keys or not time_base or any(t is None for t in pts):
        return None
    table = np.sort(np.asarray(pts, dtype=np.int64))
    if np.any(np.diff(table) == 0):
        return None  # duplicate timestamps: frames cannot be told apart by them
    return FrameTable(pts=table, key_pts=np.unique(np.asarray(keys, dtype=np.int64)), time_base=time_base)


class SkipPlan:
    """What a consumer of :func:`decode_frames` needs next: frames before ``next_needed`` may be left undecoded.

    The consumer raises ``next_needed`` as it goes; the decoder reads it before each packet. Frames before it
    may still arrive (those of the GOP being decoded): the consumer ignores them as it would anyway.
    """

    def __init__(self) -> None:
        self.next_needed = 0
        self.gops_skipped = 0
        self.packets_skipped = 0


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int  # video packets counted by the demux pass (= frames, for any sane file)
    duration_s: float  # first to last presentation time, plus one frame
    fps: float  # n_frames / duration (the average rate; variable-rate videos have no single rate)
    stored_width: int  # as encoded
    stored_height: int
    rotation: int  # display rotation, counter-clockwise degrees, one of 0/90/180/270
    codec: str
    container: str
    table: FrameTable | None = field(default=None, repr=False, compare=False)  # None: timestamps unusable

    @property
    def width(self) -> int:  # as displayed
        return self.stored_height if self.rotation in (90, 270) else self.stored_width

    @property
    def height(self) -> int:
        return self.stored_width if self.rotation in (90, 270) else self.stored_height


@dataclass
class DecodedFrame:
    index: int  # 0-based, in presentation order
    time: float  # seconds since the first frame
    frame: av.VideoFrame  # not converted: the pipeline converts only what it needs


def _open(path: str | Path, config: FaceConfig) -> av.container.InputContainer:
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise NotAVideo("empty file", reason="empty")
    except OSError:
        raise NotAVideo("file not found or unreadable", reason="unreadable") from None
    options = {
        "format_whitelist": DEMUXERS,
        "protocol_whitelist": "file",
        "probesize": str(config.probe_bytes),
        "analyzeduration": str(config.probe_bytes),
    }
    try:
        return av.open(str(path), mode="r", options=options, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise NotAVideo("not a video container we can read", reason="unrecognised", ffmpeg=type(exc).__name__) from None


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    streams = [s for s in container.streams.video if s.codec_context is not None]
    if not streams:
        raise NotAVideo("the file has no video stream", reason="no_video_stream")
    # Cover art is a one-picture "video" stream in mp4/mkv; prefer a real one.
    real = [s for s in streams if not (s.disposition & av.stream.Disposition.attached_pic)]
    return (real or streams)[0]


def _check_size(width: int, height: int, config: FaceConfig) -> None:
    if width <= 0 or height <= 0:
        raise NotAVideo("the video stream has no frame size", reason="no_frame_size")
    if width * height > config.max_frame_pixels:
        raise VideoTooLarge(
            f"frame size {width}×{height} exceeds {config.max_frame_pixels} pixels", width=width, height=height
        )


def probe(path: str | Path, config: FaceConfig, deadline: Deadline | None = None) -> VideoInfo:
    """Identify the file and count its frames without decoding any; raises the typed errors."""
    deadline = deadline or Deadline(config.max_processing_s)
    with _open(path, config) as container:
        stream = _video_stream(container)
        cc = stream.codec_context
        _check_size(cc.width, cc.height, config)
        if container.duration is not None and container.duration / 1e6 > config.max_duration_s * 1.05:
            raise VideoTooLong(f"longer than {config.max_duration_s:.0f} s", duration_s=container.duration / 1e6)
        max_packets = int(config.max_duration_s * config.max_fps) + 1
        tb = float(stream.time_base) if stream.time_base else 0.0
        n, t_min, t_max = 0, None, None
        all_pts: list[int | None] = []  # for the frame table: ≈30 bytes a frame, 1.6 MB for 30 min at 30 fps
        key_pts: list[int] = []
        try:
            for i, packet in enumerate(container.demux(stream)):
                if i % 256 == 0:
                    deadline.check()
                if packet.size == 0:  # the demuxer's end-of-stream flush packet
                    continue
                n += 1
                if n > max_packets:
                    raise VideoTooLong(f"more than {max_packets} frames", frames=n)
                all_pts.append(packet.pts)
                if packet.is_keyframe and packet.pts is not None:
                    key_pts.append(packet.pts)
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is not None:
                    t = ts * tb
                    t_min = t if t_min is None or t < t_min else t_min
                    t_max = t if t_max is None or t > t_max else t_max
        except av.error.FFmpegError:
            pass  # a truncated file: keep what was readable; decoding will tell how much of it is usable
        rate = float(stream.average_rate or stream.guessed_rate or 0) or 30.0
        if t_min is not None and t_max is not None and n > 1 and t_max > t_min:
            duration = (t_max - t_min) * n / (n - 1)  # last frame lasts one average interval
        else:
            duration = n / rate
        info = VideoInfo(
            n_frames=n,
            duration_s=float(duration),
            fps=float(n / duration) if duration > 0 else rate,
            stored_width=cc.width,
            stored_height=cc.height,
            rotation=0,  # set below from the first frame
            codec=cc.name,
            container=container.format.name.split(",")[0],
            table=_frame_table(all_pts, key_pts, tb),
        )
    if n == 0:
        raise NotAVideo("the video stream has no frames", reason="no_frames")
    if info.duration_s > config.max_duration_s:
        raise VideoTooLong(f"longer than {config.max_duration_s:.0f} s", duration_s=round(info.duration_s, 2))
    if info.duration_s < config.min_duration_s or n < config.clip_span:
        raise VideoTooShort(
            f"{n} frames / {info.duration_s:.2f} s: need {config.clip_span} frames and {config.min_duration_s} s",
            frames=n,
            duration_s=round(info.duration_s, 3),
        )
    return replace(info, rotation=_first_frame_rotation(path, config, deadline))


def _first_frame_rotation(path: str | Path, config: FaceConfig, deadline: Deadline) -> int:
    """Decode the first frame only: proves the stream decodes at all, and gives its display rotation (PyAV puts
    the display matrix on frames, not on streams)."""
    frames = decode_frames(path, config, deadline)
    try:
        first = next(frames)
    finally:
        frames.close()  # closes the container now, not at garbage collection
    return normalise_rotation(getattr(first.frame, "rotation", 0))


def normalise_rotation(angle: float | None) -> int:
    if angle is None or not np.isfinite(angle):
        return 0
    return int(round(angle / 90.0)) % 4 * 90


def decode_frames(
    path: str | Path,
    config: FaceConfig,
    deadline: Deadline,
    table: FrameTable | None = None,
    skip: SkipPlan | None = None,
) -> Iterator[DecodedFrame]:
    """Stream the video's frames in presentation order, memory independent of the video's length.

    Corrupt packets are skipped (up to MAX_DECODE_ERRORS); a frame larger than the limit raises VideoTooLarge.

    With ``table`` (from :func:`probe`) and ``skip``: frames are numbered by their timestamp in the table, and
    when the frame ``skip.next_needed`` lies in a later GOP than the one being decoded, the packets up to that
    GOP's keyframe are not decoded. Should a decoded frame's timestamp be missing from the table before any
    skip was made, numbering falls back to counting and skipping is off for the rest of the video.
    """
    use_table = table is not None and skip is not None
    with _open(path, config) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"  # frame + slice threads: decoding is the floor of our throughput
        # FFmpeg itself refuses to allocate a larger frame, should the size grow mid-stream (a crafted SPS).
        stream.codec_context.options = {"max_pixels": str(config.max_frame_pixels)}
        if config.decode_threads:
            stream.codec_context.thread_count = config.decode_threads
        index, count, errors = 0, 0, 0
        t0 = float(table.pts[0]) * table.time_base if use_table else None
        current_key: int | None = None  # timestamp of the keyframe that began the GOP being decoded
        skipping_to: int | None = None  # timestamp of the keyframe being skipped to
        floor: int | None = None  # timestamp of the last keyframe skipped to: nothing earlier is wanted
        demux = container.demux(stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.FFmpegError:
                break  # truncated container: stop at the last readable packet
            deadline.check()
            if use_table and packet.size:
                if skipping_to is None:
                    target = table.keyframe_for(skip.next_needed)
                    if target is not None and current_key is not None and target > current_key:
                        skipping_to = target  # the next frame needed is in a later GOP
                if packet.is_keyframe and packet.pts is not None:
                    if skipping_to is not None and packet.pts >= skipping_to:
                        # Frames still inside the decoder come before the needed one: drop them with its state.
                        stream.codec_context.flush_buffers()
                        skip.gops_skipped += 1
                        floor, skipping_to = packet.pts, None
                    if skipping_to is None:
                        current_key = packet.pts
                if skipping_to is not None:
                    skip.packets_skipped += 1
                    continue
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                errors += 1
                if errors > MAX_DECODE_ERRORS:
                    raise NotAVideo("too many corrupt packets", reason="corrupt", frames_decoded=count) from None
                continue
            for frame in frames:
                _check_size(frame.width, frame.height, config)
                if use_table:
                    found = table.index_of(frame.pts)
                    if floor is not None and (found is None or frame.pts < floor):
                        # After a skip: a frame that cannot be placed in time, or an open GOP's leading frame
                        # whose references were never decoded. Neither is wanted.
                        continue
                    if found is None:
                        use_table = False  # timestamps do not match the table: count frames as without one
                    else:
                        index = found
                        t = (frame.pts - int(table.pts[0])) * table.time_base
                        count += 1
                        yield DecodedFrame(index=index, time=max(0.0, float(t)), frame=frame)
                        index += 1
                        continue
                t = frame.time
                if t is None:
                    t = index / 30.0 if t0 is None else t0 + index / 30.0
                if t0 is None:
                    t0 = t
                count += 1
                yield DecodedFrame(index=index, time=max(0.0, float(t - t0)), frame=frame)
                index += 1
        if count == 0:
            raise NotAVideo("no frame could be decoded", reason="undecodable")


def stored_to_display(rotation: int, width: int, height: int) -> np.ndarray:
    """3×3 affine map from stored pixel coordinates (frame ``width``×``height``) to displayed ones, where the
    displayed image is ``np.rot90(stored, rotation // 90)`` (FFmpeg's rotation is counter-clockwise)."""
    w1, h1 = width - 1, height - 1
    k = (rotation // 90) % 4
    m = {
        0: [[1, 0, 0], [0, 1, 0]],
        1: [[0, 1, 0], [-1, 0, w1]],
        2: [[-1, 0, w1], [0, -1, h1]],
        3: [[0, -1, h1], [1, 0, 0]],
    }[k]
    return np.vstack([np.array(m, dtype=np.float64), [0.0, 0.0, 1.0]])


class FrameConverter:
    """Converts decoded frames for the detector and for alignment, reusing FFmpeg's scaler contexts.

    A fresh swscale context per call (what ``VideoFrame.to_ndarray(format=...)`` does) cost 3× more than the
    conversion itself at 640×480 (measured 0.51 vs 0.16 ms); one reformatter per use keeps its context cached.
    """

    def __init__(self, rotation: int, detect_width: int):
        self.k = (rotation // 90) % 4
        self.detect_width = detect_width
        self._small = VideoReformatter()
        self._full = VideoReformatter()
        self._region = VideoReformatter()

    def small_bgr(self, frame: av.VideoFrame) -> tuple[np.ndarray, float, float]:
        """The detector's input: an upright BGR copy, and the factors (sx, sy) that map its pixel coordinates to
        full-resolution displayed ones.

        Its short side is ``detect_width * 3 / 4`` (a 4:3 frame becomes ``detect_width`` wide): faces keep the
        same size in pixels whatever the aspect ratio or orientation, and the detector's landmark precision
        depends on that size. Never upscaled.
        """
        scale = min(1.0, 0.75 * self.detect_width / min(frame.width, frame.height))
        sw = max(2, int(round(frame.width * scale)))
        sh = max(2, int(round(frame.height * scale)))
        # swscale resizes and converts in one pass: far cheaper than converting the full frame first.
        small = self._small.reformat(frame, width=sw, height=sh, format="bgr24", interpolation="AREA", threads=1)
        img = small.to_ndarray()
        if self.k:
            img = np.rot90(img, self.k)
        img = np.ascontiguousarray(img)
        h, w = img.shape[:2]
        full_w, full_h = (frame.height, frame.width) if self.k % 2 else (frame.width, frame.height)
        return img, full_w / w, full_h / h

    def rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """The whole stored frame as RGB (not rotated: the alignment warp applies the rotation)."""
        return self._full.reformat(frame, format="rgb24", threads=1).to_ndarray()

    def rgb_region(self, frame: av.VideoFrame, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """RGB of the stored frame's pixels [y0:y1, x0:x1], identical to ``rgb(frame)[y0:y1, x0:x1]``.

        An aligned face needs only the pixels around the face: for 8-bit 4:2:0 frames (what H.264, VP8/9, AV1
        and most MJPEG decode to) only that region is converted, by the same swscale routine on a copy of the
        region's planes (for a face 30 % of the frame high: 0.07 instead of 0.19 ms at 640×480, 0.10 instead of
        0.82 ms at 1080p; measured). Other pixel formats (10-bit HEVC, 4:2:2) and odd-aligned regions convert
        the whole frame.
        """
        w, h = x1 - x0, y1 - y0
        if frame.format.name not in YUV420 or (x0 | y0 | w | h) & 1 or w < MIN_REGION or h < MIN_REGION:
            return self.rgb(frame)[y0:y1, x0:x1]  # (swscale refuses slivers a few pixels wide)
        # The packed I420 buffer holds each chroma plane as h/4 rows of w: h must be a multiple of 4.
        top = y0
        if h % 4:
            if y1 + 2 <= frame.height:
                h += 2
            elif y0 >= 2:
                top, h = y0 - 2, h + 2
            else:
                return self.rgb(frame)[y0:y1, x0:x1]
        buf = np.empty((h * 3 // 2, w), np.uint8)  # I420: Y [h, w], then U and V [h/2, w/2], contiguous
        buf[:h] = _plane(frame, 0)[top : top + h, x0:x1]
        chroma = buf[h:].reshape(2, h // 2, w // 2)
        chroma[0] = _plane(frame, 1)[top // 2 : (top + h) // 2, x0 // 2 : x1 // 2]
        chroma[1] = _plane(frame, 2)[top // 2 : (top + h) // 2, x0 // 2 : x1 // 2]
        region = av.VideoFrame.from_numpy_buffer(buf, format=frame.format.name)
        out = self._region.reformat(region, format="rgb24", src_colorspace=frame.colorspace, threads=1)
        return out.to_ndarray()[y0 - top : y1 - top]


YUV420 = ("yuv420p", "yuvj420p")  # 8-bit planar 4:2:0, full or limited range
MIN_REGION = 16


def _plane(frame: av.VideoFrame, i: int) -> np.ndarray:
    """Plane ``i`` of ``frame`` as a [height, width] uint8 view (no copy; rows padded to line_size)."""
    plane = frame.planes[i]
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
