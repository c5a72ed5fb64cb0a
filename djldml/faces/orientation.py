"""Which way is up, and how large the faces are: a survey of a few frames before any clip is cut.

**Orientation.** A video may be stored turned by 90/180/270° with no rotation metadata (a phone held sideways by
an app that drops the display matrix, a webcam mounted upside down, a careless edit). yuface finds such faces
anyway, at a confidence only a little lower than upright, and always places its five landmarks as if the face
were upright *in the image it was given*: on an upside-down face the template's eyes land on the mouth corners.
The landmarks' own geometry therefore cannot tell, and neither can one detection. What tells is comparing: the
same face looked at turned four ways scores highest the right way up (measured on the carphone talker and on
the astronaut at 12–50 % of the frame height: 0.88–0.93 upright against ≤ 0.84 for any other turn, in every
frame surveyed). So on a few survey frames the detector locates the face once, then scores a square around it
(:data:`~djldml.faces.detect.SEARCH_SQUARE` face sizes, as when following a face) turned by 0, 90, 180 and 270°;
the turn with the highest mean score wins if it also wins most frames and leads by :data:`MIN_MARGIN`.

**Scale.** yuface needs a face box about 24–26 px high. At the detection scale (short side 240 px) that is
≈ 10–11 % of the frame height. The larger scale is three times that (short side 720 px, long side at most
960 px, never more than the frame's own size: 640×480 stays 640×480, 1080p becomes 960×540): a face of 6 % of
the frame height is ≈ 29 px there at 640×480 and 32 px at 1080p. The survey looks at the larger scale where
nothing was found at the normal one, or the face found is under ``SMALL_FACE_PX``; such a video is processed
at the larger scale throughout (docs/faces.md, "Small faces", has the measured floor and cost).

The survey decodes only the frames it looks at (keyframes spread over the video when the frame table allows,
else frames in the first seconds) and counts neither them nor its detections in the pipeline's frame counts.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from ..errors import FaceOrientation
from .config import FaceConfig
from .decode import Deadline, FrameConverter, SkipPlan, VideoInfo, decode_frames
from .detect import LOCATE_SLACK, MIN_SEARCH_PX, SEARCH_SQUARE, detect_faces

TURNS = (0, 90, 180, 270)  # counter-clockwise degrees, as the rotation metadata
SURVEY_FRAMES = 3  # frames looked at first, spread over the video …
MORE_SURVEY_FRAMES = 3  # … and this many others when none of those showed a face
LOCATE_THRESHOLD = 0.3  # a turned face scores low in the upright image: locate it with a lower threshold
MIN_MARGIN = 0.03  # the winning turn's mean score must lead every other turn's by this much
CLEAR_FRAMES, CLEAR_MARGIN = 2, 0.05  # stop surveying early once this many frames agree by this margin
SMALL_FACE_PX = 26  # a face less high than this at the detection scale is searched at the larger scale
SQUARE_FACE_PX = 48  # the face square is scored with the face this large (or as it is, when smaller)
LARGER = 3  # the larger detection scale: this many times the detection scale (never above the frame's size) …
MAX_LARGER_SIDE = 960  # … nor a long side above this (yuface warns of slow detection beyond it)
EARLY_STEP_S = 0.5  # without a frame table, survey frames are this far apart from the first frame


@dataclass(frozen=True)
class Survey:
    """What the survey found. ``scores`` [frames with a face][4]: the best score (0..1) of the face square turned
    by 0/90/180/270° counter-clockwise from the metadata's upright, per surveyed frame that showed a face."""

    rotated_by: int = 0  # counter-clockwise degrees to turn the (metadata-)displayed frames so faces stand upright
    larger_scale: bool = False  # a face was found only at the larger detection scale, or small at the normal one
    frames: int = 0  # frames surveyed
    scores: list[list[float]] = field(default_factory=list)
    detections: int = 0
    seconds: float = 0.0

    @property
    def faces_found(self) -> int:
        return len(self.scores)

    def apply(self, info: VideoInfo) -> VideoInfo:
        """``info`` with the detector's turn composed into its rotation: displayed = ``np.rot90(stored,
        rotation // 90)``, and turning that by ``rotated_by`` more is the same as rotating the stored frame by
        the sum. Everything downstream (:func:`~djldml.faces.decode.stored_to_display`, the converter, the
        displayed width and height) then works unchanged."""
        if not self.rotated_by:
            return info
        return replace(info, rotation=(info.rotation + self.rotated_by) % 360)

    def report(self) -> dict:
        """The survey for the quality report's ``detector`` entry."""
        return {
            "frames": self.frames,
            "frames_with_face": self.faces_found,
            "detections": self.detections,
            "scores_by_turn": [round(float(s), 3) for s in np.mean(self.scores, axis=0)] if self.scores else [],
            "larger_scale": self.larger_scale,
        }


