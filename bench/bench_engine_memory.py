"""Benchmark: the CPU engine's peak memory against clips per OpenVINO request — how REQUEST_BUDGET_BYTES was set.

    python -m bench.bench_engine_memory [--preset c3d] [--clips 16] [--per-request 1 2 4 8]

Each configuration runs in its own process (peak RSS is per process): it exports a seeded random ``--preset``
(SYNTHETIC, untrained) once, loads the archive in the in-process backend — eager PyTorch, then OpenVINO with
``clips_per_request`` forced to each value — runs ``--clips`` random clips once to warm up and twice timed, and
prints the best time and the process's peak RSS. Not part of ``python -m bench``: the record of a decision
(djldml/runtime.py, docs/deploy.md "Memory").
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np


def _child(mar: Path, per_request: int, n: int) -> None:
    from service.backends.in_process import InProcessBackend

    backend = InProcessBackend(mar, device="cpu", runtime="torch" if per_request == 0 else "openvino")
    if per_request:
        backend.net.clips_per_request = per_request
    clips = np.random.default_rng(0).integers(0, 256, (n, 16, 112, 112, 3), dtype=np.uint8)
    backend.clip_distributions(clips)
    times = []
    for _ in range(2):
        t = time.perf_counter()
        backend.clip_distributions(clips)
        times.append(time.perf_counter() - t)
    print(f"{min(times):.2f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_engine_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="c3d")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--per-request", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(Path(args.child[0]), int(args.child[1]), int(args.child[2]))
        return 0

    import torch

    from djldml import runtime, temporal_winograd
    from djldml.model_file import save_model
    from djldml.network import build_network
    from trainer.export import export_model

    with tempfile.TemporaryDirectory(prefix="djldml-bench-") as tmp:
        torch.manual_seed(0)
        net = build_network(args.preset).eval()
        save_model(net, Path(tmp) / "model.pt")
        card = {"synthetic_demo": True, "description": f"untrained {args.preset} for benchmarks (random weights)"}
        mar = export_model(Path(tmp) / "model.pt", Path(tmp) / "bench.mar", "bench", "0", card)
        with zipfile.ZipFile(mar) as z:
            sizes = {i.filename: i.file_size / 1e6 for i in z.infolist()}
        print(f"archive: model.pt {sizes['model.pt']:.0f} MB, OpenVINO IR {sizes[runtime.IR_BIN]:.0f} MB "
              f"({len(temporal_winograd.plan(net.features, 16))} layers as Winograd F(4,3))")
        served = runtime.request_clips(runtime.clips_per_request(net), args.clips, runtime.STREAMS)
        print(f"{args.preset}, {args.clips} clips, best of 2 timed runs, each configuration in its own process | "
              f"SYNTHETIC random weights | served: {served} clip(s) per request for {args.clips} clips")
        print(f"{'engine':<34} {'seconds':>8} {'peak RSS GiB':>13}")
        for per_request in [0, *sorted({v for v in args.per_request if v >= 1})]:
            out = subprocess.run([sys.executable, "-m", "bench.bench_engine_memory", "--child", str(mar),
                                  str(per_request), str(args.clips)], capture_output=True, text=True, check=True)
            seconds, rss = out.stdout.split()[-2:]
            name = "eager PyTorch" if per_request == 0 else f"OpenVINO, {per_request} clip(s) per request"
            print(f"{name:<34} {float(seconds):>8.2f} {float(rss):>13.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
