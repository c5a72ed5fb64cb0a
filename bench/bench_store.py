"""Random clips read per second from a prepared dataset, in this process (the figure docs/training.md reports).

    python -m bench.bench_store runs/synthetic/prepared [--clips 200] [--clip-length 16] [--seed 0]

Random clips from random videos, all decoding included (H.264 or JPEG face files, trainer/face_file.py). An
absolute rate on this machine: it is what sizes a DataLoader's ``num_workers``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from djldml.clips import CLIP_LENGTH
from trainer.face_file import StoreError
from trainer.store import PreparedDataset


def read_speed(ds: PreparedDataset, n_clips: int = 200, clip_length: int = CLIP_LENGTH, seed: int = 0) -> float:
    """Random clips read per second from ``ds``; StoreError when it holds no complete clip."""
    rng = np.random.default_rng(seed)
    pool = [(v.video_id, s) for v in ds.videos for s in ds.clip_starts(v.video_id, clip_length)]
    if not pool:
        raise StoreError("no complete clip in the dataset")
    picks = [pool[i] for i in rng.integers(0, len(pool), n_clips)]
    started = time.perf_counter()
    for video_id, start in picks:
        ds.read_clip(video_id, int(start), clip_length)
    return n_clips / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_store", description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="a prepared dataset (python -m trainer prepare --out ...)")
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--clip-length", type=int, default=CLIP_LENGTH)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    ds = PreparedDataset(args.root)
    print(f"{read_speed(ds, args.clips, args.clip_length, args.seed):.0f} random {args.clip_length}-frame clips/s "
          f"read from {args.root} (one process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
