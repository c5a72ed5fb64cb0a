"""Fewer multiplications for the CPU engine: the large 3×3×3 convolutions rewritten as Winograd F(m, 3) along time.

Why: on CPUs the paper-size ``c3d`` spends 97 % of its time in 3D convolutions that OpenVINO already runs at
≈92 % of the cores' float32 FMA peak (``python -m bench backends`` prints both). Only doing fewer multiplications
can make it faster still without leaving float32; no maintained CPU library offers fast-algorithm (Winograd/FFT)
3D convolution, so the network handed to the engine is rewritten here with standard layers only, and the engine's
own convolution kernels do the work.

The algorithm: Winograd's minimal filtering along the time axis (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", CVPR 2016, eq. 7 and the F(2,3) / F(4,3) matrices of its sections 4.1-4.2; ``Y = Aᵀ[(G g) ⊙
(Bᵀ d)]``). For each tile of m output frames, the m + 2 input frames it reads are combined into m + 2 transformed
frames (``Bᵀ``), each convolved spatially (a 1×3×3 convolution) with a transformed filter (``G``, computed once
from the weights), and the m + 2 results combined into the m output frames (``Aᵀ``): F(4,3) does 6 spatial
convolutions where the 3×3×3 convolution does 12, F(2,3) 4 where it does 6. The transforms' constants are small
(at most 8), so in float32 the result differs from the direct convolution by rounding only (tests/serving/
test_temporal_winograd.py: ≤ 1e-5 relative; the served distribution within 1e-4 of PyTorch's, test_runtime.py).

Which layers: 3×3×3, stride 1, dilation 1, temporal padding 1, ungrouped, with at least ``MIN_CHANNEL_PAIRS``
input × output channels (below that the transforms' extra passes over memory cost more than the saved
multiplications: measured, ``python -m bench.bench_temporal_winograd``), as F(4,3) where the layer's input has a
multiple of 4 frames (``TILES``), else left as it is. For ``c3d`` that is conv2 to conv4b (16, 8, 8, 4, 4 frames);
conv5a/b see 2 frames, where F(2,3) does as many multiplications as the direct convolution once the taps on the
zero padding are not counted (4 per 2 frames). The smaller presets have none (their layers are bound by memory,
not multiplications).

Only the engine's copy is rewritten (:class:`EngineNetwork`, which djldml.runtime.to_openvino converts); PyTorch —
the reference, training and the GPU — runs the network as it is. The module is packed into .mar archives with the
handler, which may run on Python 3.9.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .network import DJLDMLNet

#: The layout of the network an OpenVINO IR was made from; recorded in the IR (djldml.runtime) so an IR written
#: before this rewrite is converted again rather than served slower.
LAYOUT = "temporal-winograd-1"

#: Input × output channels from which a convolution is rewritten: c3d's second layer (64 → 128) and up. Measured
#: (``python -m bench.bench_temporal_winograd --clips 8``, 2 cores): rewriting c3d's first layer (3 → 64) too made
#: the network slower (1.87× eager instead of 2.14×); rewriting every layer of c3d-small made it 0.57× as fast.
MIN_CHANNEL_PAIRS = 64 * 128

#: The tile sizes m tried, in order. F(4,3) saves more multiplications than F(2,3) and measured faster on c3d (2.14×
#: eager against 1.74×, ``python -m bench.bench_temporal_winograd --clips 8``); F(2,3) on conv5a/b's 2 frames saves
#: none and measured the same (2.16× with it, 2.15× without), so only F(4,3) is served. F(2,3) stays for the bench.
TILES = (4,)

#: (Bᵀ, G, Aᵀ) of F(m, 3) (Lavin & Gray 2016, sections 4.1 and 4.2).
MATRICES = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64),
        np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]]),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                  [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                 dtype=np.float64)),
}


def combine(coefficients: Sequence[float], terms: Sequence[torch.Tensor]) -> torch.Tensor:
    """``Σ cᵢ·termsᵢ`` over the non-zero coefficients, adding or subtracting where ``cᵢ = ±1`` (every multiply is
    one more element-wise pass in the engine). Raises ValueError when all coefficients are zero."""
    out: torch.Tensor | None = None
    for c, t in zip(coefficients, terms):  # noqa: B905 - no strict= on the handler's Python 3.9
        c = float(c)
        if c == 0:
            continue
        if out is None:
            out = t if c == 1 else -t if c == -1 else t * c
        elif c == 1:
            out = out + t
        elif c == -1:
            out = out - t
        else:
            out = out + t * c
    if out is None:
        raise ValueError("no non-zero coefficient")
    return out


class TemporalWinogradConv3d(torch.nn.Module):
    """What ``conv`` (a 3×3×3 Conv3d: stride 1, dilation 1, temporal padding 1, ungrouped) computes, by F(m, 3)
    along time.

    Input float32 ``[N, C_in, T, H, W]`` with T a multiple of ``m`` (2 or 4); output ``[N, C_out, T, H', W']`` as
    ``conv`` (spatial padding and size unchanged). The transformed filters are computed in float64 from
    ``conv``'s weights at construction; the module holds no reference to ``conv``. Raises ValueError for a
    convolution it cannot stand in for, or another ``m``.
    """

    def __init__(self, conv: torch.nn.Conv3d, m: int):
        super().__init__()
        if not supported(conv):
            raise ValueError(f"not a 3x3x3 stride-1 convolution with temporal padding 1: {conv}")
        if m not in MATRICES:
            raise ValueError(f"m must be one of {sorted(MATRICES)}; got {m}")
        self.bt, g_matrix, self.at = MATRICES[m]
        self.m = m
        self.spatial_padding = (0, int(conv.padding[1]), int(conv.padding[2]))
        g = conv.weight.detach().to(torch.float64)
        taps = [g[:, :, j:j + 1] for j in range(3)]  # [C_out, C_in, 1, 3, 3] each
        self.filters = torch.nn.ParameterList(
            torch.nn.Parameter(combine(row, taps).to(conv.weight.dtype).contiguous(), requires_grad=False)
            for row in g_matrix)
        # The bias goes into product 1 alone: its column of Aᵀ is all ones, so every output frame gets it once.
        assert all(row[1] == 1 for row in self.at)
        self.bias = (None if conv.bias is None
                     else torch.nn.Parameter(conv.bias.detach().clone(), requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, m = x.shape[2], self.m
        # Checked when run, not when traced for the engine: the trace is made at the frame count plan() chose m for.
        if not torch.jit.is_tracing() and (t % m or t == 0):
            raise ValueError(f"F({m},3) needs a positive multiple of {m} frames; got {t}")
        padded = F.pad(x, (0, 0, 0, 0, 1, 1))  # the convolution's temporal zero padding
        frames = [padded[:, :, j:j + t:m] for j in range(m + 2)]  # frame j of every tile: [N, C, T/m, H, W]
        products = [F.conv3d(combine(row, frames), w, self.bias if i == 1 else None, 1, self.spatial_padding)
                    for i, (row, w) in enumerate(zip(self.bt, self.filters))]  # noqa: B905
        outputs = [combine(row, products) for row in self.at]  # output frame k of every tile
        n, c, tiles, h, w = outputs[0].shape
        return torch.stack(outputs, 3).reshape(n, c, tiles * m, h, w)  # frames back in order


def supported(conv: torch.nn.Module) -> bool:
    """Whether :class:`TemporalWinogradConv3d` can stand in for ``conv``."""
    return (isinstance(conv, torch.nn.Conv3d) and tuple(conv.kernel_size) == (3, 3, 3)
            and tuple(conv.stride) == (1, 1, 1) and tuple(conv.dilation) == (1, 1, 1) and conv.groups == 1
            and isinstance(conv.padding, tuple) and conv.padding[0] == 1 and conv.padding_mode == "zeros")


def tile_frames(conv: torch.nn.Module, frames: int) -> int:
    """m for ``conv`` when its input has ``frames`` frames: 4, 2, or 0 for "leave it as it is"."""
    if not isinstance(conv, torch.nn.Conv3d) or not supported(conv):
        return 0
    if conv.in_channels * conv.out_channels < MIN_CHANNEL_PAIRS:
        return 0
    return next((m for m in TILES if frames % m == 0), 0)


def _frames_after(layer: Any, frames: int) -> int | None:
    """Frames out of ``layer`` for ``frames`` in, or None for a layer whose effect on time is not known here."""
    if isinstance(layer, (torch.nn.Conv3d, torch.nn.MaxPool3d, torch.nn.AvgPool3d)):
        def first(v):
            return v[0] if isinstance(v, tuple) else v
        kernel, stride, padding = first(layer.kernel_size), first(layer.stride), first(layer.padding)
        dilation = first(getattr(layer, "dilation", 1))
        if not all(isinstance(v, int) for v in (kernel, stride, padding, dilation)):  # e.g. padding="same"
            return None
        ceil = bool(getattr(layer, "ceil_mode", False))
        span = frames + 2 * padding - dilation * (kernel - 1) - 1
        return (-(-span // stride) if ceil else span // stride) + 1
    if isinstance(layer, (torch.nn.ReLU, torch.nn.BatchNorm3d, torch.nn.Dropout, torch.nn.Identity)):
        return frames
    return None


def plan(features: torch.nn.Sequential, frames: int) -> dict[int, int]:
    """Which layers of ``features`` (a Sequential of Conv3d / BatchNorm3d / ReLU / pooling layers) to rewrite for
    ``frames``-frame clips: {index: m} as :func:`tile_frames` picks. After a layer whose effect on time is not
    known here, nothing further is rewritten (the frame count is then unknown)."""
    chosen = {}
    for i, layer in enumerate(features):
        if frames <= 0:
            break
        m = tile_frames(layer, frames)
        if m:
            chosen[i] = m
        frames = _frames_after(layer, frames) or 0
    return chosen


def rewrite_features(features: torch.nn.Sequential, frames: int) -> tuple[torch.nn.Sequential, list[int]]:
    """``features`` with the layers :func:`plan` picks as :class:`TemporalWinogradConv3d`; the other layers are
    shared, not copied. Also returns the indices rewritten."""
    chosen = plan(features, frames)
    layers = [TemporalWinogradConv3d(layer, chosen[i]) if i in chosen and isinstance(layer, torch.nn.Conv3d)
              else layer for i, layer in enumerate(features)]
    return torch.nn.Sequential(*layers), sorted(chosen)


class EngineNetwork(torch.nn.Module):
    """What the CPU engine runs: clips → the head's raw output (``[N, 64]`` logits or ``[N, 1]`` score), the
    features rewritten by :func:`rewrite_features`. The embedding head is left out (inference does not use it);
    softmax stays in PyTorch (djldml.network.head_distributions)."""

    def __init__(self, net: DJLDMLNet, frames: int):
        super().__init__()
        self.features, self.rewritten = rewrite_features(net.features, frames)
        self.fc, self.head = net.fc, net.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.features(x)))
