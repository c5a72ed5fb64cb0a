"""What made a model's face clips: the pipeline's settings and the libraries whose arithmetic shapes the pixels.

A model only ever saw faces as the trainer's ``prepare`` made them. If the service makes them differently —
another face size or clip length, another OpenCV whose bilinear warp rounds differently (4.x → 5.0 moved pixels
by up to 6 levels, measured), another FFmpeg or detector — predictions drift and nothing fails. So ``prepare``
records :func:`preprocessing` in the prepared dataset, ``trainer export`` copies it into the model card, and
the service compares it with its own (:func:`differences`) and says so in ``GET /models`` and its log.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .config import FaceConfig

FORMAT = "djldml-preprocessing/1"
# Settings that change what a clip *is*: a difference makes the model's input another thing.
GEOMETRY = ("clip_length", "face_size", "temporal_stride")
# Settings that change where landmarks land, and so every aligned pixel, but not the clip's shape.
LANDMARKS = ("detect_every", "detect_width", "full_detect_every", "detect_threshold", "min_face_fraction")
# Libraries compared by major.minor: their arithmetic (warp rounding, colour conversion, decoding, detection)
# decides the pixels. Patch releases are assumed not to change results.
LIBRARIES = {"opencv": "opencv-python-headless", "av": "av", "yuface": "yuface", "numpy": "numpy"}
TEMPLATE = "arcface-112-5pt"  # align.ALIGN_TEMPLATE


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def library_versions() -> dict[str, str]:
    versions = {name: _version(dist) for name, dist in LIBRARIES.items()}
    try:
        import av

        codec = av.library_versions.get("libavcodec")
        versions["libavcodec"] = ".".join(str(v) for v in codec) if codec else "unknown"
    except ImportError:  # pragma: no cover - av is a dependency
        versions["libavcodec"] = "absent"
    return versions


def preprocessing(config: FaceConfig) -> dict[str, Any]:
    """The record of how faces are made by this process with ``config``."""
    settings = config.to_dict()
    return {
        "format": FORMAT,
        "template": TEMPLATE,
        "face_config": {k: settings[k] for k in GEOMETRY + LANDMARKS},
        "libraries": library_versions(),
    }


def _minor(v: str) -> str:
    return ".".join(str(v).split(".")[:2])


def differences(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """Human-readable differences that matter between a model's recorded preprocessing and ``current``
    (both from :func:`preprocessing`); empty when they agree. A model without a record gets one line saying
    so: nothing can be checked."""
    if not recorded:
        return ["the model card records no preprocessing: whether faces are made as in training is unknown"]
    out = []
    if recorded.get("template", TEMPLATE) != current["template"]:
        out.append(f"alignment template: trained {recorded.get('template')}, serving {current['template']}")
    rec_cfg, cur_cfg = recorded.get("face_config") or {}, current["face_config"]
    for key in GEOMETRY + LANDMARKS:
        if key in rec_cfg and rec_cfg[key] != cur_cfg[key]:
            out.append(f"face_config.{key}: trained {rec_cfg[key]}, serving {cur_cfg[key]}")
    rec_lib, cur_lib = recorded.get("libraries") or {}, current["libraries"]
    for key in (*LIBRARIES, "libavcodec"):
        if key in rec_lib and _minor(rec_lib[key]) != _minor(cur_lib.get(key, "absent")):
            out.append(f"{key}: trained with {rec_lib[key]}, serving with {cur_lib.get(key, 'absent')}")
    return out
