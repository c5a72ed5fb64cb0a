"""Small faces and orientation: the size floor, what the survey and the larger scale cost.

    python -m bench.bench_detect floor      # frames with the face found, and landmark error, by face height (≈2 min)
    python -m bench.bench_detect cost       # 60 s videos through the service's sampled clips: face-less, small face
    python -m bench.bench_detect survey     # the orientation survey alone on turned videos (no metadata)

To compare with older code: ``git archive REV djldml | tar -x -C /tmp/old`` and
``BENCH_DJLDML=/tmp/old python -m bench.bench_detect cost`` (or ``floor``): ``djldml`` is imported from there,
the test media and truth from this tree (the "before" figures in docs/faces.md: REV = 2397971). Videos are
synthetic (the public-domain astronaut portrait over a background; tests/media.py), cached in the temp dir.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

if os.environ.get("BENCH_DJLDML"):  # older code to compare with: its djldml first on the path
    sys.path.insert(0, os.environ["BENCH_DJLDML"])

from djldml.errors import DJLDMLError  # noqa: E402
from djldml.faces import FaceConfig, extract_face_clips, iter_aligned_frames, probe  # noqa: E402
from tests.faces.truth import eye_errors  # noqa: E402
from tests.media import (  # noqa: E402
    _cached,
    encode_frames,
    face_scene,
    face_video,
    long_face_video,
    loop_video,
    noface_video,
)

SIZES = [(640, 480), (1920, 1080)]


def floor(heights: list[float]) -> None:
    """Dense mode on 2 s videos: share of frames with the face found, median/max eye error (aligned-face px)."""
    for size in SIZES:
        for moving in (False, True):
            row = []
            for fh in heights:
                kwargs = dict(seconds=2.0, size=size, face_height=fh, moving=moving)
                path, scene = face_video(**kwargs), face_scene(**kwargs)
                errs = []
                try:
                    for af in iter_aligned_frames(path, FaceConfig(max_clips=None)):
                        if af.face is not None:
                            errs.append(eye_errors(af.landmarks, scene.truth(af.index).landmarks)[0])
                except DJLDMLError:
                    pass
                cell = f"{fh:.3f}:{len(errs) / scene.n_frames:.0%}"
                row.append(cell + (f"({np.median(errs):.1f}/{max(errs):.1f}px)" if errs else ""))
            print(f"{size[0]}×{size[1]} {'moving' if moving else 'still '} " + " ".join(row), flush=True)


def cost(repeat: int) -> None:
    """The service's sampled clips on 60 s videos; best and median wall time of ``repeat`` runs."""
    videos = {}
    for size in SIZES:
        piece = noface_video(seconds=10.0, size=size)
        videos[f"face-less 60 s {size[0]}×{size[1]}"] = _cached(
            "noface-long", "mp4", {"size": size, "m": 1}, lambda p, piece=piece: loop_video(piece, p, 6)
        )
        videos[f"6 % still face 60 s {size[0]}×{size[1]}"] = long_face_video(
            minutes=1.0, size=size, face_height=0.06, moving=False
        )
        videos[f"30 % face 60 s {size[0]}×{size[1]}"] = long_face_video(minutes=1.0, size=size)
    for name, path in videos.items():
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            try:
                out = f"{len(extract_face_clips(path, FaceConfig()))} clips"
            except DJLDMLError as exc:
                out = exc.code
            times.append(time.perf_counter() - t)
        median = sorted(times)[len(times) // 2]
        print(f"{name:34s} {out:12s} best {min(times):.2f} s, median {median:.2f} s", flush=True)


def survey(repeat: int) -> None:
    """The survey alone on 10 s videos stored turned without metadata."""
    from djldml.faces.decode import Deadline
    from djldml.faces.orientation import survey as run_survey

    config = FaceConfig()
    for size in SIZES:
        scene = face_scene(seconds=10.0, size=size)
        for turn in range(4):
            path = _cached(
                "turned",
                "mp4",
                {"turn": turn, "seconds": 10.0, "size": size},
                lambda p, turn=turn, scene=scene: encode_frames(p, (np.rot90(f, turn) for f in scene.frames())),
            )
            info = probe(path, config)
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                s = run_survey(path, config, info, Deadline(60))
                times.append(time.perf_counter() - t)
            print(
                f"{size[0]}×{size[1]} stored turned {90 * turn:3d}°: rotated_by {s.rotated_by:3d}, {s.frames} frames,"
                f" {s.detections} detections, best {1000 * min(times):.0f} ms",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["floor", "cost", "survey"])
    p.add_argument("--heights", default="0.045,0.05,0.055,0.06,0.07,0.08,0.1,0.12", help="floor: face heights")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    if args.what == "floor":
        floor([float(x) for x in args.heights.split(",")])
    elif args.what == "cost":
        cost(args.repeat)
    else:
        survey(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
