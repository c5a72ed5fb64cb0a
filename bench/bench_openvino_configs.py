"""Benchmark: OpenVINO CPU configurations for one network, eager PyTorch measured in turn with them.

    python -m bench.bench_openvino_configs [--preset c3d] [--clips 8] [--rounds 4]

The record of how djldml.runtime's OpenVINO settings were chosen (docs/deploy.md, "CPU inference engine"). A
seeded random network (SYNTHETIC, untrained) and random clips of 16×112×112; every configuration float32 with
the threads of PyTorch's pool. Each round times eager and every configuration once, one after the other, so a
shared machine's load (which changes by the minute) falls on all alike; prints min and median over the rounds,
each min's ratio to eager's min and max |Δ| of the head's raw output. Not part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from djldml import runtime
from djldml.clips import CLIP_LENGTH, FACE_SIZE
from djldml.network import build_network


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_openvino_configs", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="c3d")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)

    torch.manual_seed(0)
    net = build_network(args.preset).eval()
    x = torch.randn(args.clips, 3, CLIP_LENGTH, FACE_SIZE, FACE_SIZE)
    xn = x.numpy()
    head = runtime._HeadOutput(net)
    ov = runtime._openvino()
    model = runtime.to_openvino(net)
    core = ov.Core()
    threads = runtime.inference_threads()
    f32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}

    def compiled(config: dict, batch: int | None = None):
        m = model.clone()
        if batch:  # static input shape instead of the dynamic batch
            m.reshape({0: [batch, 3, CLIP_LENGTH, FACE_SIZE, FACE_SIZE]})
        return core.compile_model(m, "CPU", config)

    def one_request(c):
        request = c.create_infer_request()
        return lambda: np.array(request.infer({0: xn})[0])

    def split(c, parts: int):  # the batch in `parts` pieces on an AsyncInferQueue (what the runtime does)
        queue, out = ov.AsyncInferQueue(c, parts), {}
        queue.set_callback(lambda request, i: out.__setitem__(i, np.array(request.get_output_tensor(0).data)))
        pieces = np.array_split(xn, parts)

        def run():
            for i, piece in enumerate(pieces):
                queue.start_async({0: piece}, i)
            queue.wait_all()
            return np.concatenate([out[i] for i in range(parts)])
        return run

    def eager():
        with torch.no_grad():
            return head(x).numpy()

    latency, throughput = {"PERFORMANCE_HINT": "LATENCY"}, {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2}
    configs = {
        "eager PyTorch": eager,
        "LATENCY, dynamic batch": one_request(compiled({**f32, **latency})),
        f"LATENCY, static batch {args.clips}": one_request(compiled({**f32, **latency}, args.clips)),
        "LATENCY, 1 thread": one_request(compiled({**f32, **latency, "INFERENCE_NUM_THREADS": 1})),
        "THROUGHPUT 2 streams, batch split in 2 (served)": split(compiled({**f32, **throughput}), 2),
    }
    reference = eager()
    times: dict[str, list[float]] = {k: [] for k in configs}
    diffs = {k: float(np.abs(f() - reference).max()) for k, f in configs.items()}  # also the warm-up
    for _ in range(args.rounds):
        for name, f in configs.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    t_eager = min(times["eager PyTorch"])
    print(f"{args.preset}, {args.clips} clips, {threads} threads, {args.rounds} rounds | SYNTHETIC random weights")
    print(f"{'configuration':<48} {'min s':>7} {'median s':>9} {'speed-up (min)':>15} {'max |Δ|':>8}")
    for name, ts in times.items():
        print(f"{name:<48} {min(ts):>7.2f} {statistics.median(ts):>9.2f} {t_eager / min(ts):>14.2f}x "
              f"{diffs[name]:>8.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