def larger_width(config: FaceConfig, info: VideoInfo) -> int:
    """``detect_width`` of the larger scale (a 4:3 frame's width; see :meth:`FrameConverter.small_bgr`):
    ``LARGER`` times the detection scale, its long side at most ``MAX_LARGER_SIDE``."""
    short, long = sorted((info.stored_width, info.stored_height))
    target_short = min(LARGER * 0.75 * config.detect_width, MAX_LARGER_SIDE * short / long)
    return max(config.detect_width, int(target_short / 0.75))


def has_larger_scale(info: VideoInfo, config: FaceConfig) -> bool:
    """Whether the frame is large enough for the larger scale to differ from the detection scale."""
    return min(info.stored_width, info.stored_height) > 0.75 * config.detect_width


def survey(path: str | Path, config: FaceConfig, info: VideoInfo, deadline: Deadline) -> Survey:
    """Survey ``SURVEY_FRAMES`` frames (``MORE_SURVEY_FRAMES`` more when none shows a face) for the upright
    orientation and the detection scale. Raises :class:`~djldml.errors.FaceOrientation` when faces stand
    upright in no frame and which turn would right them cannot be decided (:func:`decide`)."""
    started = time.perf_counter()
    looker = _Looker(config, info)
    scores: list[list[float]] = []
    larger = 0
    frames = 0
    for targets in _targets(info):
        for frame in _decode_at(path, config, info, deadline, targets):
            frames += 1
            found = looker.look(frame)
            if found is not None:
                scores.append(found[0])
                larger += found[1]
            if _clear(scores):
                break
        if scores:
            break
    rotated_by = decide(scores, config.detect_threshold)
    return Survey(
        rotated_by=rotated_by,
        # Any surveyed face that needed the larger scale: the interviewee may be that small at times, and larger
        # faces are found there too (at the cost of larger detections, docs/faces.md).
        larger_scale=larger > 0,
        frames=frames,
        scores=scores,
        detections=looker.detections,
        seconds=time.perf_counter() - started,
    )


def _clear(scores: list[list[float]]) -> bool:
    """Whether the survey can stop early: ``CLEAR_FRAMES`` frames with a face, all won by one turn by at least
    ``CLEAR_MARGIN`` (upright faces commonly lead by ≈ 0.1: two frames suffice, a third adds nothing)."""
    if len(scores) < CLEAR_FRAMES:
        return False
    s = np.sort(np.asarray(scores), axis=1)
    winners = set(np.argmax(np.asarray(scores), axis=1).tolist())
    return len(winners) == 1 and bool(np.all(s[:, -1] - s[:, -2] >= CLEAR_MARGIN))


def decide(scores: list[list[float]], threshold: float) -> int:
    """The turn (0/90/180/270, counter-clockwise) that stands the faces upright, from per-frame scores
    [frames][4] of the face square turned each way.

    The winner has the highest mean score; a turn other than 0 is applied only when it also wins at least two
    thirds of the frames and leads every other turn's mean by ``MIN_MARGIN``. Otherwise: when upright is within
    ``MIN_MARGIN`` of the winner, or no frame scores ``threshold`` anywhere, nothing is turned (the metadata is
    trusted when the detector cannot tell it wrong); else faces were seen only turned and the turn is unclear:
    :class:`~djldml.errors.FaceOrientation`.
    """
    if not scores:
        return 0
    s = np.asarray(scores, dtype=np.float64)
    mean = s.mean(axis=0)
    best = int(np.argmax(mean))
    if best == 0 or mean[best] < threshold:
        return 0
    others = np.delete(mean, best)
    votes = int(np.sum(np.argmax(s, axis=1) == best))
    if mean[best] - others.max() >= MIN_MARGIN and 3 * votes >= 2 * len(s):
        return TURNS[best]
    if mean[best] - mean[0] < MIN_MARGIN:
        return 0
    raise FaceOrientation(
        "faces were found only turned sideways or upside down, and which way is up could not be decided",
        scores_by_turn={str(t): round(float(m), 3) for t, m in zip(TURNS, mean, strict=True)},
        frames=len(s),
    )


