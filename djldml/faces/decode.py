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

Capture faults are handled here, each as a whole kind (docs/faces.md, "Capture faults"): the stream to read
(:func:`_choose_stream`), the display matrix's mirror (:func:`display_orientation`), the colour range and
interlacing (:class:`FrameConverter`), the header's duration as a hint only (:func:`probe`), frames after a
corrupt packet (:class:`DecodeErrors`), a file cut short (:attr:`VideoInfo.truncated`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import ColorRange, VideoReformatter

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


class DecodeErrors:
    """What :func:`decode_frames` met of damage, filled in as it goes (pass one in to read it afterwards).

    A packet that fails to decode leaves the decoder's reference pictures damaged: every frame predicted from
    them, until the next keyframe, shows smeared blocks. Those frames are dropped (not yielded; their indices
    are skipped) and counted in ``frames_dropped``; a keyframe restarts use.
    """

    def __init__(self) -> None:
        self.packets = 0  # packets the decoder refused
        self.frames_dropped = 0  # decoded frames dropped because they followed a refused packet in their GOP


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
    stream_index: int = 0  # the video stream used (index among all the file's streams)
    stream_chosen_by: str = "only"  # "only" (one candidate), "default" (disposition), "largest", "first"
    hflip: bool = False  # the display matrix mirrors the picture (after ``rotation``): see stored_to_display
    color_range: str = "tv"  # "pc": full range (yuvj*, or color_range=JPEG), converted as such
    interlaced: bool = False  # the first frame is interlaced (deinterlaced when converted)
    frames_declared: int = 0  # frame count from the mp4/mov index (its sample table); 0 for other containers
    header_duration_s: float | None = None  # the container header's claim: a hint, never trusted for limits
    demux_error: bool = False  # the demuxer stopped on an error before the end of the file

    @property
    def truncated(self) -> dict | None:
        """What is known of a file that ends before its declared content, or None. The evidence, strongest
        first (``by``): "index", the mp4/mov index lists more frames than there are packets (a moov-first
        mp4 cut after its index); "demux_error", the demuxer stopped on an error; "header_duration", the header
        declares a duration longer than the packets' by more than max(0.3 s, 3 %) — a cut Matroska or WebM
        file, or a header that lies (a file cannot tell which; the frames read are what is scored either way).
        ``frames_expected`` is the index's count, else the declared duration × the average frame rate."""
        declared, read = self.header_duration_s, self.duration_s
        expected: int | None
        long_header = declared is not None and declared > read + max(0.3, 0.03 * read)
        if self.frames_declared > self.n_frames:
            by, expected = "index", self.frames_declared
        elif self.demux_error or long_header:
            by = "demux_error" if self.demux_error else "header_duration"
            expected = int(round(declared * self.fps)) if long_header and declared is not None else None
        else:
            return None
        out = {"frames_expected": expected, "frames_read": self.n_frames, "by": by, "duration_read_s": round(read, 3)}
        if declared is not None:
            out["duration_declared_s"] = round(declared, 3)
        return out

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
    return _choose_stream(container)[0]


def _choose_stream(container: av.container.InputContainer) -> tuple[av.video.stream.VideoStream, str]:
    """The video stream to use and why: probe and decode call this, so they always agree.

    Cover art (attached pictures) is ignored. Among the rest: the stream the file marks ``default`` (what a
    player shows; several: the largest of them), else the largest (width × height; a phone's face track beats a
    thumbnail or depth track), else the first. The reason is "only" when there was a single candidate.
    """
    streams = [s for s in container.streams.video if s.codec_context is not None]
    if not streams:
        raise NotAVideo("the file has no video stream", reason="no_video_stream")
    real = [s for s in streams if not (s.disposition & av.stream.Disposition.attached_pic)] or streams
    if len(real) == 1:
        return real[0], "only"

    def area(s: av.video.stream.VideoStream) -> int:
        return int(s.codec_context.width or 0) * int(s.codec_context.height or 0)

    default = [s for s in real if s.disposition & av.stream.Disposition.default]
    if default:
        return max(default, key=area), "default"  # max keeps the first of equals
    best = max(real, key=area)
    return best, ("largest" if area(best) > area(real[0]) else "first")


def _check_size(width: int, height: int, config: FaceConfig) -> None:
    if width <= 0 or height <= 0:
        raise NotAVideo("the video stream has no frame size", reason="no_frame_size")
    if width * height > config.max_frame_pixels:
        raise VideoTooLarge(
            f"frame size {width}×{height} exceeds {config.max_frame_pixels} pixels", width=width, height=height
        )


def probe(path: str | Path, config: FaceConfig, deadline: Deadline | None = None) -> VideoInfo:
    """Identify the file and count its frames without decoding any; raises the typed errors.

    Durations and frame counts come from the packets: the header's duration is only recorded
    (``header_duration_s``), since writers get it wrong (a 6 s Matroska file can claim 9 hours); the
    ``max_packets`` guard bounds the pass however long the file really is.
    """
    deadline = deadline or Deadline(config.max_processing_s)
    with _open(path, config) as container:
        stream, chosen_by = _choose_stream(container)
        cc = stream.codec_context
        _check_size(cc.width, cc.height, config)
        tb = float(stream.time_base) if stream.time_base else 0.0
        scan = _scan_packets(container, stream, tb, int(config.max_duration_s * config.max_fps) + 1, deadline)
        rate = float(stream.average_rate or stream.guessed_rate or 0) or 30.0  # the header's, for the fallbacks
        duration = scan.duration_s(rate)
        info = VideoInfo(
            n_frames=scan.n,
            duration_s=duration,
            fps=float(scan.n / duration) if duration > 0 else rate,
            stored_width=cc.width,
            stored_height=cc.height,
            rotation=0,  # set below from the first frame
            codec=cc.name,
            container=container.format.name.split(",")[0],
            table=_frame_table(scan.all_pts, scan.key_pts, tb),
            stream_index=stream.index,
            stream_chosen_by=chosen_by,
            # mp4/mov count samples in their index (stts); other containers' counts are not frame counts (AVI's is
            # its length in stream ticks).
            frames_declared=max(0, int(stream.frames or 0)) if container.format.name.startswith("mov") else 0,
            header_duration_s=_header_duration(container, stream),
            demux_error=scan.demux_error,
        )
    _check_length(info, config)
    return _first_frame_facts(path, config, deadline, info)


def _header_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """The header's claimed duration (s): the video stream's own when there is one (audio may run longer)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1e6 if container.duration is not None and container.duration > 0 else None


@dataclass
class _PacketScan:
    """What the demux pass of :func:`probe` found: packet count, time span and timestamps (no decoding)."""

    n: int = 0
    t_min: float | None = None
    t_max: float | None = None
    all_pts: list[int | None] = field(default_factory=list)  # ≈30 bytes a frame, 1.6 MB for 30 min at 30 fps
    key_pts: list[int] = field(default_factory=list)
    demux_error: bool = False  # a truncated file: what was readable is kept; decoding tells how much is usable

    def add(self, packet: av.Packet, time_base: float) -> None:
        self.n += 1
        self.all_pts.append(packet.pts)
        if packet.is_keyframe and packet.pts is not None:
            self.key_pts.append(packet.pts)
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is not None:
            t = ts * time_base
            self.t_min = t if self.t_min is None or t < self.t_min else self.t_min
            self.t_max = t if self.t_max is None or t > self.t_max else self.t_max

    def duration_s(self, rate: float) -> float:
        """First to last timestamp plus one average interval (the last frame lasts one); n / rate without them."""
        if self.t_min is not None and self.t_max is not None and self.n > 1 and self.t_max > self.t_min:
            return float((self.t_max - self.t_min) * self.n / (self.n - 1))
        return float(self.n / rate)


def _scan_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream, time_base: float,
                  max_packets: int, deadline: Deadline) -> _PacketScan:
    """Count the stream's packets and collect their timestamps; VideoTooLong past ``max_packets``."""
    scan = _PacketScan()
    try:
        for i, packet in enumerate(container.demux(stream)):
            if i % 256 == 0:
                deadline.check()
            if packet.size == 0:  # the demuxer's end-of-stream flush packet
                continue
            if scan.n + 1 > max_packets:
                raise VideoTooLong(f"more than {max_packets} frames", frames=scan.n + 1)
            scan.add(packet, time_base)
    except av.error.FFmpegError:
        scan.demux_error = True
    return scan


def _check_length(info: VideoInfo, config: FaceConfig) -> None:
    """The typed errors for a video without frames, too long, or too short for one clip."""
    n = info.n_frames
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


def _first_frame_facts(path: str | Path, config: FaceConfig, deadline: Deadline, info: VideoInfo) -> VideoInfo:
    """Decode the first frame only: proves the stream decodes at all, and gives what PyAV puts on frames, not
    on streams: the display matrix (rotation, mirror), the colour range, interlacing."""
    frames = decode_frames(path, config, deadline)
    try:
        first = next(frames).frame
    finally:
        frames.close()  # closes the container now, not at garbage collection
    rotation, hflip = display_orientation(first)
    return replace(
        info,
        rotation=rotation,
        hflip=hflip,
        color_range="pc" if is_full_range(first) else "tv",
        interlaced=bool(first.interlaced_frame),
    )


def is_full_range(frame: av.VideoFrame) -> bool:
    """True for full-range ("pc", JPEG) YUV: a yuvj* pixel format, or the frame's colour range says so."""
    return frame.format.name.startswith("yuvj") or int(frame.color_range) == int(ColorRange.JPEG)


def display_orientation(frame: av.VideoFrame) -> tuple[int, bool]:
    """(rotation, hflip) of a decoded frame from its display matrix: the displayed picture is
    ``np.fliplr(np.rot90(stored, rotation // 90))`` when ``hflip`` else ``np.rot90(stored, rotation // 90)``.

    ``frame.rotation`` alone reads a mirror as a 180° turn (FFmpeg's ``av_display_rotation_get`` ignores the
    sign of the determinant), which turns a mirrored face upside down. FFmpeg's matrix maps source (x, y) to
    (a·x + c·y + tx, b·x + d·y + ty); a negative determinant ad − bc is a mirror, and negating the first column
    (``av_display_matrix_flip``) leaves the rotation that precedes the horizontal flip. Without a display matrix:
    ``frame.rotation`` (PyAV's own reading), no flip.
    """
    matrix = None
    try:
        # PyAV's stubs do not declare av.sidedata nor side data as a buffer; both exist at run time (av 14-19).
        sd = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)  # type: ignore[attr-defined]
        if sd is not None:
            raw = bytes(sd)  # type: ignore[call-overload]
            matrix = np.frombuffer(raw[:36], "<i4").astype(np.float64) if len(raw) >= 36 else None
    except (AttributeError, TypeError, ValueError):  # an older PyAV without frame side data
        matrix = None
    if matrix is None:
        return normalise_rotation(getattr(frame, "rotation", 0)), False
    a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
    hflip = a * d - b * c < 0
    if hflip:
        a, c = -a, -c
    sx, sy = np.hypot(a, c), np.hypot(b, d)
    if sx == 0 or sy == 0:
        return 0, False
    return normalise_rotation(-np.degrees(np.arctan2(b / sy, a / sx))), bool(hflip)


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
    errors: DecodeErrors | None = None,
) -> Generator[DecodedFrame, None, None]:
    """Stream the video's frames in presentation order, memory independent of the video's length.

    Corrupt packets are skipped (up to MAX_DECODE_ERRORS); a frame larger than the limit raises VideoTooLarge.
    After a corrupt packet, frames are dropped until the next keyframe (they are predicted from a damaged
    picture); ``errors`` (:class:`DecodeErrors`), when given, counts both. Indices of dropped frames are skipped.

    With ``table`` (from :func:`probe`) frames are numbered by their timestamp in the table, so a frame lost to
    a corrupt packet leaves its index unused (counting would shift every later index); with ``skip`` too, when
    the frame ``skip.next_needed`` lies in a later GOP than the one being decoded, the packets up to that GOP's
    keyframe are not decoded. Should a decoded frame's timestamp be missing from the table before any skip was
    made, numbering falls back to counting and skipping is off for the rest of the video.
    """
    with _open(path, config) as container:
        stream = _decoding_stream(container, config)
        numbering = _Numbering(table)
        damage = _Damage(errors if errors is not None else DecodeErrors())
        skipper = _GopSkipper(table, skip) if table is not None and skip is not None else None
        for packet in _packets(container, stream):
            deadline.check()
            if skipper is not None and numbering.by_table and skipper.skips(packet, stream, numbering, damage):
                continue
            for frame in damage.decode(packet, numbering.count):
                _check_size(frame.width, frame.height, config)
                if not damage.usable(frame):
                    numbering.drop()
                    continue
                decoded = numbering.place(frame)
                if decoded is not None:
                    yield decoded
        if numbering.count == 0:
            raise NotAVideo("no frame could be decoded", reason="undecodable")


