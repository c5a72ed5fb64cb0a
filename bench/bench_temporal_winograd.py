"""Benchmark: the choices of djldml.temporal_winograd — tile size and which layers — on the paper-size c3d.

    python -m bench.bench_temporal_winograd [--preset c3d] [--clips 4] [--runs 3]

On 2 cores OpenVINO ran c3d's direct 3D convolutions at ≈92 % of the float32 FMA peak (``python -m bench
backends``), so only fewer multiplications could make it faster without leaving float32: Winograd F(m, 3) along
time (djldml/temporal_winograd.py). Each variant below is the same network converted and compiled as the service
does (``djldml.runtime.compile_openvino``: 2 streams, each batch split across them) with the rewrite's settings
changed; eager PyTorch on the unrewritten network is timed in the same run; every variant's head output is
compared with eager's.

SYNTHETIC: a seeded, randomly initialised network and random clips. Not part of ``python -m bench``: it is the
record of a decision (docs/deploy.md, "The paper-size c3d").
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from bench.timing import min_time
from djldml import runtime, temporal_winograd
from djldml.clips import CLIP_LENGTH, FACE_SIZE
from djldml.network import build_network

#: name → (TILES, MIN_CHANNEL_PAIRS) of djldml.temporal_winograd; the last is what is served.
VARIANTS = {
    "direct convolution (before)": ((4, 2), 10**12),
    "F(2,3), >= 64x128 ch. pairs": ((2,), temporal_winograd.MIN_CHANNEL_PAIRS),
    "F(4,3)/F(2,3), every layer": ((4, 2), 0),
    "F(4,3)/F(2,3), >= 64x128": ((4, 2), temporal_winograd.MIN_CHANNEL_PAIRS),
    "F(4,3), >= 64x128 (served)": ((4,), temporal_winograd.MIN_CHANNEL_PAIRS),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_temporal_winograd", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="c3d")
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    net = build_network(args.preset).eval()
    x = torch.rand(args.clips, 3, CLIP_LENGTH, FACE_SIZE, FACE_SIZE) * 2 - 1
    head = runtime._HeadOutput(net)
    with torch.inference_mode():
        t_eager, y_eager = min_time(lambda: head(x).numpy(), args.runs)
    print(f"{args.preset}, {args.clips} clips, min of {args.runs} runs, {torch.get_num_threads()} threads | "
          "SYNTHETIC random weights")
    print(f"{'OpenVINO float32 network':<34} {'layers':>6} {'seconds':>8} {'vs eager':>9} {'vs direct':>10} "
          f"{'max |Δ| head':>13}")
    print(f"{'eager PyTorch':<34} {'':>6} {t_eager:>8.2f} {1.0:>8.2f}x {'':>10} {0.0:>13.1e}", flush=True)
    t_direct = None
    saved = temporal_winograd.TILES, temporal_winograd.MIN_CHANNEL_PAIRS
    measured: dict[str, str] = {}  # plan → the variant that ran it: the same network is not timed twice
    try:
        for name, (tiles, pairs) in VARIANTS.items():
            temporal_winograd.TILES, temporal_winograd.MIN_CHANNEL_PAIRS = tiles, pairs
            chosen = temporal_winograd.plan(net.features, CLIP_LENGTH)
            layers = len(chosen)
            if repr(chosen) in measured:
                print(f"{name:<34} {layers:>6}   the same network as \"{measured[repr(chosen)]}\"", flush=True)
                continue
            measured[repr(chosen)] = name
            compiled = runtime.compile_openvino(net)
            t, y = min_time(lambda c=compiled: c.head_output(x), args.runs)
            t_direct = t_direct or t
            print(f"{name:<34} {layers:>6} {t:>8.2f} {t_eager / t:>8.2f}x {t_direct / t:>9.2f}x "
                  f"{float(np.abs(y - y_eager).max()):>13.1e}", flush=True)
    finally:
        temporal_winograd.TILES, temporal_winograd.MIN_CHANNEL_PAIRS = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