# --- which frames ------------------------------------------------------------------------------------------------


def _targets(info: VideoInfo) -> list[list[int]]:
    """Frame indices to survey: a first round, then a second one for when the first showed no face.

    With a frame table: keyframes spread evenly over the video (a keyframe decodes on its own, so a survey
    frame costs about one frame's decoding); without one (or with fewer keyframes than survey frames), frames
    ``EARLY_STEP_S`` apart from the start, which decode sequentially.
    """
    n = info.n_frames
    total = SURVEY_FRAMES + MORE_SURVEY_FRAMES
    table = info.table
    keys: list[int] = []
    if table is not None:
        keys = [i for i in (table.index_of(int(k)) for k in table.key_pts) if i is not None]
    if len(keys) >= total:
        # Evenly over the keyframes, the first round at the middle of thirds, the second between them.
        picks = [keys[int(round(p * (len(keys) - 1)))] for p in np.linspace(0, 1, 2 * total + 1)[1::2]]
        first, second = picks[1::2], picks[0::2]
    else:
        step = max(1, int(round(EARLY_STEP_S * info.fps)))
        picks = [min(n - 1, j * step) for j in range(total)]
        first, second = picks[:SURVEY_FRAMES], picks[SURVEY_FRAMES:]
    rounds = [sorted(set(first)), sorted(set(second) - set(first))]
    return [r for r in rounds if r]


def _decode_at(path: str | Path, config: FaceConfig, info: VideoInfo, deadline: Deadline, targets: list[int]):
    """The decoded frames at (or just after) each of the ascending ``targets``, skipping the GOPs in between."""
    plan = SkipPlan()
    plan.next_needed = targets[0]
    pending = list(targets)
    frames = decode_frames(path, config, deadline, info.table, plan)
    try:
        for df in frames:
            if df.index < pending[0]:
                continue
            yield df.frame
            while pending and pending[0] <= df.index:
                pending.pop(0)
            if not pending:
                break
            plan.next_needed = pending[0]
    finally:
        frames.close()  # release the decoder now, not at garbage collection


# --- looking at one frame ---------------------------------------------------------------------------------------


