"""The DJ-LDML network: a C3D-style 3D CNN backbone with a distribution head and an embedding head.

C3D layout (Tran et al. 2015), 3×3×3 convolutions, input ``[N, 3, 16, 112, 112]``:
conv1 64 → pool(1,2,2) → conv2 128 → pool → conv3a/b 256 → pool → conv4a/b 512 → pool → conv5a/b 512 →
pool(pad 0,1,1) → fc6 4096 → fc7 4096. A width multiplier scales every channel count (``c3d-small`` for CPU
tests and the demo model). The heads read fc7:
- ``distribution`` head: 64 logits over the BDI-II scores (LDL), or one score for the ``regression`` ablation;
- ``embedding`` head: an L2-normalised vector per clip for the metric-learning loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import labels
from .clips import CLIP_LENGTH, FACE_SIZE

# C3D channel counts for conv1, conv2, conv3, conv4, conv5 and the fc width, at width 1.
_C3D_CHANNELS = (64, 128, 256, 512, 512)
_C3D_FC = 4096


@dataclass(frozen=True)
class NetConfig:
    width: float = 1.0  # multiplier on every channel count and the fc width
    batch_norm: bool = False  # BN after each conv: helps training from scratch
    embedding_dim: int = 128
    head: str = "distribution"  # "distribution" (64 logits, LDL) or "regression" (one score)
    dropout: float = 0.5  # after fc6 and fc7, as in C3D

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


PRESETS: dict[str, NetConfig] = {
    "c3d": NetConfig(width=1.0, batch_norm=False),  # the paper's size (≈78M parameters)
    "c3d-bn": NetConfig(width=1.0, batch_norm=True),
    "c3d-small": NetConfig(width=0.125, batch_norm=True, embedding_dim=64),  # CPU tests and the demo
    "c3d-tiny": NetConfig(width=0.0625, batch_norm=True, embedding_dim=32, dropout=0.2),  # unit tests
}


def preset(name: str, **overrides) -> NetConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return NetConfig(**{**PRESETS[name].to_dict(), **overrides})


class NetOutput(NamedTuple):
    logits: torch.Tensor | None  # [N, 64] for the distribution head
    score: torch.Tensor | None  # [N] for the regression head
    embedding: torch.Tensor  # [N, D], unit L2 norm


def _conv(cin: int, cout: int, bn: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv3d(cin, cout, kernel_size=3, padding=1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm3d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


class DJLDMLNet(nn.Module):
    def __init__(self, config: NetConfig = PRESETS["c3d"]):
        super().__init__()
        if config.head not in ("distribution", "regression"):
            raise ValueError(f"head must be 'distribution' or 'regression', got {config.head!r}")
        self.config = config
        c1, c2, c3, c4, c5 = (max(4, round(c * config.width)) for c in _C3D_CHANNELS)
        fc = max(16, round(_C3D_FC * config.width))
        bn = config.batch_norm
        self.features = nn.Sequential(
            *_conv(3, c1, bn), nn.MaxPool3d((1, 2, 2), (1, 2, 2)),
            *_conv(c1, c2, bn), nn.MaxPool3d(2, 2),
            *_conv(c2, c3, bn), *_conv(c3, c3, bn), nn.MaxPool3d(2, 2),
            *_conv(c3, c4, bn), *_conv(c4, c4, bn), nn.MaxPool3d(2, 2),
            *_conv(c4, c5, bn), *_conv(c5, c5, bn), nn.MaxPool3d(2, 2, padding=(0, 1, 1)),
        )
        # 16×112×112 → 1×4×4 after the five pools (C3D's fc6 sees 512·1·4·4 = 8192 at width 1).
        t, s = CLIP_LENGTH // 16, (FACE_SIZE // 16 + 2) // 2
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c5 * t * s * s, fc), nn.ReLU(inplace=True), nn.Dropout(config.dropout),
            nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Dropout(config.dropout),
        )
        self.head = nn.Linear(fc, labels.NUM_BINS if config.head == "distribution" else 1)
        self.embed = nn.Linear(fc, config.embedding_dim)
        if config.head == "regression":
            # Start the regression output mid-scale rather than at 0 so early L1 gradients are informative.
            nn.init.zeros_(self.head.weight)
            nn.init.constant_(self.head.bias, labels.MAX_SCORE / 4)

    def forward(self, x: torch.Tensor) -> NetOutput:
        h = self.fc(self.features(x))
        out = self.head(h)
        emb = F.normalize(self.embed(h), dim=1)
        if self.config.head == "distribution":
            return NetOutput(logits=out, score=None, embedding=emb)
        return NetOutput(logits=None, score=out.squeeze(1), embedding=emb)

    @property
    def device(self) -> torch.device:
        """Where the weights are (djldml.runtime.ClipNetwork)."""
        return next(self.parameters()).device

    @torch.no_grad()
    def clip_distributions(self, x: torch.Tensor) -> torch.Tensor:
        """Per-clip probability distributions ``[N, 64]`` (float32) — the input of the prediction contract."""
        return head_distributions(self.config, self.head(self.fc(self.features(x))))


def head_distributions(config: NetConfig, head_out: torch.Tensor) -> torch.Tensor:
    """The head's raw output → per-clip distributions float32 ``[N, 64]``: softmax of the ``[N, 64]`` logits
    (distribution head, LDL), or the point distribution at the ``[N, 1]`` score (regression head). The one rule,
    also applied to what djldml.runtime's OpenVINO model returns."""
    if config.head == "distribution":
        return torch.softmax(head_out.float(), dim=1)
    return labels.point_distribution(head_out.squeeze(1).float())


def build_network(config: NetConfig | str = "c3d", **overrides) -> DJLDMLNet:
    cfg = preset(config, **overrides) if isinstance(config, str) else config
    return DJLDMLNet(cfg)


def load_pretrained_backbone(net: DJLDMLNet, path: str) -> list[str]:
    """Load a locally stored C3D state dict (e.g. Sports-1M weights converted to this layout) into the backbone.

    Only tensors whose names and shapes match are taken (``features.*``, ``fc.*``); the heads stay random.
    Returns the names loaded. Never downloads anything.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = net.state_dict()
    taken = {k: v for k, v in state.items()
             if k in own and own[k].shape == v.shape and k.startswith(("features.", "fc."))}
    own.update(taken)
    net.load_state_dict(own)
    return sorted(taken)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