def _decoding_stream(container: av.container.InputContainer, config: FaceConfig) -> av.video.stream.VideoStream:
    """The video stream to decode, with its decoder's threads and frame-size limit set."""
    stream = _video_stream(container)
    stream.thread_type = "AUTO"  # frame + slice threads: decoding is the floor of our throughput
    # FFmpeg itself refuses to allocate a larger frame, should the size grow mid-stream (a crafted SPS).
    stream.codec_context.options = {"max_pixels": str(config.max_frame_pixels)}
    if config.decode_threads:
        stream.codec_context.thread_count = config.decode_threads
    return stream


def _packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Iterator[av.Packet]:
    """The stream's packets in file order; a truncated container ends at its last readable packet."""
    demux = container.demux(stream)
    while True:
        try:
            packet = next(demux)
        except (StopIteration, av.error.FFmpegError):
            return
        yield packet


class _Damage:
    """Corrupt packets and the frames they spoil (see :class:`DecodeErrors`), for one decoding pass."""

    def __init__(self, errors: DecodeErrors):
        self.errors = errors
        self.damaged = False  # a packet of the current GOP failed: frames until the next keyframe are unusable
        self.refused = 0  # packets refused in this pass (``errors`` may carry counts of earlier passes)

    def decode(self, packet: av.Packet, frames_decoded: int) -> list[av.VideoFrame]:
        """The packet's frames; none for a corrupt packet (NotAVideo after MAX_DECODE_ERRORS of them)."""
        try:
            return packet.decode()
        except av.error.FFmpegError:
            self.refused += 1
            self.errors.packets += 1
            self.damaged = True
            if self.refused > MAX_DECODE_ERRORS:
                raise NotAVideo("too many corrupt packets", reason="corrupt", frames_decoded=frames_decoded) from None
            return []

    def usable(self, frame: av.VideoFrame) -> bool:
        """False for a frame predicted from damaged references (counted as dropped); a keyframe ends the damage.

        With frame threads the error surfaces a few packets late, so a frame or two decoded before the bad packet
        may be dropped too: losing them is cheaper than a smeared face.
        """
        if not self.damaged:
            return True
        if not frame.key_frame:
            self.errors.frames_dropped += 1
            return False
        self.damaged = False
        return True


