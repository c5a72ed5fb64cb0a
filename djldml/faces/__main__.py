"""Try the face pipeline on a file: ``python -m djldml.faces VIDEO [--out clips.npz] [--preview preview.png]``.

Prints the quality report as JSON (or the typed error, with exit status 2). ``--all`` gives the trainer's dense
mode (every clip) instead of the service's sampled mode.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..errors import DJLDMLError
from .config import FaceConfig
from .pipeline import extract_face_clips
from .preview import save_contact_sheet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m djldml.faces", description=__doc__.splitlines()[0])
    p.add_argument("video")
    p.add_argument("--out", help="write clips, metadata and report to this .npz")
    p.add_argument("--preview", help="write a contact sheet of aligned faces (.png/.jpg)")
    p.add_argument("--max-clips", type=int, default=FaceConfig.max_clips, help="service mode: at most this many")
    p.add_argument("--all", action="store_true", help="trainer mode: every clip (ignores --max-clips)")
    p.add_argument("--stride", type=int, default=1, help="temporal stride inside a clip")
    p.add_argument("--fps", type=float, default=FaceConfig.fps,
                   help="frame rate of the clip timeline the video is resampled to (a model's card says its own)")
    p.add_argument("--detect-every", type=int, default=FaceConfig.detect_every)
    p.add_argument("--detect-width", type=int, default=FaceConfig.detect_width)
    p.add_argument("--max-duration", type=float, default=FaceConfig.max_duration_s, help="seconds")
    p.add_argument("--model", help="a .mar: cut clips exactly as the service does for this model (its card's clip "
                                   "frame rate, stride and selection; the options above are then ignored)")
    args = p.parse_args(argv)
    if args.model:
        from ..model_archive import open_archive  # imports torch: only when asked
        from .provenance import scoring_config

        config = scoring_config(open_archive(args.model).card.preprocessing, max_duration_s=args.max_duration)
    else:
        config = FaceConfig(
            max_clips=None if args.all else args.max_clips,
            temporal_stride=args.stride,
            fps=args.fps,
            detect_every=args.detect_every,
            detect_width=args.detect_width,
            max_duration_s=args.max_duration,
        )
    try:
        result = extract_face_clips(args.video, config)
    except DJLDMLError as exc:
        print(json.dumps({"error": exc.code, "message": exc.message, "details": exc.details}, indent=2))
        return 2
    report = result.quality.to_dict()
    if args.out:
        np.savez_compressed(
            args.out,
            clips=result.clips,
            first_frame=np.array([m.first_frame for m in result.meta], dtype=np.int64),
            last_frame=np.array([m.last_frame for m in result.meta], dtype=np.int64),
            start_time=result.start_times,
            report=np.array(json.dumps(report)),
        )
    if args.preview:
        save_contact_sheet(result.clips, args.preview)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
