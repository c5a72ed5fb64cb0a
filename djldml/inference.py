"""Running a loaded network on face clips: uint8 clips → per-clip distributions ``[N, 64]``.

Shared by ``trainer evaluate``, the in-process backend and the TorchServe handler, so all three compute the
same numbers: same ``to_tensor``, same batching, same dtype handling.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from . import labels
from .clips import INPUT_DYNAMICS, InputNormalisation, input_normalisation, to_tensor
from .errors import ModelError
from .runtime import ClipNetwork

DEFAULT_BATCH = 16


def mirror_average(card_inference: dict | None) -> bool:
    """Whether a model card's ``inference`` section asks for mirror averaging (absent: no)."""
    return bool((card_inference or {}).get("mirror_average", False))


def input_dynamics(card_inference: dict | None) -> str:
    """A model card's ``inference.input_dynamics`` (djldml.clips.INPUT_DYNAMICS; absent: "none", the paper's
    input, which every card written before the option had). ModelError on an unknown value: a model whose input
    the service cannot reproduce must not serve."""
    value = (card_inference or {}).get("input_dynamics", "none")
    if value not in INPUT_DYNAMICS:
        raise ModelError(f"model card: unknown input_dynamics {value!r}; one of {INPUT_DYNAMICS}")
    return value


class ClipInputs(NamedTuple):
    """How a model's clips are fed to it, as its card's ``inference`` section records: the three arguments of
    :func:`clip_distributions` beyond the network and the clips."""

    mirror: bool = False
    normalisation: InputNormalisation | None = None
    dynamics: str = "none"


def clip_inputs(card_inference: dict | None) -> ClipInputs:
    """The card's mirror averaging, input normalisation and input dynamics, read once for every caller (the
    handler, the in-process backend, ``trainer evaluate``). ModelError on a malformed record."""
    return ClipInputs(mirror_average(card_inference), input_normalisation(card_inference),
                      input_dynamics(card_inference))


@torch.inference_mode()
def clip_distributions(
    net: ClipNetwork,
    clips: np.ndarray | torch.Tensor,
    batch_size: int = DEFAULT_BATCH,
    amp: bool = False,
    mirror: bool = False,
    normalisation: InputNormalisation | None = None,
    dynamics: str = "none",
) -> np.ndarray:
    """Distributions for ``clips`` (uint8 ``[N, T, H, W, 3]``) as float64 ``[N, 64]``; ``net`` must be in eval mode:
    a DJLDMLNet or what djldml.runtime prepared from one (e.g. its OpenVINO model).

    ``amp`` runs the convolutions in float16 autocast on CUDA; the softmax is always float32.
    ``mirror``: each clip's distribution is the mean of the network's on the clip and on its mirror image
    (flipped left-right), q(c) = ½ (q_net(c) + q_net(flip(c))). A face is about symmetric and BDI-II does not
    depend on the side, so this removes what the network learnt about left and right — a front-camera (mirrored)
    recording then scores like the original, up to the landmarks' own asymmetry (docs/method.md). Twice the
    compute.
    ``normalisation``: the card's input normalisation (djldml.clips.input_normalisation; None: the default).
    ``dynamics``: the card's input dynamics (:func:`input_dynamics`), applied by ``to_tensor``.
    """
    device = net.device
    out = []
    for i in range(0, len(clips), batch_size):
        x = to_tensor(clips[i : i + batch_size], device, normalisation, dynamics)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            q = net.clip_distributions(x).float()
            if mirror:
                q = 0.5 * (q + net.clip_distributions(x.flip(-1)).float())
            out.append(q.cpu())
    if not out:
        return np.zeros((0, labels.NUM_BINS))
    return torch.cat(out).double().numpy()
