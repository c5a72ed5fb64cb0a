"""The training loop: ``train(config) -> run_dir``. Reads top to bottom; no framework.

``train`` is the loop itself, each step a named function below it in the order it runs: ``start_processes``,
``open_run_dir``, ``set_up`` (data, seeded network, objective, optimizer), ``resume``, ``wrap_for_ddp``; per epoch
``train_one_epoch``, then on rank 0 ``evaluate_dev``, ``epoch_record``, ``select_best``, ``write_epoch``; and
``all_stop`` (early stopping agreed by every process).

Run it with ``python -m trainer train --config trainer/configs/default.toml [--objective ...] [--set key=value]``,
or on N GPUs with ``torchrun --nproc_per_node N -m trainer train ...`` (DDP: one process per GPU; torchrun sets
RANK / LOCAL_RANK / WORLD_SIZE).

A run directory holds ``config.json``, ``metrics.jsonl`` (one line per epoch), ``last.pt`` (for ``--resume``) and
``best.pt`` (the epoch with the lowest development MAE). A checkpoint is a dict of plain types and tensors
(loadable with ``weights_only=True``): ``model`` — a djldml model file dict (``format``, ``net_config``,
``state_dict``), which ``trainer export`` ships as is — plus ``optimizer``, ``scaler``, ``epoch`` (the last
finished one), ``state`` (early-stopping bookkeeping), ``dev`` (its development metrics) and ``config``.

Randomness: the network is initialised from ``seed``; the data plan and augmentation are a function of
(``seed``, epoch) (trainer/data.py); dropout's generator is re-seeded from (``seed``, rank, epoch) at the start
of every epoch. So no generator state has to be saved: a resumed run continues exactly as an uninterrupted one,
on CPU bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from djldml.atomic import atomic_path
from djldml.clips import InputNormalisation, to_tensor
from djldml.device import resolve_device
from djldml.losses import JointObjective, head_for
from djldml.model_file import model_dict
from djldml.network import DJLDMLNet, build_network, count_parameters, load_pretrained_backbone

from .config import TrainConfig, save_config
from .data import Augmentation, ClipDataset, ClipStore, EpochClipSampler
from .evaluate import point_metrics, predict_split
from .normalisation import resolve_input_normalisation, training_normalisation
from .store import open_store


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr`` over the remaining steps (or constant)."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.lr_schedule == "constant":
        return cfg.lr
    total = max(cfg.epochs * steps_per_epoch - warmup, 1)
    progress = min((step - warmup) / total, 1.0)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


@torch.no_grad()
def init_head_prior(net: DJLDMLNet, scores) -> None:
    """Start a regression head at the mean training score, so the network begins as the train-mean baseline.

    The head's weights start at zero, so its output is its bias; AdamW moves a bias by about ``lr`` per step,
    far too slowly to travel tens of BDI points from the network's mid-scale start — a handicap of the
    regression ablations that has nothing to do with their objective. (The distribution head keeps its default
    initialisation: starting it at the training prior measurably slowed LDL training on synthetic data.)
    """
    if net.config.head == "regression":
        net.head.bias.fill_(float(np.mean(np.asarray(scores, dtype=np.float64))))


def param_groups(net: DJLDMLNet, cfg: TrainConfig) -> list[dict]:
    """AdamW groups, each with an ``lr_scale`` that the loop multiplies into the scheduled lr.

    Weight decay applies to kernels and weight matrices only (decaying biases and BN scales only hurts). A
    regression head outputs BDI points, not O(1) logits, and AdamW's steps are ≈ lr whatever the loss scale, so
    that head's lr is multiplied by ``regression_head_lr_scale`` (docs/method.md §4).
    """
    head = {id(p) for p in net.head.parameters()} if net.config.head == "regression" else set()
    trainable = [p for p in net.parameters() if p.requires_grad]
    groups = []
    for scale, params in ((1.0, [p for p in trainable if id(p) not in head]),
                          (cfg.regression_head_lr_scale, [p for p in trainable if id(p) in head])):
        groups.append({"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay,
                       "lr_scale": scale})
        groups.append({"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "lr_scale": scale})
    return [g for g in groups if g["params"]]


def _save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:  # a crash mid-write never leaves a truncated checkpoint
        torch.save(obj, tmp)


@dataclass(frozen=True)
class Processes:
    """Where this process runs: its DDP rank among ``world_size`` (0 of 1 without torchrun) and its device."""

    ddp: bool
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class Training:
    """What one run needs to train an epoch and to check it: the data, the network and its optimisation.

    ``net`` is the bare network (evaluated and saved); ``model`` is what the step calls (``net``, or its DDP
    wrapper). ``use_amp``/``amp_dtype``: autocast on CUDA only, bfloat16 where the GPU has it.
    """

    cfg: TrainConfig
    procs: Processes
    store: ClipStore
    train_videos: list
    dev_videos: list
    sampler: EpochClipSampler
    loader: DataLoader
    net: DJLDMLNet
    model: torch.nn.Module
    objective: JointObjective
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    trainable: list[torch.nn.Parameter]
    normalisation: InputNormalisation
    use_amp: bool
    amp_dtype: torch.dtype


@dataclass
class EpochStats:
    """One epoch's training figures: the last step's lr, the number of steps, the loss parts summed over steps."""

    lr: float | None
    n_steps: int
    sums: dict[str, float]
    seconds: float


def train(cfg: TrainConfig, dataset: ClipStore | None = None) -> Path:
    """Train per ``cfg`` on ``dataset`` (default: the prepared dataset at ``cfg.data``); returns the run dir."""
    procs = start_processes(cfg)
    run_dir = open_run_dir(cfg, procs.master)
    training = set_up(cfg, dataset, procs, run_dir)
    cfg = training.cfg  # with the input normalisation resolved
    start_epoch, state = resume(cfg, run_dir, training)
    wrap_for_ddp(training)
    if procs.master:
        print(f"{cfg.objective} on {cfg.preset} ({count_parameters(training.net) / 1e6:.2f} M parameters), "
              f"{procs.device}, {procs.world_size} process(es), {len(training.train_videos)} train / "
              f"{len(training.dev_videos)} dev videos, {len(training.sampler)} steps per epoch")

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        stats = train_one_epoch(training, epoch)
        stop = False
        if procs.master:  # the others wait for rank 0's verdict
            dev = evaluate_dev(training)
            record = epoch_record(training, epoch, stats, dev)
            improved = select_best(state, record["dev_mae"] if dev else record["train_total"], epoch)
            record.update(best_epoch=state["best_epoch"], seconds=time.perf_counter() - t0)
            write_epoch(run_dir, training, epoch, record, dict(state), dev, improved)
            stop = cfg.patience > 0 and state["bad_epochs"] >= cfg.patience
            if stop:
                print(f"early stop: no better development MAE for {cfg.patience} epochs")
        if all_stop(stop, procs):
            break

    if procs.ddp:
        dist.destroy_process_group()
    return run_dir


def start_processes(cfg: TrainConfig) -> Processes:
    """Join the DDP group when torchrun started this process (it sets RANK), pick the device, set threads/TF32."""
    ddp = int(os.environ.get("RANK", -1)) != -1
    local_rank = 0
    if ddp:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            device = torch.device(f"cuda:{local_rank}")
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
    else:
        rank, world_size, device = 0, 1, resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return Processes(ddp, rank, world_size, local_rank, device)


def open_run_dir(cfg: TrainConfig, master: bool) -> Path:
    """``cfg.out``, with the config saved and (unless resuming) an empty metrics log; written by rank 0 only."""
    run_dir = Path(cfg.out)
    if master:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.json")
        if not cfg.resume:
            (run_dir / "metrics.jsonl").write_text("")  # a fresh run starts a fresh log
    return run_dir


def set_up(cfg: TrainConfig, dataset: ClipStore | None, procs: Processes, run_dir: Path) -> Training:
    """The data, then the network (seeded), the objective and the optimizer — in this order, which fixes the
    random draws. Saves the config again once ``input_normalisation: "auto"`` is resolved from the weights."""
    cuda = procs.cuda
    store = dataset if dataset is not None else open_store(cfg.data)
    train_videos, dev_videos = store.split("train"), store.split("dev")
    if not train_videos:
        raise ValueError("the dataset has no training videos")
    sampler = EpochClipSampler(store, train_videos, cfg.batch_size, cfg.clips_per_video, cfg.clips_per_group,
                               cfg.clip_length, cfg.clip_stride, cfg.seed, procs.rank, procs.world_size)
    clips = ClipDataset(store, train_videos, cfg.clip_length, cfg.clip_stride, Augmentation.from_config(cfg))
    loader = DataLoader(clips, batch_sampler=sampler, num_workers=cfg.num_workers, pin_memory=cuda,
                        persistent_workers=cfg.num_workers > 0, generator=torch.Generator().manual_seed(cfg.seed))
    if procs.master and not any(len(store.clip_starts(v.video_id, cfg.clip_length, cfg.clip_stride))
                                for v in dev_videos):
        warnings.warn("no usable development videos: best.pt is chosen on the training loss", stacklevel=3)

    torch.manual_seed(cfg.seed)  # same initial weights in every process (DDP also broadcasts rank 0's)
    net = build_network(cfg.preset, head=head_for(cfg.objective))
    if cfg.head_prior:
        init_head_prior(net, [v.bdi for v in train_videos])
    report = load_pretrained_backbone(net, cfg.pretrained) if cfg.pretrained else None
    if procs.master and report is not None:
        print(report.summary())
    cfg = resolve_input_normalisation(cfg, report)  # "auto" → what the weights expect; the card records it
    if procs.master:
        save_config(cfg, run_dir / "config.json")
    net.to(procs.device)

    objective = JointObjective(cfg.objective, cfg.sigma, cfg.l1_weight, cfg.dml_weight, cfg.n_bins,
                               cfg.hard_pairs, cfg.regression_loss)
    if not objective.uses_dml:
        net.embed.requires_grad_(False)  # no loss reads the embedding; DDP wants a gradient for every parameter
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    use_amp = cfg.amp and cuda
    return Training(cfg, procs, store, train_videos, dev_videos, sampler, loader, net, net, objective,
                optimizer=torch.optim.AdamW(param_groups(net, cfg), lr=cfg.lr, fused=cuda or None),
                scaler=torch.amp.GradScaler(procs.device.type, enabled=use_amp and amp_dtype == torch.float16),
                trainable=[p for p in net.parameters() if p.requires_grad],
                normalisation=training_normalisation(cfg.to_dict()), use_amp=use_amp, amp_dtype=amp_dtype)


def resume(cfg: TrainConfig, run_dir: Path, training: Training) -> tuple[int, dict]:
    """The first epoch to run and the early-stopping state: (0, fresh) or, with ``cfg.resume``, from last.pt
    (weights, optimizer and scaler restored in ``training``).

    Raises FileNotFoundError without last.pt, ValueError when its objective or preset differs from ``cfg``'s.
    """
    if not cfg.resume:
        return 0, {"best_score": math.inf, "best_epoch": -1, "bad_epochs": 0}
    if not (run_dir / "last.pt").is_file():
        raise FileNotFoundError(f"nothing to resume: {run_dir / 'last.pt'} does not exist")
    ckpt = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    for key in ("objective", "preset"):
        if ckpt["config"][key] != getattr(cfg, key):
            raise ValueError(f"cannot resume: the checkpoint's {key} is {ckpt['config'][key]!r}")
    training.net.load_state_dict(ckpt["model"]["state_dict"])
    training.optimizer.load_state_dict(ckpt["optimizer"])
    training.scaler.load_state_dict(ckpt["scaler"])
    if training.procs.master:
        print(f"resuming after epoch {ckpt['epoch']}")
    return ckpt["epoch"] + 1, ckpt["state"]


def wrap_for_ddp(training: Training) -> None:
    """Under DDP, ``training.model`` becomes the DDP wrapper (batch norm synchronised on CUDA: statistics over the
    global batch); otherwise nothing changes."""
    procs = training.procs
    if not procs.ddp:
        return
    if procs.cuda and training.net.config.batch_norm:
        training.net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(training.net)
    training.model = DistributedDataParallel(training.net, device_ids=[procs.local_rank] if procs.cuda else None)


def train_one_epoch(training: Training, epoch: int) -> EpochStats:
    """One pass over the epoch's batches (plan and augmentation from (seed, epoch); dropout from (seed, rank,
    epoch)); raises FloatingPointError on a non-finite loss (without a grad scaler to skip the step)."""
    cfg, device, optimizer, scaler = training.cfg, training.procs.device, training.optimizer, training.scaler
    steps_per_epoch = len(training.sampler)
    t0 = time.perf_counter()
    training.sampler.set_epoch(epoch)
    torch.manual_seed(int(np.random.default_rng([cfg.seed, training.procs.rank, epoch]).integers(2**62)))  # dropout
    training.model.train()
    stats = EpochStats(lr=None, n_steps=0, sums={}, seconds=0.0)
    bar = tqdm(training.loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, unit="batch",
               disable=not (training.procs.master and cfg.progress))
    for batch_clips, scores in bar:
        lr = stats.lr = lr_at(cfg, epoch * steps_per_epoch + stats.n_steps, steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        x = to_tensor(batch_clips, device, training.normalisation, cfg.input_dynamics)
        y = scores.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=training.amp_dtype, enabled=training.use_amp):
            out = training.model(x)
        loss = training.objective(out, y)  # losses compute in float32 whatever autocast did
        if not scaler.is_enabled() and not math.isfinite(loss.parts["total"]):
            raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {stats.n_steps + 1}: lower lr?")
        scaler.scale(loss.total).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(training.trainable, cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        for k, v in loss.parts.items():
            stats.sums[k] = stats.sums.get(k, 0.0) + v
        stats.n_steps += 1
        bar.set_postfix(loss=f"{loss.parts['total']:.4f}")
    stats.seconds = time.perf_counter() - t0
    return stats


def evaluate_dev(training: Training) -> dict:
    """Point metrics (trainer/evaluate.py) on the development videos; empty when none has a complete clip."""
    cfg = training.cfg
    results = predict_split(training.net, training.store, training.dev_videos, cfg.dev_clips_per_video, cfg.clip_length,
                            cfg.clip_stride, cfg.eval_batch_size, training.use_amp, cfg.progress,
                            normalisation=training.normalisation, dynamics=cfg.input_dynamics)
    return point_metrics([r.true for r in results], [r.predicted for r in results]) if results else {}


def epoch_record(training: Training, epoch: int, stats: EpochStats, dev: dict) -> dict:
    """The epoch's line of metrics.jsonl (without ``best_epoch`` and ``seconds``, added once known)."""
    n = stats.n_steps
    return {"epoch": epoch, "lr": stats.lr, "steps": n,
            **{f"train_{k}": v / max(n, 1) for k, v in stats.sums.items()},
            "train_clips_per_s": n * training.cfg.batch_size * training.procs.world_size / stats.seconds,
            **{f"dev_{k}": v for k, v in dev.items()}}