class _Numbering:
    """Index and time of each decoded frame: by its timestamp in the probe's table when there is one (a frame lost
    to a corrupt packet leaves its index unused; counting would shift every later index), else by counting. A
    timestamp missing from the table, before any skip, switches to counting for the rest of the video."""

    def __init__(self, table: FrameTable | None):
        self.table = table
        self.by_table = table is not None
        self.floor: int | None = None  # timestamp of the last keyframe skipped to: nothing earlier is wanted
        self.index = 0  # of the next frame
        self.count = 0  # frames numbered so far
        self.t0 = float(table.pts[0]) * table.time_base if table is not None else None

    def drop(self) -> None:
        """A decoded frame was dropped: when counting, its index is used up all the same."""
        if not self.by_table:
            self.index += 1

    def place(self, frame: av.VideoFrame) -> DecodedFrame | None:
        """The frame with its index and time, or None for a frame not wanted after a skip."""
        if self.by_table and self.table is not None:
            found = self.table.index_of(frame.pts)
            if self.floor is not None and (found is None or frame.pts is None or frame.pts < self.floor):
                # After a skip: a frame that cannot be placed in time, or an open GOP's leading frame whose
                # references were never decoded. Neither is wanted.
                return None
            if found is None or frame.pts is None:
                self.by_table = False  # timestamps do not match the table: count frames as without one
            else:
                self.index = found
                return self._numbered(frame, float((frame.pts - int(self.table.pts[0])) * self.table.time_base))
        t = frame.time
        if t is None:
            t = self.index / 30.0 if self.t0 is None else self.t0 + self.index / 30.0
        if self.t0 is None:
            self.t0 = t
        return self._numbered(frame, float(t - self.t0))

    def _numbered(self, frame: av.VideoFrame, t: float) -> DecodedFrame:
        self.count += 1
        self.index += 1
        return DecodedFrame(index=self.index - 1, time=max(0.0, t), frame=frame)


