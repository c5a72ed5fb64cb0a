"""The face-clip pipeline: video → decode → resample in time → detect (every k-th frame) → track/interpolate →
align → clips.

One pipeline for the trainer and the service, so that they can never differ by a pixel of alignment. Frames
are first put on the clip timeline (:mod:`djldml.faces.timeline`): resampled by their timestamps to the
model's frame rate, so indices below are timeline frames and a clip spans the same seconds for any camera.
Two ways of walking the video, both on a single sequential decode (constant memory):

- **dense** (the trainer: ``max_clips=None``, and :func:`iter_aligned_frames`): the detector runs on every k-th
  frame, the landmarks are interpolated in between, every frame with a face is aligned.
- **sampled** (the service and ``trainer evaluate`` on raw videos: ``max_clips=M``): the timeline is cut into M
  equal segments (fewer when the video is short, :func:`~djldml.faces.timeline.clip_segments`) and in each the
  first window of ``clip_span`` frames, tried from the segment's first frame, whose detections follow one face
  becomes a clip; clips of a face other than the most persistent one are then dropped
  (:func:`~djldml.faces.track.persistent_clips`). Only frames inside a window are ever detected, and only frames
  of a completed clip are converted to RGB and aligned; GOPs that hold no frame a window could use are not
  decoded at all (:class:`~djldml.faces.decode.SkipPlan`) — decoding skips work, never moves a clip.

Both modes track the same way: where two detections do not continue each other (the face moved fast, appeared,
vanished, or another face took over), every frame in between is detected (:func:`_detect_each`).
Alignment converts only the region of the frame that the face is warped from
(:func:`~djldml.faces.align.source_region`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..clips import ClipMeta, FaceClips, QualityReport
from ..errors import NoFace, TooFewFaceClips, VideoTooShort
from .align import alignment_matrices, shifted, source_region, warp
from .config import FaceConfig
from .decode import (
    Deadline,
    DecodedFrame,
    DecodeErrors,
    FrameConverter,
    SkipPlan,
    VideoInfo,
    decode_frames,
    probe,
    stored_to_display,
)
from .detect import Face, detect_faces, detect_near, large_enough
from .detect import describe as describe_detector
from .orientation import has_larger_scale, larger_width, survey
from .timeline import ResampledSkipPlan, Timeline, clip_segments
from .track import choose_face, interpolate, line_fit, persistent_clips, same_face

# With no face in the survey, a failed whole-frame search also looks at the larger scale, at most once in this
# many seconds of video: a face-less video pays ≈ 12 such searches a minute (docs/faces.md, "Small faces").
LARGER_EVERY_S = 5.0


@dataclass
class AlignedFrame:
    index: int  # frame index in the video (presentation order)
    time: float  # seconds since the first frame
    face: np.ndarray | None  # uint8 [S, S, 3] RGB aligned face, None when the frame has no face
    landmarks: np.ndarray | None = None  # float [5, 2] displayed-frame landmarks the face was aligned with


@dataclass
class _Stats:
    """Counters and stage timings of one run; becomes the QualityReport."""

    detections: int = 0
    crop_detections: int = 0  # of which on a square around the followed face
    skipped_gops: int = 0  # GOPs the sampled mode did not decode
    faces_seen: int = 0  # detections that found the interviewee
    aligned: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=lambda: {"probe": 0.0, "detect": 0.0, "align": 0.0})

    def drop(self, reason: str, n: int = 1) -> None:
        if n > 0:
            self.dropped[reason] = self.dropped.get(reason, 0) + n


class _FaceTracker:
    """One video being processed: its probe, deadline, geometry, tracker state and counters."""

    def __init__(self, path: str | Path, config: FaceConfig):
        self.path, self.config = Path(path), config
        self.started = time.perf_counter()
        self.deadline = Deadline(config.max_processing_s)
        self.stats = _Stats()
        self.info: VideoInfo = probe(self.path, config, self.deadline)
        self.stats.seconds["probe"] = time.perf_counter() - self.started
        # Which way is up and how large the faces are, from a few frames (orientation.py); the turn the detector
        # finds is composed into info.rotation, so everything below handles it like rotation metadata. (The
        # survey looks at rot90(stored, rotation) unflipped; a display flip is applied after the rotation, so the
        # sum of the two turns is right with or without it.)
        self.survey = survey(self.path, config, self.info, self.deadline)
        self.info = info = self.survey.apply(self.info)
        self.stats.seconds["survey"] = self.survey.seconds
        self.display_from_stored = stored_to_display(info.rotation, info.stored_width, info.stored_height, info.hflip)
        self.larger_scale = self.survey.larger_scale  # small faces: detect at the larger scale (orientation.py)
        larger = FrameConverter(info.rotation, larger_width(config, info), info.hflip)
        normal = FrameConverter(info.rotation, config.detect_width, info.hflip)
        self.converter = larger if self.larger_scale else normal
        # No face in the survey: small faces may be elsewhere, so failed searches also look at the larger scale.
        fallback = not self.survey.faces_found and has_larger_scale(info, config)
        self._larger = larger if fallback else None
        self._next_larger_at = 0.0  # video time (s) of the next search at the larger scale
        self.larger_searches = 0
        self.decode_errors = DecodeErrors()  # filled by decode_frames: corrupt packets, frames dropped after them
        self.timeline = Timeline(config.fps, info.table, info.duration_s, info.fps)
        if self.timeline.n_frames < config.clip_span:  # e.g. 16 frames at 60 fps are 8 frames of a 30 fps clip
            raise VideoTooShort(
                f"{info.duration_s:.2f} s gives {self.timeline.n_frames} frames at {config.fps:g} fps: a clip "
                f"needs {config.clip_span}", frames=self.timeline.n_frames, duration_s=round(info.duration_s, 3))
        self.frames_decoded = 0  # source frames out of the decoder
        self.timeline_frames = 0  # resampled frames produced from them
        self.previous: Face | None = None  # the interviewee at the last successful detection
        self._since_full = 0  # detections since the last one on the whole frame

    def frames(self, skip: ResampledSkipPlan | None = None) -> Generator[DecodedFrame, None, None]:
        """The video's frames resampled to ``config.fps`` (:class:`~djldml.faces.timeline.Timeline`): ``index``
        and ``time`` are the timeline's. With ``skip``, GOPs before the source frame shown at ``skip.needed``
        are not decoded."""
        for df in self.timeline.resample(self._decoded(skip)):
            self.timeline_frames += 1
            yield df

    def _decoded(self, skip: SkipPlan | None) -> Iterator[DecodedFrame]:
        for df in decode_frames(self.path, self.config, self.deadline, self.info.table, skip, self.decode_errors):
            self.frames_decoded += 1
            yield df

    def detect(self, df: DecodedFrame, whole_frame: bool = False) -> Face | None:
        """The interviewee in this frame, or None.

        Precise landmarks come from the detector looking at a square around the face, resized so that the face
        is ≈ 71 px high (``detect.NEAR_SQUARE_PX``; yuface's landmarks are best there): ≈4 ms instead of ≈14 ms for the
        whole 320×240 image (measured, one core). While a face is followed, the square is centred where it was.
        The whole frame is searched at a window start (``whole_frame``), every ``config.full_detect_every``
        detections (a larger face may have entered), and whenever the square comes up empty — first at half the
        detection scale (≈2 ms: the interviewee is large), then, if that finds nobody, at the full detection
        scale; a face found there is measured again on its square.

        Small faces: when the survey found the face only at the larger scale, or small (orientation.py), the
        whole video is searched there. When the survey found no face at all, a failed whole-frame search also
        looks at the larger scale (at most once every ``LARGER_EVERY_S`` seconds of video), and the first face
        found there switches the video to it; a face found at the detection scale ends that.
        """
        t = time.perf_counter()
        bgr, sx, sy = self.converter.small_bgr(df.frame)
        face = None
        full = whole_frame or self.previous is None or self._since_full + 1 >= self.config.full_detect_every
        if not full and self.previous is not None:  # (not full implies a previous face)
            face = self._detect_near(bgr, sx, sy, self.previous)
            self._since_full += 1
        if face is None:
            face = self._detect_whole_frame(bgr, sx, sy)
            self._since_full = 0
            if face is None and self._larger is not None:
                face = self._search_larger(df)
        self.stats.detections += 1
        if face is not None:
            self._larger = None  # found: the scale in use is the video's
            self.stats.faces_seen += 1
            self.previous = face
        self.stats.seconds["detect"] += time.perf_counter() - t
        return face

    def _detect_near(self, bgr: np.ndarray, sx: float, sy: float, around: Face) -> Face | None:
        self.stats.crop_detections += 1
        faces = detect_near(bgr, sx, sy, around, self.config, self.info.height)
        return choose_face(faces, around)

    def _detect_whole_frame(self, bgr: np.ndarray, sx: float, sy: float) -> Face | None:
        if not self.larger_scale:  # a face that needs the larger scale is too small for a half-scale look
            h, w = bgr.shape[:2]
            coarse = cv2.resize(bgr, (max(2, w // 2), max(2, h // 2)), interpolation=cv2.INTER_AREA)
            cx, cy = sx * w / coarse.shape[1], sy * h / coarse.shape[0]
            found = choose_face(self._locate(coarse, cx, cy), self.previous)
            if found is not None:
                face = self._detect_near(bgr, sx, sy, found)
                if face is not None:
                    return face
        return self._refined(bgr, sx, sy, choose_face(self._locate(bgr, sx, sy), self.previous))

    def _locate(self, bgr: np.ndarray, sx: float, sy: float) -> list[Face]:
        return detect_faces(bgr, sx, sy, self.config, self.info.height, locate=True)

    def _refined(self, bgr: np.ndarray, sx: float, sy: float, found: Face | None) -> Face | None:
        """``found`` (from a whole-frame search) detected again on its square: landmarks and size from the face
        at its best size (detect.NEAR_SQUARE_PX), as everywhere else; None when it is under the size floor."""
        if found is None:
            return None
        face = self._detect_near(bgr, sx, sy, found)
        if face is None and large_enough(found, self.config, self.info.height):
            return found
        return face

    def _search_larger(self, df: DecodedFrame) -> Face | None:
        """The interviewee at the larger scale, at most once every ``LARGER_EVERY_S`` seconds of video;
        switches the video to that scale when found."""
        larger = self._larger
        if larger is None or df.time < self._next_larger_at:
            return None
        self._next_larger_at = df.time + LARGER_EVERY_S
        bgr, sx, sy = larger.small_bgr(df.frame)
        self.larger_searches += 1
        face = self._refined(bgr, sx, sy, choose_face(self._locate(bgr, sx, sy), self.previous))
        if face is not None:
            self.converter, self.larger_scale = larger, True
        return face

    def align(self, frames: list[DecodedFrame], landmarks: np.ndarray) -> np.ndarray:
        """Aligned faces uint8 [len(frames), S, S, 3] from displayed-frame landmarks [len(frames), 5, 2]."""
        t = time.perf_counter()
        size = self.config.face_size
        faces = np.zeros((len(frames), size, size, 3), np.uint8)
        matrices = alignment_matrices(landmarks, size, self.display_from_stored)
        for j, df in enumerate(frames):
            fw, fh = df.frame.width, df.frame.height
            m = matrices[j]
            if (fw, fh) != (self.info.stored_width, self.info.stored_height):  # size changed mid-stream
                display_from_stored = stored_to_display(self.info.rotation, fw, fh, self.info.hflip)
                m = alignment_matrices(landmarks[j : j + 1], size, display_from_stored)[0]
            x0, y0, x1, y1 = source_region(m, size, fw, fh)
            if x1 > x0 and y1 > y0:  # else the face lies outside the frame: black, as the warp's border
                faces[j] = warp(self.converter.rgb_region(df.frame, x0, y0, x1, y1), shifted(m, x0, y0), size)
        self.stats.aligned += len(frames)
        self.stats.seconds["align"] += time.perf_counter() - t
        return faces

    def corrections(self) -> dict:
        """What was chosen or corrected for this video (QualityReport.corrections); keys absent when nothing was."""
        info, out = self.info, dict[str, Any]()
        timeline = self.timeline
        variable = False
        if info.table is not None and len(info.table.pts) > 2:
            intervals = np.diff(info.table.pts) * info.table.time_base
            variable = float(intervals.max()) > 1.1 * float(np.median(intervals))
        if variable or abs(info.fps - timeline.fps) > 1e-3 * timeline.fps:
            out["frame_rate"] = {"from": round(info.fps, 3), "to": timeline.fps, "variable": bool(variable)}
        if info.stream_chosen_by != "only":
            out["stream"] = {"index": info.stream_index, "chosen_by": info.stream_chosen_by}
        if info.color_range == "pc":
            out["color_range"] = "pc"
        if info.hflip:
            out["display_flip"] = "horizontal"
        if self.converter.deinterlaced or info.interlaced:
            out["deinterlaced"] = True
        if self.decode_errors.frames_dropped:
            out["frames_after_decode_error"] = self.decode_errors.frames_dropped
        if info.truncated is not None:
            out["truncated"] = info.truncated
        if self.survey.rotated_by:
            out["orientation"] = {"rotated_by": self.survey.rotated_by, "by": "detector"}
        return out

    def report(self, clips_made: int, frames_with_face: int, mode: str) -> QualityReport:
        total = time.perf_counter() - self.started
        seconds = dict(self.stats.seconds)
        seconds["decode_and_other"] = max(0.0, total - sum(seconds.values()))
        seconds["total"] = total
        info = self.info
        dropped = dict(self.stats.dropped)
        after_error = self.decode_errors.frames_dropped  # source frames; the dropped counts are timeline frames
        if after_error and abs(info.fps / self.timeline.fps - 1.0) > 1e-3:
            after_error = int(round(after_error * self.timeline.fps / info.fps))
        if after_error:
            # Decoded but never yielded: the sampled walk counted them as not decoded; say why instead.
            if "not_decoded" in dropped:
                dropped["not_decoded"] -= min(after_error, dropped["not_decoded"])
            dropped["after_decode_error"] = after_error
        return QualityReport(
            frames_decoded=self.frames_decoded,
            frames_with_face=frames_with_face,
            clips_made=clips_made,
            duration_s=round(info.duration_s, 3),
            fps=round(info.fps, 3),
            width=info.width,
            height=info.height,
            rotation=info.rotation,
            dropped=dict(sorted(dropped.items())),
            corrections=self.corrections(),
            detector={
                **describe_detector(self.config),
                "mode": mode,
                "detections_run": self.stats.detections,
                "detections_on_face_square": self.stats.crop_detections,
                "gops_skipped": self.stats.skipped_gops,
                "survey": self.survey.report(),
                "larger_scale": self.larger_scale,
                "larger_scale_searches": self.larger_searches,
                "codec": info.codec,
                "container": info.container,
            },
            timings_s={k: round(v, 4) for k, v in seconds.items()},
        )


# --- tracking between two detections: one code for both modes ----------------------------------------------------


def _detect_each(
    session: _FaceTracker, start: Face | None, frames: list[DecodedFrame]
) -> list[Face | None]:
    """Run the detector on each of ``frames`` in turn, following the face from ``start``.

    What both modes do between two detections that do not continue each other (the face moved fast, appeared,
    vanished, or another face took over): look at every frame rather than guess. Each search starts on a
    square around the face of the frame before (:meth:`_FaceTracker.detect`), so a face that moves briskly is
    followed frame by frame; an empty square falls back to the whole frame.
    """
    session.previous = start
    return [session.detect(df) for df in frames]


def _one_face(chain: list[Face | None]) -> list[Face] | None:
    """``chain`` (detections on consecutive frames) when it is one face throughout, else None."""
    faces = [f for f in chain if f is not None]
    one = len(faces) == len(chain) and all(same_face(a, b) for a, b in itertools.pairwise(faces))
    return faces if one else None


# --- dense: every frame ----------------------------------------------------------------------------------------


def _dense_landmarks(session: _FaceTracker) -> Iterator[tuple[DecodedFrame, np.ndarray | None]]:
    """Every frame of the timeline with the interviewee's landmarks (None: no face), detecting every k-th frame.

    Each detection is smoothed with its two neighbours (:func:`_smoothed`), so a detection is emitted, with the
    frames before it, once the next one is known: two detection intervals of frames are held, unconverted.
    """
    k = session.config.detect_every
    queue: list[tuple[DecodedFrame, Face | None, list]] = []  # detected, not emitted: (frame, face, gap)
    before: _Emitted = (None, None, None)
    last: tuple[DecodedFrame, Face | None] | None = None
    pending: list[DecodedFrame] = []  # frames after the last detection, waiting for the next one
    for df in session.frames():
        if last is None or df.index - last[0].index >= k:
            face = session.detect(df)
            queue.append((df, face, _resolve(session, last[1], face, pending) if last is not None else []))
            pending, last = [], (df, face)
            if len(queue) == 2:
                before = yield from _emit(queue.pop(0), before, queue[0])
        else:
            pending.append(df)
    if pending and last is not None:  # the tail after the last detection: detect its last frame to close it
        end = pending.pop()
        face = session.detect(end)
        queue.append((end, face, _resolve(session, last[1], face, pending)))
    while queue:
        before = yield from _emit(queue.pop(0), before, queue[0] if queue else None)


_INTERPOLATE = object()  # in a gap: the frame's landmarks lie between the (smoothed) detections around it


def _resolve(session: _FaceTracker, a: Face | None, b: Face | None, between: list[DecodedFrame]
             ) -> list[tuple[DecodedFrame, object]]:
    """What the frames strictly between two detections ``a`` and ``b`` get: interpolation between them when
    they are one face, else each frame's own detection (landmarks or None)."""
    if a is not None and b is not None and same_face(a, b):
        return [(df, _INTERPOLATE) for df in between]
    if a is None and b is None:
        return [(df, None) for df in between]
    found = _detect_each(session, a, between)
    session.previous = b if b is not None else session.previous
    return [(df, None if face is None else face.landmarks) for df, face in zip(between, found, strict=True)]


_Emitted = tuple[DecodedFrame | None, Face | None, np.ndarray | None]  # a detection's frame, face, landmarks


def _emit(current: tuple[DecodedFrame, Face | None, list], before: _Emitted,
          after: tuple[DecodedFrame, Face | None, list] | None
          ) -> Generator[tuple[DecodedFrame, np.ndarray | None], None, _Emitted]:
    """Yield the gap before detection ``current`` and its own frame; return its (frame, face, smoothed
    landmarks) for the next call. ``before``/``after``: the detections around it (after may be None)."""
    df, face, gap = current
    marks = _smoothed(before[0], before[1], df, face, *(after[:2] if after is not None else (None, None)))
    for j, (gdf, value) in enumerate(gap, start=1):
        if value is _INTERPOLATE:  # (only between two detections of one face: both have landmarks)
            assert before[2] is not None and marks is not None
            fraction = j / (len(gap) + 1)
            yield gdf, (1.0 - fraction) * before[2] + fraction * marks
        else:
            yield gdf, value
    yield df, marks
    return df, face, marks


def _smoothed(p_df, p: Face | None, c_df, c: Face | None, n_df, n: Face | None
              ) -> np.ndarray | None:
    """Landmarks of detection ``c``: on the straight line through it and its neighbours ``p`` and ``n`` when the
    three are one face close to a line (:func:`~djldml.faces.track.line_fit`), else its own."""
    if c is None:
        return None
    if p is None or n is None or not (same_face(p, c) and same_face(c, n)):
        return c.landmarks
    fit = line_fit(np.array([p_df.index, c_df.index, n_df.index]), np.stack([p.landmarks, c.landmarks, n.landmarks]),
                   c.size)
    return c.landmarks if fit is None else fit[1]


class AlignedFrames:
    """Iterator over :class:`AlignedFrame` for every decoded frame; ``.report`` once exhausted.

    Probing happens on construction, so the typed errors for unusable files (NotAVideo, VideoTooShort, …)
    are raised by ``iter_aligned_frames`` itself, before the first frame.
    """

    def __init__(self, path: str | Path, config: FaceConfig = FaceConfig()):
        self.session = _FaceTracker(path, config)
        self.info = self.session.info
        self.report: QualityReport | None = None
        self._iter = self._run()

    def __iter__(self) -> AlignedFrames:
        return self

    def __next__(self) -> AlignedFrame:
        return next(self._iter)

    def close(self) -> None:
        self._iter.close()

    def _run(self) -> Generator[AlignedFrame, None, None]:
        s = self.session
        with_face = 0
        for df, landmarks in _dense_landmarks(s):
            if landmarks is None:
                s.stats.drop("no_face")
                yield AlignedFrame(df.index, df.time, None)
            else:
                with_face += 1
                yield AlignedFrame(df.index, df.time, s.align([df], landmarks[None])[0], landmarks)
        self.report = s.report(clips_made=0, frames_with_face=with_face, mode="dense")


def iter_aligned_frames(path: str | Path, config: FaceConfig = FaceConfig()) -> AlignedFrames:
    """Stream every frame of the video, aligned (or ``face=None``); see :class:`AlignedFrames`."""
    return AlignedFrames(path, config)


class FaceClipStream:
    """Iterator over ``(clip uint8 [T, S, S, 3], ClipMeta)`` of every clip in dense mode, in order; clips start
    every ``config.step`` frames within each run of consecutive face frames. ``.report`` once exhausted."""

    def __init__(self, path: str | Path, config: FaceConfig = FaceConfig()):
        self.frames = AlignedFrames(path, config)
        self.config = config
        self.info = self.frames.info
        self.report: QualityReport | None = None
        self.landmarks: np.ndarray | None = None  # float [T, 5, 2] of the clip yielded last (displayed frame)
        self._iter = self._run()

    def __iter__(self) -> FaceClipStream:
        return self

    def __next__(self) -> tuple[np.ndarray, ClipMeta]:
        return next(self._iter)

    def close(self) -> None:
        self._iter.close()
        self.frames.close()

    def _run(self) -> Generator[tuple[np.ndarray, ClipMeta], None, None]:
        c = self.config
        span, stride, step = c.clip_span, c.temporal_stride, c.step
        run_start: int | None = None  # index of the first frame of the current run of face frames
        open_clips: dict[int, tuple[float, list[np.ndarray], list[np.ndarray]]] = {}  # start → (time, faces, marks)
        used = bytearray()  # 1 where a frame ended up in an emitted clip (clips may overlap)
        made = 0
        for af in self.frames:
            if len(used) <= af.index:
                used.extend(b"\0" * (af.index + 1 - len(used)))
            if af.face is None or af.landmarks is None:  # (an aligned face always has its landmarks)
                run_start, open_clips = None, {}
                continue
            if run_start is None:
                run_start = af.index
            if (af.index - run_start) % step == 0:
                open_clips[af.index] = (af.time, [], [])
            for start in list(open_clips):
                t0, faces, marks = open_clips[start]
                if (af.index - start) % stride == 0:
                    faces.append(af.face)
                    marks.append(af.landmarks)
                if af.index - start + 1 == span:
                    del open_clips[start]
                    used[start : start + span] = b"\1" * span
                    made += 1
                    self.landmarks = np.stack(marks)
                    yield np.stack(faces), ClipMeta(first_frame=start, last_frame=start + span - 1, start_time=t0)
        report = self.frames.report
        assert report is not None  # set once the frames are exhausted, as they are here
        in_clips = sum(used)
        report.clips_made = made
        report.dropped["face_not_in_clip"] = report.frames_with_face - in_clips
        report.dropped = {k: v for k, v in sorted(report.dropped.items()) if v}
        self.report = report


def iter_face_clips(path: str | Path, config: FaceConfig = FaceConfig()) -> FaceClipStream:
    """Every clip of the video (dense mode), streamed: memory does not grow with the number of clips."""
    return FaceClipStream(path, config)


# --- sampled: at most M clips, spread evenly in time -----------------------------------------------------------


@dataclass
class _Window:
    """A candidate clip: ``clip_span`` consecutive timeline frames from ``start``, examined as they stream by."""

    start: int
    frames: list[DecodedFrame] = field(default_factory=list)  # every frame so far, unconverted
    faces: list[tuple[int, Face]] = field(default_factory=list)  # (offset, detection), by offset


def _sampled_clips(session: _FaceTracker) -> tuple[list[np.ndarray], list[ClipMeta], list[np.ndarray]]:
    """The sampled mode's clips, their metadata and landmarks (see :class:`_SampledClips`)."""
    return _SampledClips(session).run()


class _SampledClips:
    """The sampled mode's search: the timeline is cut into ``max_clips`` segments (clip_segments), and each gives
    the first window of ``clip_span`` consecutive frames in it with the interviewee throughout. Frames stream by
    once; GOPs before the next frame a window may start at are not decoded (``plan.needed``)."""

    def __init__(self, session: _FaceTracker):
        c = self.config = session.config
        self.session = session
        self.span, self.stride, self.k = c.clip_span, c.temporal_stride, c.detect_every
        self.detect_at = sorted(set(range(0, self.span, self.k)) | {self.span - 1})  # window offsets detected
        self.segments = clip_segments(session.timeline.n_frames, self.span, c.max_clips or 1)
        self.seg = 0  # the segment whose window is sought
        self.plan = ResampledSkipPlan(session.timeline)  # .needed: the first frame at which a window may start
        self.plan.needed = self.segments[0][0]
        self.clips: list[np.ndarray] = []
        self.metas: list[ClipMeta] = []
        self.marks: list[np.ndarray] = []

    def run(self) -> tuple[list[np.ndarray], list[ClipMeta], list[np.ndarray]]:
        window: _Window | None = None
        previous = -1  # timeline index of the last frame seen: a window must not have holes
        decoded = self.session.frames(skip=self.plan)
        for df in decoded:
            i = df.index
            if window is not None and i != previous + 1:
                # A frame missing inside the window (corrupt packet): its clip would not be T consecutive frames.
                self.session.stats.drop("decode_gap", previous + 1 - window.start)
                window, self.plan.needed = None, i
            previous = i
            if window is None:
                if not self._segment_left():
                    break  # every segment is done: the rest of the video needs no decoding
                if i < self.plan.needed:
                    continue
                window = _Window(i)
            window = self._add(window, df)
        decoded.close()  # stopped early when every segment is done: release the decoder now
        self._keep_the_interviewee()
        self._count_unused_frames()
        return self.clips, self.metas, self.marks

    def _segment_left(self) -> bool:
        """Move on to the first segment that still has room for a window at ``plan.needed``; False when none."""
        while self.seg < len(self.segments) and self.plan.needed >= self.segments[self.seg][1]:
            self.seg += 1  # this segment has no usable window left; try the next one from its first frame
            if self.seg < len(self.segments):
                self.plan.needed = max(self.plan.needed, self.segments[self.seg][0])
        return self.seg < len(self.segments)

    def _add(self, window: _Window, df: DecodedFrame) -> _Window | None:
        """``df`` joins the window (detected at the detection offsets); None once the window is given up or done."""
        offset = df.index - window.start
        window.frames.append(df)
        if offset in self.detect_at and not self._detect(window, df, offset):
            return None
        if offset == self.span - 1:
            self._complete(window, df.index)
            return None
        return window

    def _detect(self, window: _Window, df: DecodedFrame, offset: int) -> bool:
        """Detect the interviewee at ``offset``; False (window given up, ``plan.needed`` moved on) without them."""
        session = self.session
        face = session.detect(df, whole_frame=offset == 0)
        found = face is not None
        if face is not None and window.faces and not same_face(window.faces[-1][1], face):
            face = _follow(session, window, offset, face)  # moved briskly, or another face
        if face is None:
            session.stats.drop("no_face", offset + (0 if found else 1))
            # No face here: the next k-1 frames are unlikely to have one. A different face: afresh from it.
            self.plan.needed = df.index + (0 if found else self.k)
            return False
        window.faces.append((offset, face))
        return True

    def _complete(self, window: _Window, last: int) -> None:
        """The window is complete: interpolate, convert and align only the clip's frames; next segment."""
        frames = window.frames[:: self.stride]
        lm = _window_landmarks(range(0, self.span, self.stride), window.faces)
        self.clips.append(self.session.align(frames, lm))
        self.marks.append(lm)
        self.metas.append(ClipMeta(first_frame=window.start, last_frame=last, start_time=window.frames[0].time))
        self.seg += 1
        self.plan.needed = max(last + 1, self.segments[self.seg][0]) if self.seg < len(self.segments) else last + 1

    def _keep_the_interviewee(self) -> None:
        """The interviewee is the most persistent face: drop clips of a face seen only for a while."""
        if len(self.clips) > 1:
            keep = persistent_clips(np.stack(self.marks))
            self.session.stats.drop("other_face", int((~keep).sum()) * self.span)
            kept = np.flatnonzero(keep)
            self.clips = [self.clips[j] for j in kept]
            self.metas = [self.metas[j] for j in kept]
            self.marks = [self.marks[j] for j in kept]

    def _count_unused_frames(self) -> None:
        """The quality report's account of every timeline frame that is in no clip."""
        session, span = self.session, self.span
        session.stats.skipped_gops = self.plan.gops_skipped
        session.stats.drop("stride", len(self.clips) * (span - self.config.clip_length))
        dropped = session.stats.dropped
        examined = sum(dropped.get(r, 0) for r in ("no_face", "decode_gap", "other_face"))  # frames of windows
        session.stats.drop("not_sampled", session.timeline_frames - len(self.clips) * span - examined)
        # Never produced: in GOPs skipped because no window needed them, or after every clip was found.
        session.stats.drop("not_decoded", session.timeline.n_frames - session.timeline_frames)


def _follow(session: _FaceTracker, window: _Window, offset: int, face: Face) -> Face | None:
    """``face`` at ``offset`` does not continue the window's last detection: detect every frame in between, as
    the dense mode does, and keep the window only if one face is followed throughout. Returns the face at
    ``offset`` (re-detected while following) or None; the in-between detections join ``window.faces``."""
    last_offset, last = window.faces[-1]
    between = window.frames[last_offset + 1 : offset + 1]
    chain = _one_face([last, *_detect_each(session, last, between)])
    if chain is None:
        return None
    window.faces.extend(zip(range(last_offset + 1, offset), chain[1:-1], strict=True))
    return chain[-1]


def _window_landmarks(offsets: range, faces: list[tuple[int, Face]]) -> np.ndarray:
    """Landmarks [len(offsets), 5, 2] at ``offsets`` of a window from its detections (sorted by offset): on the
    straight line through them when they lie close to one (:func:`~djldml.faces.track.line_fit`; the detector's
    jitter would otherwise become motion), else interpolated between consecutive detections."""
    positions = np.array([o for o, _ in faces], dtype=np.float64)
    detected = np.stack([f.landmarks for _, f in faces])
    fit = line_fit(positions, detected, float(np.mean([f.size for _, f in faces]))) if len(faces) >= 3 else None
    if fit is not None:  # evaluate the line (through its fitted points) at every offset
        slope = (fit[-1] - fit[0]) / (positions[-1] - positions[0])
        return np.stack([fit[0] + slope * (o - positions[0]) for o in offsets])
    return np.stack([_landmarks_at(o, faces) for o in offsets])


def _landmarks_at(offset: int, faces: list[tuple[int, Face]]) -> np.ndarray:
    """Interpolated landmarks at ``offset`` in a window, from its detections (sorted by offset)."""
    for (o0, f0), (o1, f1) in zip(faces, faces[1:], strict=False):
        if o0 <= offset <= o1:
            return interpolate(f0, f1, (offset - o0) / (o1 - o0))
    return faces[-1][1].landmarks if offset >= faces[-1][0] else faces[0][1].landmarks


# --- the entry point ---------------------------------------------------------------------------------------------


def extract_face_clips(path: str | Path, config: FaceConfig = FaceConfig()) -> FaceClips:
    """Face clips of a video (the face-clips contract); raises the typed errors of djldml.errors.

    ``config.max_clips`` set (service): at most that many clips spread evenly over the video.
    ``config.max_clips=None`` (trainer): every clip, starting every ``config.step`` frames in each face run.
    """
    return extract_face_clips_with_landmarks(path, config)[0]


def extract_face_clips_with_landmarks(
    path: str | Path, config: FaceConfig = FaceConfig()
) -> tuple[FaceClips, np.ndarray]:
    """:func:`extract_face_clips` plus the landmarks each frame was aligned with: float [N, T, 5, 2], in
    displayed-frame pixels (for checks and for drawing; the contract itself carries no landmarks)."""
    if config.max_clips is None:
        stream = iter_face_clips(path, config)
        clips, metas, marks = [], [], []
        for clip, meta in stream:
            assert stream.landmarks is not None  # set with every clip
            clips.append(clip)
            metas.append(meta)
            marks.append(stream.landmarks)
        assert stream.report is not None  # set once the stream is exhausted
        report = stream.report
        faces_seen = stream.frames.session.stats.faces_seen
    else:
        session = _FaceTracker(path, config)
        clips, metas, marks = _sampled_clips(session)
        report = session.report(clips_made=len(clips), frames_with_face=len(clips) * config.clip_length, mode="sampled")
        faces_seen = session.stats.faces_seen
    if not clips and faces_seen == 0:
        raise NoFace("no face found in the video", frames_decoded=report.frames_decoded)
    if len(clips) < config.min_clips:
        raise TooFewFaceClips(
            f"{len(clips)} face clips, need {config.min_clips}", clips=len(clips), needed=config.min_clips
        )
    shape = (0, config.clip_length, config.face_size, config.face_size, 3)
    array = np.stack(clips) if clips else np.zeros(shape, np.uint8)
    landmarks = np.stack(marks) if marks else np.zeros((0, config.clip_length, 5, 2))
    return FaceClips(clips=array, meta=metas, quality=report), landmarks