class _Looker:
    """Finds the face in a survey frame and scores its square turned four ways."""

    def __init__(self, config: FaceConfig, info: VideoInfo):
        self.config = config
        # Faces only measured roughly here: keep those somewhat under the size floor (detect.LOCATE_SLACK).
        slack = config.min_face_fraction * LOCATE_SLACK
        self.locate_config = replace(config, detect_threshold=LOCATE_THRESHOLD, min_face_fraction=slack)
        self.normal = FrameConverter(info.rotation, config.detect_width)
        larger = has_larger_scale(info, config)
        self.larger = FrameConverter(info.rotation, larger_width(config, info)) if larger else None
        self.detections = 0

    def look(self, frame) -> tuple[list[float], bool] | None:
        """(scores of the face square turned 0/90/180/270°, whether the face needs the larger scale), or None
        when the frame shows no face at either scale.

        The face needs the larger scale when it is found only there, or when it is under ``SMALL_FACE_PX`` high
        at the detection scale: there yuface misses it in some frames, and its landmarks are better taken from
        the larger image (docs/faces.md, "Small faces")."""
        found = self._at_scale(self.normal.small_bgr(frame)[0], normal=True)
        if found is not None and (found[1] >= SMALL_FACE_PX or self.larger is None):
            return found[0], False
        if self.larger is not None:
            # Only upright at the larger scale: a small face turned sideways is left to the limits (docs).
            at_larger = self._at_scale(self.larger.small_bgr(frame)[0], normal=False)
            if at_larger is not None:
                return at_larger[0], True
        return None if found is None else (found[0], True)

    def _at_scale(self, img: np.ndarray, normal: bool) -> tuple[list[float], float] | None:
        """(turned scores, face side in ``img``'s pixels) of the best face in ``img``, or None. Looks, until a
        face scores ``detect_threshold``: at half scale (large faces; ≈ 2 ms instead of ≈ 10 ms at 320×240), at
        full scale, then (``normal``) at the whole image turned by 90, 180 and 270°."""
        h, w = img.shape[:2]
        looks: list[Callable[[], list[tuple[float, float, float]]]] = [lambda: self._locate(img, 0)]
        if normal:
            half = cv2.resize(img, (max(2, w // 2), max(2, h // 2)), interpolation=cv2.INTER_AREA)
            looks.insert(0, lambda: [(2 * x + 0.5, 2 * y + 0.5, 2 * side) for x, y, side in self._locate(half, 0)])
            looks += [functools.partial(self._turned_located, img, k) for k in (1, 2, 3)]
        best: tuple[list[float], float] | None = None
        for locate in looks:
            for cx, cy, side in locate()[:2]:
                scores = self._turned_scores(img, cx, cy, side)
                if best is None or max(scores) > max(best[0]):
                    best = (scores, side)
            if best is not None and max(best[0]) >= self.config.detect_threshold:
                return best
        return None

    def _turned_located(self, img: np.ndarray, k: int) -> list[tuple[float, float, float]]:
        """The best face of ``img`` turned by ``k`` × 90°, if any."""
        return self._locate(img, k)[:1]

    def _locate(self, img: np.ndarray, k: int) -> list[tuple[float, float, float]]:
        """Faces in ``img`` turned by ``k`` quarter turns, as (centre x, centre y, side) in ``img``'s own
        (unturned) pixels, highest score first."""
        turned = np.ascontiguousarray(np.rot90(img, k))
        h, w = turned.shape[:2]
        # frame_height: the height the frame would have if this turn were the upright one.
        faces = detect_faces(turned, 1.0, 1.0, self.locate_config, h)
        self.detections += 1
        out = []
        for f in sorted(faces, key=lambda f: -f.score):
            cx, cy = _unturn(f.centre[0], f.centre[1], k, w, h)
            out.append((cx, cy, float(max(f.box[2], f.box[3]))))
        return out

    def _turned_scores(self, img: np.ndarray, cx: float, cy: float, side: float) -> list[float]:
        h, w = img.shape[:2]
        half = max(MIN_SEARCH_PX, SEARCH_SQUARE * side) / 2
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(w, int(cx + half) + 1), min(h, int(cy + half) + 1)
        square = img[y0:y1, x0:x1]
        # Four detections per frame: shrink the square so that the face is SQUARE_FACE_PX high (≈ 2 ms each
        # instead of ≈ 5 ms for a face 30 % of the frame high); the best turn still leads by ≈ 0.1 there.
        shrink = min(1.0, SQUARE_FACE_PX / max(side, 1.0))
        if shrink < 1.0:
            size = (max(2, round(square.shape[1] * shrink)), max(2, round(square.shape[0] * shrink)))
            square = cv2.resize(square, size, interpolation=cv2.INTER_AREA)
        scores = []
        for k in range(4):
            turned = np.ascontiguousarray(np.rot90(square, k))
            faces = detect_faces(turned, 1.0, 1.0, self.locate_config, turned.shape[0])
            self.detections += 1
            # Only a face about as large as the located one counts (not a texture patch inside the square).
            sizes_ok = [f.score for f in faces if max(f.box[2], f.box[3]) >= 0.5 * side * shrink]
            scores.append(max(sizes_ok, default=0.0))
        return scores


def _unturn(x: float, y: float, k: int, w: int, h: int) -> tuple[float, float]:
    """Pixel (x, y) of ``np.rot90(img, k)`` (whose size is ``w``×``h``) → the same pixel in ``img``."""
    for _ in range(k % 4):
        # np.rot90 once: out[r, c] = in[c, W_in - 1 - r], with out's height = W_in.
        x, y, w, h = h - 1 - y, x, h, w
    return x, y
