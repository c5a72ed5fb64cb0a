"""Running a loaded network on face clips: uint8 clips → per-clip distributions ``[N, 64]``.

Shared by ``trainer evaluate``, the in-process backend and the TorchServe handler, so all three compute the
same numbers: same ``to_tensor``, same batching, same dtype handling.
"""

from __future__ import annotations

import numpy as np
import torch

from .clips import to_tensor
from .network import DJLDMLNet

DEFAULT_BATCH = 16


@torch.inference_mode()
def clip_distributions(
    net: DJLDMLNet, clips: np.ndarray | torch.Tensor, batch_size: int = DEFAULT_BATCH, amp: bool = False
) -> np.ndarray:
    """Distributions for ``clips`` (uint8 ``[N, T, H, W, 3]``) as float64 ``[N, 64]``; ``net`` must be in eval mode.

    ``amp`` runs the convolutions in float16 autocast on CUDA; the softmax is always float32.
    """
    device = next(net.parameters()).device
    out = []
    for i in range(0, len(clips), batch_size):
        x = to_tensor(clips[i : i + batch_size], device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            out.append(net.clip_distributions(x).float().cpu())
    if not out:
        return np.zeros((0, net.head.out_features if net.config.head == "distribution" else 64))
    return torch.cat(out).double().numpy()