class _GopSkipper:
    """Leaves the packets of whole GOPs undecoded while the frame the consumer needs next (``plan.next_needed``)
    lies in a later GOP than the one being decoded: decoding resumes at that GOP's keyframe."""

    def __init__(self, table: FrameTable, plan: SkipPlan):
        self.table, self.plan = table, plan
        self.current_key: int | None = None  # timestamp of the keyframe that began the GOP being decoded
        self.skipping_to: int | None = None  # timestamp of the keyframe being skipped to

    def skips(self, packet: av.Packet, stream: av.video.stream.VideoStream, numbering: _Numbering,
              damage: _Damage) -> bool:
        """Whether to leave ``packet`` undecoded; at the keyframe skipped to, the decoder is flushed."""
        if not packet.size:
            return False
        if self.skipping_to is None:
            target = self.table.keyframe_for(self.plan.next_needed)
            if target is not None and self.current_key is not None and target > self.current_key:
                self.skipping_to = target  # the next frame needed is in a later GOP
        if packet.is_keyframe and packet.pts is not None:
            if self.skipping_to is not None and packet.pts >= self.skipping_to:
                # Frames still inside the decoder come before the needed one: drop them with its state.
                stream.codec_context.flush_buffers()
                damage.damaged = False  # the damaged references went with the flush
                self.plan.gops_skipped += 1
                numbering.floor, self.skipping_to = packet.pts, None
            if self.skipping_to is None:
                self.current_key = packet.pts
        if self.skipping_to is not None:
            self.plan.packets_skipped += 1
            return True
        return False


