"""Training configuration: every hyperparameter as a plain value, read from a TOML file plus overrides.

The TOML file groups keys in sections ([data], [augment], [model], [loss], [optim], [train], [eval]) for the
reader; the sections are flattened into one :class:`TrainConfig`, so a key means the same wherever it is set
and an override is just ``key=value`` (``--set lr=3e-4``). Unknown keys are errors, not silently ignored.
``trainer/configs/default.toml`` holds the paper-faithful defaults (documented there, key by key);
``trainer/configs/synthetic.toml`` the small CPU settings of the synthetic demo.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError
from pydantic.dataclasses import dataclass

from djldml.clips import INPUT_DYNAMICS
from djldml.losses import OBJECTIVES

from .normalisation import check_name

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.toml"
SYNTHETIC_CONFIG = CONFIG_DIR / "synthetic.toml"


# pydantic checks every value on construction and on replace(): strict types (an int is accepted where a float
# is expected, nothing else is converted: "3" is not an int, true is not a number) and no unknown keys.
@dataclass(frozen=True, config=ConfigDict(strict=True, extra="forbid"))
class TrainConfig:
    # [data]
    data: str = "data/avec2013/prepared"  # root of a prepared dataset (trainer.store.PreparedDataset)
    clip_length: int = 16
    clip_stride: int = 1
    clips_per_video: int = 8  # random training clips drawn from each training video per epoch
    clips_per_group: int = 2  # clips of one video that sit together in a batch (equal-label pairs for DML)
    num_workers: int = 2
    # what of a clip the network sees (djldml.clips.INPUT_DYNAMICS): "none", "mean_removed", "temporal_diff";
    # recorded in the model card (inference.input_dynamics) and applied by to_tensor when serving
    input_dynamics: str = "none"
    # [augment]
    hflip: float = 0.5  # probability of mirroring a whole clip
    blur: float = 1.0  # max σ in pixels (per axis) of a random Gaussian blur of a whole clip (capture invariance)
    capture_rate_min: float = 0.5  # half the clips re-timed as if captured at [this, 1] × the timeline's rate
    brightness: float = 0.1  # added offset, uniform in ±brightness·255
    contrast: float = 0.1  # gain around the clip mean, uniform in 1 ± contrast
    crop_scale: float = 0.9  # random square crop of side ∈ [crop_scale, 1]·112, resized back to 112
    # [model]
    preset: str = "c3d"
    pretrained: str = ""  # optional local C3D state dict for the backbone (never downloaded)
    # pixel normalisation of the clips (djldml.clips.NORMALISATIONS), recorded in the model card: "auto" = what the
    # pretrained weights expect ("sports1m-c3d": RGB 0–255), else "default" ([-1, 1]) — trainer/normalisation.py
    input_normalisation: str = "auto"
    head_prior: bool = True  # start a regression head at the mean training score (the train-mean baseline)
    # [loss]
    objective: str = "djldml"
    sigma: float = 2.0
    l1_weight: float = 0.0
    dml_weight: float = 1.0
    n_bins: int = 100
    hard_pairs: bool = False
    regression_loss: str = "l1"
    regression_head_lr_scale: float = 10.0  # lr multiplier of a regression head (its output is in BDI points)
    # [optim]
    batch_size: int = 16  # per process (DDP: global batch = batch_size × world size)
    epochs: int = 30
    lr: float = 1e-4
    min_lr: float = 1e-6
    lr_schedule: str = "cosine"  # "cosine" (after warmup) or "constant"
    warmup_epochs: float = 1.0
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    # [train]
    seed: int = 0
    # CPU threads of torch (0: torch's default, one per core). Float sums depend on it, so a CPU run is
    # reproducible bit for bit only at the same thread count (and instruction set): docs/training.md
    threads: int = 0
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1"
    amp: bool = True  # mixed precision on CUDA (bfloat16 when supported, else float16 with a grad scaler)
    patience: int = 8  # early stopping: epochs without a better dev MAE; 0 disables
    out: str = "runs/djldml"
    resume: bool = False
    progress: bool = True  # tqdm bars
    # [eval]
    # the clip selection that scores a video (djldml.faces.timeline.clip_segments): at most this many clips, one
    # per equal time segment; `trainer export` records it in the model card and the service uses the card's
    eval_clips_per_video: int = 32
    test_time_mirror: bool = True  # average each clip's distribution with its mirror image's (recorded in the card)
    dev_clips_per_video: int = 16  # fewer for the per-epoch development check
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.input_dynamics not in INPUT_DYNAMICS:
            raise ValueError(f"input_dynamics must be one of {INPUT_DYNAMICS}, got {self.input_dynamics!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError("lr_schedule must be 'cosine' or 'constant'")
        for name in ("clip_length", "clips_per_video", "clips_per_group", "batch_size", "epochs", "n_bins",
                     "eval_clips_per_video", "dev_clips_per_video", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1")
        if self.threads < 0:
            raise ValueError("threads must be ≥ 0")
        if self.blur < 0:
            raise ValueError("blur must be ≥ 0")
        check_name(self.input_normalisation)
        if not 0 < self.capture_rate_min <= 1:
            raise ValueError("capture_rate_min must be in (0, 1]")
        if not 0 < self.crop_scale <= 1:
            raise ValueError("crop_scale must be in (0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        return _checked(lambda: replace(self, **overrides))


def _checked(build: Callable[[], TrainConfig]) -> TrainConfig:
    """``build()``, with pydantic's errors as ValueErrors that name the key: "unknown config keys: ...",
    "config key X must be int, got ...", or the check of ``__post_init__`` that failed."""
    try:
        return build()
    except ValidationError as exc:
        errors = exc.errors()
        unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "unexpected_keyword_argument")
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}") from None
        first = errors[0]
        if not first["loc"]:  # a check of __post_init__
            raise ValueError(first["msg"].removeprefix("Value error, ")) from None
        key = str(first["loc"][0])
        want = {f.name: f.type for f in fields(TrainConfig)}.get(key, "?")
        raise ValueError(f"config key {key} must be {want}, got {first['input']!r}") from None


def _flatten(doc: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in items:
            if k in flat:
                raise ValueError(f"config key {k} set twice")
            flat[k] = v
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` → (key, value); the value is read as TOML (``3e-4``, ``true``, ``"x"``), else as a string."""
    key, sep, raw = text.partition("=")
    if not sep:
        raise ValueError(f"override must be key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The config of ``path`` (default: default.toml) with ``overrides`` applied on top."""
    with open(path or DEFAULT_CONFIG, "rb") as f:
        values = _flatten(tomllib.load(f))
    values.update(overrides or {})
    return _checked(lambda: TrainConfig(**values))


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def read_run_config(run_dir: str | Path) -> TrainConfig | None:
    """The config a run was trained with (``config.json`` in its directory), or None."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    values = json.loads(path.read_text())
    known = {f.name for f in fields(TrainConfig)}  # a config written by a newer version may carry more
    return _checked(lambda: TrainConfig(**{k: v for k, v in values.items() if k in known}))
