"""Benchmark the inference backends, as ratios measured in one run.

    python -m bench.bench_backends [--presets c3d-tiny,c3d-small,c3d] [--clips 32] [--big-clips 8] [--runs 3]
                                   [--no-bf16] [--skip-runtime] [--skip-torchserve]
                                   [--mar model_store/djldml-demo.mar | --fresh] [--repeats 5] [--clips-per-request 8]

1. CPU engine: for each preset, a seeded random network (SYNTHETIC, untrained; its head scaled so its logits on
   the clips have std 4, like a trained model's, so |Δp| means something) is exported like any model and served
   by the in-process backend twice: forced to eager PyTorch (``DJLDML_RUNTIME=torch``) and with the engine
   djldml.runtime chooses (OpenVINO, float32). Same archive, same clips (32; 8 for the paper-size ``c3d``), min of
   ``--runs`` timed runs after a warm-up, eager and engine runs taken in turn; prints the speed-up and max |Δp|,
   each engine's GFLOP/s, the cores' float32 FMA peak measured before and after the table (bench/peak.py) and so
   the most an engine doing the direct convolution's multiplications could gain over eager; and beside them
   OpenVINO in bfloat16 (its default on AVX512-BF16/AMX CPUs; not served: over the 1e-4 bound).
2. TorchServe vs in-process on the same archive (the demo one when it exists): the cost of the HTTP hop,
   .npy/JSON wire format and TorchServe's batching; also checks both return the same distributions.

Timings on a busy 2-core machine are noisy: compare ratios from one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.peak import fma_peak_gflops, gflop_per_clip
from devstack import start_torchserve
from djldml import runtime
from djldml.clips import CLIP_SHAPE, to_tensor
from djldml.inference import clip_distributions
from djldml.model_file import load_model, save_model
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


def peaked_archive(workdir: Path, preset: str, clips: np.ndarray) -> Path:
    """A seeded random ``preset`` with its head scaled so the logits on ``clips`` have std 4, exported (with IR)."""
    torch.manual_seed(0)
    net = build_network(preset).eval()
    with torch.no_grad():
        z = net.fc(net.features(to_tensor(clips[:2]))) @ net.head.weight.T
        net.head.weight.mul_(4.0 / float(z.std()))
    workdir.mkdir(parents=True, exist_ok=True)
    save_model(net, workdir / "model.pt")
    card = {"synthetic_demo": True, "description": f"untrained {preset} for benchmarks (random weights, scaled head)"}
    return export_model(workdir / "model.pt", workdir / f"bench-{preset}.mar", f"bench-{preset}", "0", card)


def timed_in_turn(backends: list, clips: np.ndarray, runs: int,
                  summary: Callable[[list[float]], float] = min) -> list[tuple[float, np.ndarray]]:
    """Seconds per ``clip_distributions(clips)`` call of each backend (``summary`` of ``runs`` timed calls after one
    warm-up call, which pays allocation and lazy initialisation) and its last output. The backends' timed runs are
    taken in turn (eager, engine, eager, ...) so that the load of a shared machine, which changes by the minute,
    falls on each alike."""
    outs = [b.clip_distributions(clips) for b in backends]  # warm-up
    times: list[list[float]] = [[] for _ in backends]
    for _ in range(runs):
        for i, b in enumerate(backends):
            t = time.perf_counter()
            outs[i] = b.clip_distributions(clips)
            times[i].append(time.perf_counter() - t)
    return [(summary(ts), out) for ts, out in zip(times, outs, strict=True)]


class _Direct:
    """A prepared network behind the backend's one method (for the bf16 row, which no backend serves)."""

    def __init__(self, net):
        self.net = net

    def clip_distributions(self, clips: np.ndarray) -> np.ndarray:
        return clip_distributions(self.net, clips)


