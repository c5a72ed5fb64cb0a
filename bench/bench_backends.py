"""Benchmark: TorchServe backend vs in-process backend on the same clips, as a ratio measured in one run.

    python -m bench.bench_backends [--mar model_store/djldml-demo.mar] [--clips 32] [--repeats 5]

Both backends load the same archive (the demo one when it exists, else a synthetic randomly initialised
c3d-small exported to a temp dir). TorchServe is started privately on free ports (its own temp dir) and
stopped at the end. Each repeat sends all clips; the figure is the median time per repeat. The ratio
TorchServe/in-process is the cost of the HTTP hop, .npy/JSON wire format and TorchServe's batching; the run
also checks that both backends returned the same distributions. Timings on a busy 2-core machine are noisy:
compare ratios from one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from devstack import start_torchserve
from djldml.clips import CLIP_SHAPE
from djldml.model_file import save_model
from djldml.network import build_network
from service.backends.in_process import InProcessBackend
from service.backends.torchserve import TorchServeBackend
from trainer.export import export_model

DEMO_MAR = Path("model_store/djldml-demo.mar")


def synthetic_archive(workdir: Path, preset: str) -> Path:
    """A randomly initialised network (seeded), exported like any model; its card says synthetic/untrained."""
    torch.manual_seed(0)
    save_model(build_network(preset), workdir / "model.pt")
    card = {"synthetic_demo": True, "description": f"untrained {preset} for benchmarks (random weights)"}
    return export_model(workdir / "model.pt", workdir / "store" / "djldml-bench.mar", "djldml-bench", "0", card)


def synthetic_clips(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *CLIP_SHAPE), dtype=np.uint8)  # noise, no faces: only speed is measured


def time_backend(backend, clips: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    out = backend.clip_distributions(clips)  # warm-up (first call pays allocation, lazy init)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = backend.clip_distributions(clips)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_backends", description=__doc__.split("\n\n")[0])
    p.add_argument("--mar", type=Path, default=None, help=f"archive to serve (default: {DEMO_MAR} if present)")
    p.add_argument("--preset", default="c3d-small", help="network of the synthetic archive when no --mar")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--clips-per-request", type=int, default=8, help="the worker's batch per TorchServe request")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="djldml-bench-") as tmp:
        tmp = Path(tmp)
        mar = args.mar or (DEMO_MAR if DEMO_MAR.exists() else synthetic_archive(tmp, args.preset))
        name = mar.stem
        clips = synthetic_clips(args.clips)
        print(f"archive {mar} | {args.clips} clips of {CLIP_SHAPE} | {args.repeats} repeats | "
              f"{args.clips_per_request} clips per TorchServe request | torch threads {torch.get_num_threads()}")

        local = InProcessBackend(mar, device="cpu")
        t_local, d_local = time_backend(local, clips, args.repeats)
        local.close()

        ts = start_torchserve(mar.parent, {name: mar.name}, workdir=tmp / "torchserve")
        try:
            clip_bytes = int(np.prod(CLIP_SHAPE))
            remote = TorchServeBackend(ts.inference_url, ts.management_url, name,
                                       max_request_bytes=args.clips_per_request * clip_bytes + 1024, mar_path=mar)
            t_remote, d_remote = time_backend(remote, clips, args.repeats)
            remote.close()
        finally:
            ts.stop()

    diff = float(np.abs(d_local - d_remote).max())
    print(f"in-process : {t_local:7.3f} s per {args.clips} clips  ({args.clips / t_local:7.1f} clips/s)")
    print(f"torchserve : {t_remote:7.3f} s per {args.clips} clips  ({args.clips / t_remote:7.1f} clips/s)")
    print(f"ratio torchserve / in-process time: {t_remote / t_local:.2f}x   max |Δp| = {diff:.2e}")
    return 0 if diff < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
