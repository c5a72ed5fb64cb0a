"""The float32 ceiling that CPU engine speed-ups are measured against (``python -m bench backends``).

A convolution engine computing the same FLOPs as eager PyTorch can be at most ``peak / eager rate`` times
faster than it. The peak is measured, not assumed: ``bench/fma_peak.c`` (chains of vector FMAs, one OpenMP thread
per inference thread) compiled here by the system's C compiler with ``-march=native``. The network's FLOPs are
counted by :func:`gflop_per_clip` (a multiply-add counts 2; taps on the zero padding do not count).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from djldml.clips import CLIP_LENGTH, FACE_SIZE
from djldml.network import build_network

SOURCE = Path(__file__).with_name("fma_peak.c")


def fma_peak_gflops(threads: int) -> float | None:
    """float32 FMA peak of ``threads`` threads in GFLOP/s (best of 3 runs), or None without a C compiler/OpenMP."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory(prefix="djldml-peak-") as tmp:
        exe = Path(tmp) / "fma_peak"
        built = subprocess.run([cc, "-O3", "-march=native", "-fopenmp", str(SOURCE), "-o", str(exe)],
                               capture_output=True, check=False)
        if built.returncode != 0:
            return None
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_PROC_BIND": "false"}
        runs = [float(subprocess.run([str(exe)], capture_output=True, text=True, env=env, check=True).stdout)
                for _ in range(3)]
    return max(runs)


def _taps_inside(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Over all output positions of one dimension, how many kernel taps fall inside the input (not the padding)."""
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    return sum(1 for o in range(out) for j in range(kernel) if 0 <= o * stride - padding + j * dilation < size)


def gflop_per_clip(preset: str) -> float:
    """GFLOP of one clip through ``preset``'s layers up to the head (what the engines run): 2 per multiply-add of
    the convolutions and linear layers, not counting taps on the zero padding — engines skip those, so counting
    them (as ``torch.utils.flop_counter`` does: 77.1 instead of 66.0 GFLOP for c3d) would put a convolution
    engine above the FMA peak."""
    from djldml.runtime import _HeadOutput

    net = _HeadOutput(build_network(preset).eval())
    macs = 0

    def count(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, torch.nn.Conv3d):
            taps = 1
            for d, size in enumerate(inputs[0].shape[2:]):
                taps *= _taps_inside(size, module.kernel_size[d], module.stride[d], module.padding[d],
                                     module.dilation[d])
            macs += inputs[0].shape[0] * taps * module.in_channels // module.groups * module.out_channels
        elif isinstance(module, torch.nn.Linear):
            macs += inputs[0].numel() // module.in_features * module.weight.numel()

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, torch.nn.Conv3d | torch.nn.Linear)]
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, CLIP_LENGTH, FACE_SIZE, FACE_SIZE))
    finally:
        for h in hooks:
            h.remove()
    return 2 * macs / 1e9
