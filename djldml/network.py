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
from .errors import ModelError

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
    "c3d-small": NetConfig(width=0.125, batch_norm=True, embedding_dim=64),  # CPU tests
    "c3d-tiny": NetConfig(width=0.0625, batch_norm=True, embedding_dim=32, dropout=0.2),  # unit tests, the demo
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


class PretrainedWeightsError(ModelError):
    """A pretrained-weights file that cannot be read or of which no tensor fits this network."""

    code = "pretrained_weights_mismatch"


#: Sports-1M C3D in the layout of the popular PyTorch port (DavideA/c3d-pytorch, ``c3d.pickle``): its layer
#: names in the order of this network's convolutions and fully connected layers. fc8 is the 487-class Sports-1M
#: classifier: it has no counterpart (the heads here are trained anew).
SPORTS1M_CONVS = ("conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b")
SPORTS1M_FCS = ("fc6", "fc7")
LAYOUTS = ("sports1m-c3d", "djldml")


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained_backbone` did: every source tensor is either loaded or skipped with a reason."""

    layout: str  # "sports1m-c3d" or "djldml": the layout the file's names matched
    loaded: dict[str, str]  # this network's name → the file's name
    skipped: dict[str, str]  # the file's name → why it was not loaded (shape mismatch, no counterpart, ...)
    missing: list[str]  # backbone tensors of this network the file did not provide (they stay as initialised)
    normalisation: str  # the input normalisation the weights expect (a name in djldml.clips.NORMALISATIONS)

    def summary(self) -> str:
        lines = [f"pretrained backbone ({self.layout} layout): {len(self.loaded)} tensors loaded, "
                 f"{len(self.skipped)} skipped, {len(self.missing)} backbone tensors not in the file; "
                 f"input normalisation {self.normalisation}"]
        lines += [f"  skipped {name}: {why}" for name, why in sorted(self.skipped.items())]
        return "\n".join(lines)


def pretrained_mapping(net: DJLDMLNet) -> dict[str, str]:
    """Source name → this network's name, for both layouts (their names are disjoint).

    Sports-1M C3D: ``conv1.weight`` → ``features.0.weight``, …, ``conv5b.*`` → the eighth Conv3d, ``fc6.*`` →
    ``fc.1.*``, ``fc7.*`` → ``fc.4.*``; a convolution's bias only when this network's has one (no batch norm).
    This project's layout (a state dict, a djldml model file or a training checkpoint): ``features.*`` and
    ``fc.*`` by name (batch-norm statistics included).
    """
    convs = [f"features.{i}" for i, m in enumerate(net.features) if isinstance(m, nn.Conv3d)]
    fcs = [f"fc.{i}" for i, m in enumerate(net.fc) if isinstance(m, nn.Linear)]
    assert len(convs) == len(SPORTS1M_CONVS) and len(fcs) == len(SPORTS1M_FCS), "C3D has 8 convs and 2 fcs"
    own = net.state_dict()
    mapping: dict[str, str] = {}
    for src, dst in zip(SPORTS1M_CONVS + SPORTS1M_FCS, convs + fcs):  # noqa: B905 (lengths asserted; 3.9-safe)
        for kind in ("weight", "bias"):
            if f"{dst}.{kind}" in own:
                mapping[f"{src}.{kind}"] = f"{dst}.{kind}"
    mapping.update({k: k for k in own if k.startswith(("features.", "fc."))})
    return mapping


def _state_dict_of(blob: object) -> tuple[dict, dict]:
    """(tensors by name, the training config when the file is a trainer checkpoint) of a loaded file."""
    config: dict = {}
    if isinstance(blob, dict) and isinstance(blob.get("model"), dict):  # trainer checkpoint
        config = blob.get("config") or {}
        blob = blob["model"]
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):  # model file / {"state_dict": ...}
        blob = blob["state_dict"]
    if not isinstance(blob, dict):
        raise PretrainedWeightsError(f"pretrained weights: expected a state dict, got {type(blob).__name__}")
    # DataParallel/DDP saves "module.<name>": the same tensor under a wrapper's prefix
    return {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v
            for k, v in blob.items()}, config


def read_pretrained(path: str) -> tuple[dict, dict]:
    """(state dict, training config or {}) of a local weights file; PretrainedWeightsError if unreadable."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # missing file, not a torch file, or code objects weights_only refuses
        raise PretrainedWeightsError(f"cannot read pretrained weights: {exc.__class__.__name__}: {exc}") from None
    return _state_dict_of(blob)


def _why_unmapped(name: str, net: DJLDMLNet) -> str:
    if name.startswith("fc8."):
        return "Sports-1M classifier (487 classes): the heads here are trained anew"
    if name.startswith(("head.", "embed.")):
        return "a head: the heads are trained anew"
    if name.split(".")[0] in SPORTS1M_CONVS and net.config.batch_norm:
        return "this network's convolutions have no bias (batch norm follows them)"
    return "no counterpart in this network"


def load_pretrained_backbone(net: DJLDMLNet, path: str) -> PretrainedReport:
    """Load a locally stored C3D state dict into the backbone (``features.*``, ``fc.*``) by an explicit mapping
    (:func:`pretrained_mapping`): Sports-1M C3D as the PyTorch port ships it (``c3d.pickle``), or this
    project's own layout. The heads stay as initialised. Never downloads anything.

    Sports-1M weights fit only the full-width presets without batch norm (``c3d``; ``c3d-bn`` takes the conv
    kernels and fcs but not the conv biases). They expect float RGB 0–255 input with no normalisation
    (the port's predict.py): the report's ``normalisation`` says so, and the trainer records it in the model card.

    Returns a :class:`PretrainedReport` (every tensor of the file loaded or skipped with its reason).
    Raises PretrainedWeightsError (a ModelError) when the file cannot be read or no tensor of it fits.
    """
    state, config = read_pretrained(path)
    mapping = pretrained_mapping(net)
    own = net.state_dict()
    loaded: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for src, value in state.items():
        dst = mapping.get(src) if isinstance(src, str) else None
        if not isinstance(value, torch.Tensor):
            skipped[str(src)] = "not a tensor"
        elif dst is None:
            skipped[src] = _why_unmapped(src, net)
        elif tuple(value.shape) != tuple(own[dst].shape):
            skipped[src] = f"shape {list(value.shape)} does not fit {dst} {list(own[dst].shape)}"
        else:
            loaded[dst] = src
    if not loaded:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:4]) or "the file is empty"
        raise PretrainedWeightsError(
            f"pretrained weights: none of the {len(state)} tensors fits this network ({net.config.width:g}× C3D"
            f"{', batch norm' if net.config.batch_norm else ''}) in the Sports-1M C3D or djldml layout — {reasons}")
    own.update({dst: state[src].to(own[dst].dtype) for dst, src in loaded.items()})
    net.load_state_dict(own)
    sports = any(src.split(".")[0] in SPORTS1M_CONVS + SPORTS1M_FCS for src in loaded.values())
    if sports:
        normalisation = "sports1m-c3d"
    else:  # this project's weights: the normalisation they were trained with (a checkpoint says; else default)
        normalisation = str(config.get("input_normalisation") or "default")
        normalisation = "default" if normalisation == "auto" else normalisation
    backbone = [k for k in own if k.startswith(("features.", "fc.")) and not k.endswith("num_batches_tracked")]
    return PretrainedReport(layout="sports1m-c3d" if sports else "djldml", loaded=loaded, skipped=skipped,
                            missing=[k for k in backbone if k not in loaded], normalisation=normalisation)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
