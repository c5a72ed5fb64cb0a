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
# Settings that change what a clip *is*: a difference makes the model's input another thing. ``fps`` is the
# clip timeline's rate (djldml.faces.timeline): with clip_length and temporal_stride it fixes the seconds a clip
# spans — the clip contract in time.
GEOMETRY = ("fps", "clip_length", "face_size", "temporal_stride")
# Settings that change where landmarks land, and so every aligned pixel, but not the clip's shape.
LANDMARKS = ("detect_every", "detect_width", "full_detect_every", "detect_threshold", "min_face_fraction")
# Libraries compared by major.minor: their arithmetic (warp rounding, colour conversion, decoding, detection)
# decides the pixels. Patch releases are assumed not to change results.
LIBRARIES = {"opencv": "opencv-python-headless", "av": "av", "yuface": "yuface", "numpy": "numpy"}
TEMPLATE = "arcface-112-5pt"  # align.ALIGN_TEMPLATE
# Where clips fall in a video for scoring (djldml.faces.timeline.clip_segments): max_clips equal time segments,
# the first window with a face in each, tried from the segment's first timeline frame. Version 1 started windows
# on keyframes (so on the encoding); a record without this key predates the clip contract in time.
SELECTION_METHOD = "time-segments/2"


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
    record = {
        "format": FORMAT,
        "template": TEMPLATE,
        "face_config": {k: settings[k] for k in GEOMETRY + LANDMARKS},
        "libraries": library_versions(),
    }
    if config.max_clips is not None:  # a scoring config (the trainer's dense config selects every clip)
        record["selection"] = selection(config.max_clips)
    return record


def selection(max_clips: int) -> dict[str, Any]:
    """The record of the clip selection used to score a video (written into the model card by ``trainer
    export``; the service and ``trainer evaluate --videos`` both read it back through :func:`scoring_config`)."""
    return {"method": SELECTION_METHOD, "max_clips": int(max_clips)}


def scoring_config(recorded: dict[str, Any] | None, **overrides: Any) -> FaceConfig:
    """The face settings that score a video for a model: the clip geometry in time, landmark settings and clip
    selection its card records (``preprocessing``), the pipeline's defaults for what it does not record, then
    ``overrides`` (the service's limits). The service and ``trainer evaluate --videos`` both call this, so both
    cut the same clips from the same video."""
    recorded = recorded or {}
    face = recorded.get("face_config") or {}
    kwargs: dict[str, Any] = {k: face[k] for k in GEOMETRY + LANDMARKS if face.get(k) is not None}
    max_clips = (recorded.get("selection") or {}).get("max_clips")
    if max_clips:
        kwargs["max_clips"] = int(max_clips)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return FaceConfig(**kwargs)


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
    if "fps" not in rec_cfg:
        out.append(f"the model card records no clip frame rate (made before the clip contract in time): clips are "
                   f"cut at {cur_cfg['fps']} fps, which may not be what the model saw")
    if (recorded.get("selection") or {}).get("method") != SELECTION_METHOD and "selection" in current:
        out.append(f"the model card records no clip selection {SELECTION_METHOD}: its figures were measured on "
                   "clips chosen differently")
    for key in GEOMETRY + LANDMARKS:
        if key in rec_cfg and rec_cfg[key] != cur_cfg[key]:
            out.append(f"face_config.{key}: trained {rec_cfg[key]}, serving {cur_cfg[key]}")
    rec_lib, cur_lib = recorded.get("libraries") or {}, current["libraries"]
    for key in (*LIBRARIES, "libavcodec"):
        if key in rec_lib and _minor(rec_lib[key]) != _minor(cur_lib.get(key, "absent")):
            out.append(f"{key}: trained with {rec_lib[key]}, serving with {cur_lib.get(key, 'absent')}")
    return out