def select_best(state: dict, score: float, epoch: int) -> bool:
    """Model selection and early-stopping bookkeeping, in place: is ``score`` (dev MAE, or the training loss
    without dev videos) the best so far? If so it becomes ``best_score``, else one more bad epoch."""
    improved = score < state["best_score"]
    if improved:
        state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    return improved


def write_epoch(run_dir: Path, training: Training, epoch: int, record: dict, state: dict, dev: dict,
                improved: bool) -> None:
    """Append ``record`` to metrics.jsonl, save last.pt (and best.pt when ``improved``), print a summary line."""
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    ckpt = {"model": model_dict(training.net), "optimizer": training.optimizer.state_dict(),
            "scaler": training.scaler.state_dict(), "epoch": epoch, "state": state, "dev": dev,
            "config": training.cfg.to_dict()}
    _save(ckpt, run_dir / "last.pt")
    if improved:
        _save(ckpt, run_dir / "best.pt")
    cfg = training.cfg
    shown = f"dev MAE {dev['mae']:.3f}" if dev else f"train loss {record['train_total']:.4f}"
    print(f"epoch {epoch + 1}/{cfg.epochs}: loss {record.get('train_total', math.nan):.4f}, {shown}"
          f"{' (best)' if improved else ''}, {record['train_clips_per_s']:.1f} clips/s")


def all_stop(stop: bool, procs: Processes) -> bool:
    """Rank 0's early-stopping verdict, broadcast so that every process leaves the loop together."""
    if not procs.ddp:
        return stop
    flag = torch.tensor([int(stop)], device=procs.device)
    dist.broadcast(flag, 0)
    return bool(flag.item())
