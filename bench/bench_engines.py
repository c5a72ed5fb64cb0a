"""Benchmark: the candidate CPU engines on the network's layers alone — how djldml.runtime's choice was made.

    python -m bench.bench_engines [--presets c3d-tiny,c3d-small] [--clips 32] [--engines openvino,onnxruntime,compile]

Same seeded random network (SYNTHETIC, untrained), same random clips of 16×112×112, batches of 16, min of
``--runs`` timed runs after a warm-up, eager PyTorch measured in the same run: prints each engine's speed-up
over eager, its set-up time (conversion/export/compilation) and the max |Δ| of the head's raw output. OpenVINO
is a project dependency; ONNX Runtime (``pip install onnxruntime onnx``) is not, and is skipped when missing.
``torch.compile`` needs a C++ compiler. Not part of ``python -m bench``: it is the record of a decision.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np
import torch

from bench.timing import min_time
from djldml import runtime
from djldml.clips import CLIP_SHAPE, to_tensor
from djldml.network import build_network

BATCH = 16


def _batched(run, x: torch.Tensor):
    return lambda: np.concatenate([run(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])


def _openvino(head: torch.nn.Module, net, x: torch.Tensor):
    compiled = runtime.compile_openvino(net)  # what the service runs: float32, converted from the network
    return compiled.head_output


def _onnxruntime(head: torch.nn.Module, net, x: torch.Tensor):
    import onnxruntime as ort

    buf = io.BytesIO()
    torch.onnx.export(head, (x[:1],), buf, dynamo=False, input_names=["clips"], output_names=["head"],
                      dynamic_axes={"clips": {0: "n"}, "head": {0: "n"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    return lambda b: session.run(None, {"clips": b.numpy()})[0]


def _compile(head: torch.nn.Module, net, x: torch.Tensor):
    compiled = torch.compile(head)
    with torch.inference_mode():
        compiled(x[:BATCH])  # compilation happens on the first call

    def run(b):
        with torch.inference_mode():
            return compiled(b).numpy()

    return run


ENGINES = {"openvino": _openvino, "onnxruntime": _onnxruntime, "compile": _compile}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_engines", description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="c3d-tiny,c3d-small")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--engines", default="openvino,onnxruntime,compile")
    args = p.parse_args(argv)
    clips = np.random.default_rng(0).integers(0, 256, (args.clips, *CLIP_SHAPE), dtype=np.uint8)
    x = to_tensor(clips)
    print(f"{args.clips} clips of {CLIP_SHAPE}, batches of {BATCH}, min of {args.runs} runs, torch threads "
          f"{torch.get_num_threads()} | SYNTHETIC random weights")
    print(f"{'preset':<10} {'engine':<12} {'seconds':>8} {'speed-up':>9} {'set-up s':>9} {'max |Δ| head':>13}")
    for preset in [s for s in args.presets.split(",") if s]:
        torch.manual_seed(0)
        net = build_network(preset).eval()
        head = runtime._HeadOutput(net).eval()
        with torch.inference_mode():
            t_eager, y_eager = min_time(_batched(lambda b, h=head: h(b).numpy(), x), args.runs)
        print(f"{preset:<10} {'eager':<12} {t_eager:>8.2f} {1.0:>8.2f}x {0.0:>9.2f} {0.0:>13.1e}", flush=True)
        for name in [e for e in args.engines.split(",") if e]:
            t = time.perf_counter()
            try:
                run = ENGINES[name](head, net, x)
            except ImportError as exc:
                print(f"{preset:<10} {name:<12} skipped: {exc}", flush=True)
                continue
            t_setup = time.perf_counter() - t
            t_run, y = min_time(_batched(run, x), args.runs)
            print(f"{preset:<10} {name:<12} {t_run:>8.2f} {t_eager / t_run:>8.2f}x {t_setup:>9.2f} "
                  f"{float(np.abs(y - y_eager).max()):>13.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
