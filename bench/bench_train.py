"""Training throughput (clips/s) of each network preset, as ratios against baselines measured in the same run.

    python -m bench.bench_train                   # all presets on CPU (c3d: a few minutes on 2 cores)
    python -m bench.bench_train --presets c3d-tiny c3d-small --batch 4 --steps 3
    python -m bench.bench_train --device cuda --amp --batch 16 --cpu-baseline   # GPU, plus c3d-small on the CPU
    python -m bench.bench_train --presets c3d-tiny --reference c3d-tiny --input-dynamics none mean_removed

A training step is what trainer/train.py does per batch: uint8 clips → to_tensor → forward (autocast with
``--amp`` on CUDA) → the djldml objective (LDL + label-aware histogram loss) → backward → AdamW step. Each
preset is also timed forward-only (inference mode, the serving path). Two ratios are printed, because absolute
clips/s on a shared machine mean little: train ÷ forward of the same preset (the cost of learning), and train ÷
the train throughput of the reference preset (default c3d-small) measured in this same run. With
``--cpu-baseline`` on a GPU, the reference preset is also trained on the CPU (float32, same batch) in the same run
and a third ratio, train ÷ that CPU baseline, says how many CPUs' worth of training the GPU does per preset.
``--input-dynamics`` measures each preset with each of the models' input options (djldml.clips.INPUT_DYNAMICS,
applied by to_tensor); the baseline is then the reference preset with the first option given.
"""

from __future__ import annotations

import argparse
import time

import torch

from djldml.clips import CLIP_SHAPE, INPUT_DYNAMICS, to_tensor
from djldml.losses import JointObjective
from djldml.network import PRESETS, build_network, count_parameters


def _timed(step, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``step`` (median of ``steps`` calls after ``warmup`` untimed ones)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def measure(preset: str, batch: int, steps: int, warmup: int, device: torch.device, amp: bool,
            dynamics: str = "none") -> dict:
    torch.manual_seed(0)
    net = build_network(preset).to(device)
    objective = JointObjective("djldml")
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    clips = torch.randint(0, 256, (batch, *CLIP_SHAPE), dtype=torch.uint8)
    scores = torch.linspace(0, 40, batch, device=device).round()  # a few equal labels: real histogram pairs
    use_amp = amp and device.type == "cuda"

    def train_step() -> None:
        net.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = net(to_tensor(clips, device, dynamics=dynamics))
        objective(out, scores).total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def forward_step() -> None:
        net.eval()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            net.clip_distributions(to_tensor(clips, device, dynamics=dynamics))

    train_s = _timed(train_step, steps, warmup, device)
    forward_s = _timed(forward_step, steps, warmup, device)
    return {"preset": preset, "dynamics": dynamics, "params_m": count_parameters(net) / 1e6, "train": batch / train_s,
            "forward": batch / forward_s}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--reference", default="c3d-small", choices=list(PRESETS),
                        help="preset whose training throughput is the baseline (always measured)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--input-dynamics", nargs="+", default=["none"], choices=INPUT_DYNAMICS,
                        help="the input options to measure (the first is the baseline's)")
    parser.add_argument("--cpu-baseline", action="store_true",
                        help="also train the reference preset on the CPU and print each preset's ratio to it")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    presets = [args.reference] + [p for p in args.presets if p != args.reference]
    results = {}
    for preset in presets:
        for mode in args.input_dynamics:
            name = preset if mode == "none" else f"{preset}/{mode}"
            results[name] = measure(preset, args.batch, args.steps, args.warmup, device, args.amp, mode)
            print(f"measured {name}", flush=True)
    reference = next(iter(results))  # the reference preset with the first input option
    cpu_ref = None
    if args.cpu_baseline and device.type != "cpu":
        cpu_ref = measure(args.reference, args.batch, args.steps, args.warmup, torch.device("cpu"), False)["train"]
        print(f"measured {args.reference} on cpu", flush=True)
    ref = results[reference]["train"]
    where = f"{device}{' + AMP' if args.amp else ''}"
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)}, torch {torch.__version__})"
    print(f"\ntraining throughput, batch {args.batch}, {where}, {torch.get_num_threads()} CPU threads; "
          f"baseline = {reference} training ({ref:.2f} clips/s)")
    if cpu_ref is not None:
        print(f"CPU baseline = {args.reference} training on the CPU, float32 ({cpu_ref:.2f} clips/s)")
    print(f"{'preset':24} {'params (M)':>10} {'train clips/s':>14} {'fwd clips/s':>12} {'train/fwd':>10} "
          f"{'train/baseline':>15}" + (f" {'train/CPU':>10}" if cpu_ref else ""))
    for name, r in results.items():
        print(f"{name:24} {r['params_m']:10.2f} {r['train']:14.2f} {r['forward']:12.2f} "
              f"{r['train'] / r['forward']:10.3f} {r['train'] / ref:15.3f}"
              + (f" {r['train'] / cpu_ref:10.1f}" if cpu_ref else ""))


if __name__ == "__main__":
    main()