def bench_runtime(workdir: Path, presets: list[str], n_small: int, n_big: int, runs: int, bf16: bool) -> bool:
    """Eager PyTorch vs the chosen CPU engine through the in-process backend; True when every |Δp| ≤ 1e-4."""
    print(f"CPU engine: eager PyTorch vs djldml.runtime's choice ({runtime.choose('cpu', 'auto')}) | in-process "
          f"backend | min of {runs} runs | torch threads {torch.get_num_threads()} | SYNTHETIC random weights")
    bf16_head = f" {'bf16 speed-up':>13} {'bf16 |Δp|':>9}" if bf16 else ""
    print(f"{'preset':<10} {'clips':>5} {'eager s':>8} {'engine s':>9} {'speed-up':>9} {'max |Δp|':>9} "
          f"{'load s':>7} {'GFLOP/s eager':>13} {'GFLOP/s engine':>14}{bf16_head}  engine (model from)")
    ok = True
    bounds = []
    peak_before = fma_peak_gflops(torch.get_num_threads())
    for preset in presets:
        n = n_big if preset in ("c3d", "c3d-bn") else n_small
        clips = synthetic_clips(n)
        mar = peaked_archive(workdir / preset, preset, clips)
        eager = InProcessBackend(mar, device="cpu", runtime="torch")
        t = time.perf_counter()
        fast = InProcessBackend(mar, device="cpu", runtime="auto")
        t_load = time.perf_counter() - t
        (t_eager, d_eager), (t_fast, d_fast) = timed_in_turn([eager, fast], clips, runs)
        eager.close()
        engine = f"{runtime.runtime_name(fast.net)} ({getattr(fast.net, 'source', 'eager')})"
        fast.close()
        dp = float(np.abs(d_fast - d_eager).max())
        ok &= dp <= 1e-4
        extra = ""
        if bf16:  # OpenVINO's own default on this CPU; not served: it breaks the 1e-4 bound (docs/deploy.md)
            half = _Direct(runtime.compile_openvino(load_model(workdir / preset / "model.pt"), precision="bf16"))
            (t_half, d_half), = timed_in_turn([half], clips, runs)
            extra = f" {t_eager / t_half:>12.2f}x {float(np.abs(d_half - d_eager).max()):>9.1e}"
        gflop = n * gflop_per_clip(preset)
        bounds.append((preset, gflop / t_eager, gflop / t_fast))
        print(f"{preset:<10} {n:>5} {t_eager:>8.2f} {t_fast:>9.2f} {t_eager / t_fast:>8.2f}x {dp:>9.1e} "
              f"{t_load:>7.2f} {gflop / t_eager:>13.0f} {gflop / t_fast:>14.0f}{extra}  {engine}", flush=True)
    print_ceiling(bounds, peak_before)
    return ok


def print_ceiling(rates: list[tuple[str, float, float]], peak_before: float | None) -> None:
    """The float32 FMA peak of the inference threads, measured before and after the table (a difference means the
    machine's load changed under the table), and per preset each engine's share of it. GFLOP/s count the direct
    convolution's FLOPs for both engines, so an engine above 100 % of the peak does fewer multiplications
    (djldml.temporal_winograd); ``peak ÷ eager's rate`` bounds what any engine doing the direct convolution's
    multiplications could gain over eager. docs/deploy.md, "The paper-size c3d"."""
    threads = torch.get_num_threads()
    peak_after = fma_peak_gflops(threads)
    if peak_before is None or peak_after is None:
        print("float32 FMA peak: not measured (no C compiler with OpenMP)\n")
        return
    peak = max(peak_before, peak_after)
    print(f"float32 FMA peak of {threads} threads (bench/fma_peak.c): {peak_before:.0f} GFLOP/s before the table, "
          f"{peak_after:.0f} after")
    if min(peak_before, peak_after) < 0.9 * peak:
        print("  WARNING: the peak moved by over 10 %: the machine's load changed during the table; re-run it idle")
    print("GFLOP/s count the direct convolution's FLOPs (zero padding excluded): over 100 % of the peak means fewer "
          "multiplications (Winograd). Upper bound for an engine doing the direct convolution's multiplications:")
    for preset, eager, engine in rates:
        print(f"  {preset:<10} eager at {eager / peak:4.0%} of the peak, engine at {engine / peak:4.0%}; bound "
              f"{peak / eager:.2f}x eager")
    print()