def stored_to_display(rotation: int, width: int, height: int, hflip: bool = False) -> np.ndarray:
    """3×3 affine map from stored pixel coordinates (frame ``width``×``height``) to displayed ones, where the
    displayed image is ``np.rot90(stored, rotation // 90)`` (FFmpeg's rotation is counter-clockwise), mirrored
    left-right afterwards when ``hflip`` (``np.fliplr(np.rot90(...))``, see :func:`display_orientation`)."""
    w1, h1 = width - 1, height - 1
    k = (rotation // 90) % 4
    m = {
        0: [[1, 0, 0], [0, 1, 0]],
        1: [[0, 1, 0], [-1, 0, w1]],
        2: [[-1, 0, w1], [0, -1, h1]],
        3: [[0, -1, h1], [1, 0, 0]],
    }[k]
    out = np.vstack([np.array(m, dtype=np.float64), [0.0, 0.0, 1.0]])
    if hflip:
        displayed_w1 = h1 if k % 2 else w1
        out = np.array([[-1.0, 0.0, displayed_w1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ out
    return out


class FrameConverter:
    """Converts decoded frames for the detector and for alignment, reusing FFmpeg's scaler contexts.

    A fresh swscale context per call (what ``VideoFrame.to_ndarray(format=...)`` does) cost 3× more than the
    conversion itself at 640×480 (measured 0.51 vs 0.16 ms); one reformatter per use keeps its context cached.

    Every conversion honours each frame's own colour range (full-range "pc"/JPEG video would otherwise be
    stretched and clipped as if limited) and deinterlaces interlaced frames (``frame.interlaced_frame``) by
    keeping the top field and interpolating the other lines: stateless, so it works on any frame the GOP
    skipping leaves, and it costs nothing for progressive video. ``deinterlaced`` counts the frames so treated.
    """

    def __init__(self, rotation: int, detect_width: int, hflip: bool = False):
        self.k = (rotation // 90) % 4
        self.hflip = hflip
        self.detect_width = detect_width
        self.deinterlaced = 0  # conversions of interlaced frames (detector copies and face regions)
        self._small = VideoReformatter()
        self._full = VideoReformatter()
        self._region = VideoReformatter()

    def small_bgr(self, frame: av.VideoFrame) -> tuple[np.ndarray, float, float]:
        """The detector's input: an upright (and, with ``hflip``, unmirrored) BGR copy, uint8 [h, w, 3], and the
        factors (sx, sy) that map its pixel coordinates to full-resolution displayed ones.

        Its short side is ``detect_width * 3 / 4`` (a 4:3 frame becomes ``detect_width`` wide): faces keep the
        same size in pixels whatever the aspect ratio or orientation, and the detector's landmark precision
        depends on that size. Never upscaled. An interlaced frame is scaled from its top field alone.
        """
        scale = min(1.0, 0.75 * self.detect_width / min(frame.width, frame.height))
        sw = max(2, int(round(frame.width * scale)))
        sh = max(2, int(round(frame.height * scale)))
        source: av.VideoFrame | None = frame
        if frame.interlaced_frame:
            self.deinterlaced += 1
            source = _top_field(frame)
        if source is not None:
            # swscale resizes and converts in one pass: far cheaper than converting the full frame first.
            small = self._small.reformat(
                source, width=sw, height=sh, format="bgr24", interpolation="AREA", threads=1, **_ranges(frame)
            )
            img: np.ndarray = small.to_ndarray()
        else:  # an interlaced frame in a format whose field cannot be cut out cheaply
            full = _interpolate_lines(
                self._full.reformat(frame, format="bgr24", threads=1, **_ranges(frame)).to_ndarray(), 0
            )
            img = cv2.resize(full, (sw, sh), interpolation=cv2.INTER_AREA)
        if self.k:
            img = np.rot90(img, self.k)
        if self.hflip:
            img = img[:, ::-1]
        img = np.ascontiguousarray(img)
        h, w = img.shape[:2]
        full_w, full_h = (frame.height, frame.width) if self.k % 2 else (frame.width, frame.height)
        return img, full_w / w, full_h / h

    def rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """The whole stored frame as RGB uint8 [height, width, 3] (not rotated: the alignment warp applies the
        rotation and any mirror); interlaced frames deinterlaced."""
        img = self._full.reformat(frame, format="rgb24", threads=1, **_ranges(frame)).to_ndarray()
        if frame.interlaced_frame:
            self.deinterlaced += 1
            img = _interpolate_lines(img, 0)
        return img

    def rgb_region(self, frame: av.VideoFrame, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """RGB uint8 [y1-y0, x1-x0, 3] of the stored frame's pixels [y0:y1, x0:x1], identical to
        ``rgb(frame)[y0:y1, x0:x1]`` for progressive frames.

        An aligned face needs only the pixels around the face: for 8-bit 4:2:0 frames (what H.264, VP8/9, AV1
        and most MJPEG decode to) only that region is converted, by the same swscale routine on a copy of the
        region's planes (for a face 30 % of the frame high: 0.07 instead of 0.19 ms at 640×480, 0.10 instead of
        0.82 ms at 1080p; measured). The copy carries the frame's colour space and range explicitly (a frame
        rebuilt from planes has neither). Interlaced frames: the other field's lines are interpolated in the
        copied planes (luma and chroma), before the conversion. Other pixel formats (10-bit HEVC, 4:2:2) and
        odd-aligned regions convert the whole frame.
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
        if frame.interlaced_frame:
            self.deinterlaced += 1
            # Field parity is that of the row in the frame: luma row r and chroma row r belong to field r % 2.
            _interpolate_lines(buf[:h], top)
            _interpolate_lines(chroma[0], top // 2)
            _interpolate_lines(chroma[1], top // 2)
        region = av.VideoFrame.from_numpy_buffer(buf, format=frame.format.name)
        out = self._region.reformat(
            region, format="rgb24", src_colorspace=frame.colorspace, threads=1, **_ranges(frame)
        )
        return out.to_ndarray()[y0 - top : y1 - top]


YUV420 = ("yuv420p", "yuvj420p")  # 8-bit planar 4:2:0, full or limited range
MIN_REGION = 16


def _ranges(frame: av.VideoFrame) -> dict:
    """swscale's range arguments for converting ``frame`` to RGB: full range stated explicitly (a frame rebuilt
    from planes, or an older PyAV, would otherwise be taken as limited); limited range is swscale's default."""
    return {"src_color_range": "JPEG", "dst_color_range": "JPEG"} if is_full_range(frame) else {}


def _plane(frame: av.VideoFrame, i: int) -> np.ndarray:
    """Plane ``i`` of ``frame`` as a [height, width] uint8 view (no copy; rows padded to line_size)."""
    plane = frame.planes[i]
    flat = np.frombuffer(plane, np.uint8)  # type: ignore[call-overload]  # a VideoPlane is a buffer; stubs omit it
    return flat.reshape(plane.height, plane.line_size)[:, : plane.width]


def _interpolate_lines(rows: np.ndarray, first: int) -> np.ndarray:
    """In place: every row of the bottom field (odd row number in the frame; ``first`` is the frame row number
    of ``rows[0]``) becomes the mean of its top-field neighbours (the one neighbour at an edge). uint8
    [n, w] or [n, w, c]; returns ``rows``."""
    n = len(rows)
    if n < 2:
        return rows
    s = (first + 1) % 2  # local index of the first bottom-field row
    if s == 0:
        rows[0] = rows[1]
    b = 1 if s else 2  # interior bottom rows b, b+2, … < n-1, each between two top rows
    if b < n - 1:
        rows[b : n - 1 : 2] = cv2.addWeighted(rows[b - 1 : n - 2 : 2], 0.5, rows[b + 1 : n : 2], 0.5, 0.0)
    if (n - 1 - s) % 2 == 0:  # the last row is a bottom-field row: no top row below it
        rows[n - 1] = rows[n - 2]
    return rows


def _top_field(frame: av.VideoFrame) -> av.VideoFrame | None:
    """The top field (even rows) of an 8-bit 4:2:0 frame as a half-height frame, or None for other formats.
    In interlaced 4:2:0 chroma rows alternate fields too: the even chroma rows are the top field's."""
    w, h = frame.width, frame.height
    if frame.format.name not in YUV420 or w % 2 or h % 4:
        return None
    fh = h // 2
    buf = np.empty((fh * 3 // 2, w), np.uint8)
    buf[:fh] = _plane(frame, 0)[0::2]
    chroma = buf[fh:].reshape(2, fh // 2, w // 2)
    chroma[0] = _plane(frame, 1)[0::2]
    chroma[1] = _plane(frame, 2)[0::2]
    field_frame = av.VideoFrame.from_numpy_buffer(buf, format=frame.format.name)
    field_frame.colorspace = frame.colorspace
    return field_frame