def synthetic_clips(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *CLIP_SHAPE), dtype=np.uint8)  # noise, no faces: only speed is measured


def bench_torchserve(tmp: Path, mar: Path | None, preset: str, n_clips: int, repeats: int,
                     clips_per_request: int, fresh: bool = False) -> bool:
    """TorchServe vs in-process on one archive; True when both return the same distributions (1e-5)."""
    mar = mar or (DEMO_MAR if DEMO_MAR.exists() and not fresh else synthetic_archive(tmp, preset))
    name = mar.stem
    clips = synthetic_clips(n_clips)
    print(f"\nTorchServe vs in-process: archive {mar} | {n_clips} clips of {CLIP_SHAPE} | {repeats} repeats "
          f"(median) | {clips_per_request} clips per TorchServe request | torch threads {torch.get_num_threads()}")
    with zipfile.ZipFile(mar) as z:
        if "djldml/runtime.py" not in z.namelist():  # TorchServe runs the handler packed in the archive
            print("note: this archive was exported before djldml.runtime: TorchServe runs its packed handler on "
                  "eager PyTorch, the in-process backend the current code (OpenVINO, converted at load)")

    local = InProcessBackend(mar, device="cpu")
    (t_local, d_local), = timed_in_turn([local], clips, repeats, statistics.median)
    local.close()

    ts = start_torchserve(mar.parent, {name: mar.name}, workdir=tmp / "torchserve")
    try:
        clip_bytes = int(np.prod(CLIP_SHAPE))
        remote = TorchServeBackend(ts.inference_url, ts.management_url, name,
                                   max_request_bytes=clips_per_request * clip_bytes + 1024, mar_path=mar)
        (t_remote, d_remote), = timed_in_turn([remote], clips, repeats, statistics.median)
        remote.close()
    finally:
        ts.stop()

    diff = float(np.abs(d_local - d_remote).max())
    print(f"in-process : {t_local:7.3f} s per {n_clips} clips  ({n_clips / t_local:7.1f} clips/s)")
    print(f"torchserve : {t_remote:7.3f} s per {n_clips} clips  ({n_clips / t_remote:7.1f} clips/s)")
    print(f"ratio torchserve / in-process time: {t_remote / t_local:.2f}x   max |Δp| = {diff:.2e}")
    return diff < 1e-5


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_backends", description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="c3d-tiny,c3d-small,c3d", help="networks of the CPU-engine table")
    p.add_argument("--clips", type=int, default=32, help="clips per run (CPU-engine table and TorchServe part)")
    p.add_argument("--big-clips", type=int, default=8, help="clips per run for the paper-size c3d / c3d-bn")
    p.add_argument("--runs", type=int, default=3, help="timed runs per engine in the CPU-engine table (min)")
    p.add_argument("--skip-runtime", action="store_true", help="leave out the CPU-engine table")
    p.add_argument("--no-bf16", dest="bf16", action="store_false",
                   help="leave out the (not served) OpenVINO bfloat16 columns")
    p.add_argument("--skip-torchserve", action="store_true", help="leave out TorchServe vs in-process")
    p.add_argument("--mar", type=Path, default=None, help=f"archive to serve (default: {DEMO_MAR} if present)")
    p.add_argument("--preset", default="c3d-small", help="network of the synthetic archive when no --mar")
    p.add_argument("--fresh", action="store_true",
                   help="TorchServe part on a synthetic --preset archive exported now, not the demo archive")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--clips-per-request", type=int, default=8, help="the worker's batch per TorchServe request")
    args = p.parse_args(argv)

    ok = True
    with tempfile.TemporaryDirectory(prefix="djldml-bench-") as tmp:
        tmp = Path(tmp)
        if not args.skip_runtime:
            ok &= bench_runtime(tmp / "runtime", [x for x in args.presets.split(",") if x], args.clips,
                                args.big_clips, args.runs, args.bf16)
        if not args.skip_torchserve:
            ok &= bench_torchserve(tmp, args.mar, args.preset, args.clips, args.repeats, args.clips_per_request,
                                   args.fresh)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
