"""The training loop: ``train(config) -> run_dir``. Reads top to bottom; no framework.

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
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from djldml.atomic import atomic_path
from djldml.clips import to_tensor
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


def train(cfg: TrainConfig, dataset: ClipStore | None = None) -> Path:  # noqa: C901, PLR0915 (steps: issue 12)
    """Train per ``cfg`` on ``dataset`` (default: the prepared dataset at ``cfg.data``); returns the run dir."""
    # --- processes and device. torchrun sets RANK; a plain `python -m trainer train` is one process. ---
    ddp = int(os.environ.get("RANK", -1)) != -1
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
    master = rank == 0
    cuda = device.type == "cuda"
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    use_amp = cfg.amp and cuda
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    run_dir = Path(cfg.out)
    if master:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.json")
        if not cfg.resume:
            (run_dir / "metrics.jsonl").write_text("")  # a fresh run starts a fresh log

    # --- data ---
    store = dataset if dataset is not None else open_store(cfg.data)
    train_videos, dev_videos = store.split("train"), store.split("dev")
    if not train_videos:
        raise ValueError("the dataset has no training videos")
    sampler = EpochClipSampler(store, train_videos, cfg.batch_size, cfg.clips_per_video, cfg.clips_per_group,
                               cfg.clip_length, cfg.clip_stride, cfg.seed, rank, world_size)
    clips = ClipDataset(store, train_videos, cfg.clip_length, cfg.clip_stride, Augmentation.from_config(cfg))
    loader = DataLoader(clips, batch_sampler=sampler, num_workers=cfg.num_workers, pin_memory=cuda,
                        persistent_workers=cfg.num_workers > 0, generator=torch.Generator().manual_seed(cfg.seed))
    steps_per_epoch = len(sampler)
    if master and not any(len(store.clip_starts(v.video_id, cfg.clip_length, cfg.clip_stride)) for v in dev_videos):
        warnings.warn("no usable development videos: best.pt is chosen on the training loss", stacklevel=2)

    # --- model, objective, optimizer ---
    torch.manual_seed(cfg.seed)  # same initial weights in every process (DDP also broadcasts rank 0's)
    net = build_network(cfg.preset, head=head_for(cfg.objective))
    if cfg.head_prior:
        init_head_prior(net, [v.bdi for v in train_videos])
    report = load_pretrained_backbone(net, cfg.pretrained) if cfg.pretrained else None
    if master and report is not None:
        print(report.summary())
    cfg = resolve_input_normalisation(cfg, report)  # "auto" → what the weights expect; the card records it
    normalisation = training_normalisation(cfg.to_dict())
    if master:
        save_config(cfg, run_dir / "config.json")
    net.to(device)
    objective = JointObjective(cfg.objective, cfg.sigma, cfg.l1_weight, cfg.dml_weight, cfg.n_bins,
                               cfg.hard_pairs, cfg.regression_loss)
    if not objective.uses_dml:
        net.embed.requires_grad_(False)  # no loss reads the embedding; DDP wants a gradient for every parameter
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(param_groups(net, cfg), lr=cfg.lr, fused=cuda or None)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)

    # --- resume ---
    start_epoch = 0
    state = {"best_score": math.inf, "best_epoch": -1, "bad_epochs": 0}
    if cfg.resume:
        if not (run_dir / "last.pt").is_file():
            raise FileNotFoundError(f"nothing to resume: {run_dir / 'last.pt'} does not exist")
        ckpt = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
        for key in ("objective", "preset"):
            if ckpt["config"][key] != getattr(cfg, key):
                raise ValueError(f"cannot resume: the checkpoint's {key} is {ckpt['config'][key]!r}")
        net.load_state_dict(ckpt["model"]["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, state = ckpt["epoch"] + 1, ckpt["state"]
        if master:
            print(f"resuming after epoch {ckpt['epoch']}")
    model = net
    if ddp:
        if cuda and net.config.batch_norm:  # batch statistics over the global batch
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        model = DistributedDataParallel(net, device_ids=[local_rank] if cuda else None)
    if master:
        print(f"{cfg.objective} on {cfg.preset} ({count_parameters(net) / 1e6:.2f} M parameters), {device}, "
              f"{world_size} process(es), {len(train_videos)} train / {len(dev_videos)} dev videos, "
              f"{steps_per_epoch} steps per epoch")

    # --- the loop ---
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        torch.manual_seed(int(np.random.default_rng([cfg.seed, rank, epoch]).integers(2**62)))  # dropout
        model.train()
        sums: dict[str, float] = {}
        n_steps = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (master and cfg.progress),
                   leave=False, unit="batch")
        for batch_clips, scores in bar:
            lr = lr_at(cfg, epoch * steps_per_epoch + n_steps, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            x = to_tensor(batch_clips, device, normalisation, cfg.input_dynamics)
            y = scores.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                out = model(x)
            loss = objective(out, y)  # losses compute in float32 whatever autocast did
            if not scaler.is_enabled() and not math.isfinite(loss.parts["total"]):
                raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {n_steps + 1}: lower lr?")
            scaler.scale(loss.total).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            for k, v in loss.parts.items():
                sums[k] = sums.get(k, 0.0) + v
            n_steps += 1
            bar.set_postfix(loss=f"{loss.parts['total']:.4f}")
        train_seconds = time.perf_counter() - t0

        # --- development check, checkpoints and early stopping (rank 0; the others wait for its verdict) ---
        stop = False
        if master:
            record = {"epoch": epoch, "lr": lr, "steps": n_steps,
                      **{f"train_{k}": v / max(n_steps, 1) for k, v in sums.items()},
                      "train_clips_per_s": n_steps * cfg.batch_size * world_size / train_seconds}
            results = predict_split(net, store, dev_videos, cfg.dev_clips_per_video, cfg.clip_length,
                                    cfg.clip_stride, cfg.eval_batch_size, use_amp, cfg.progress,
                                    normalisation=normalisation, dynamics=cfg.input_dynamics)
            dev: dict = point_metrics([r.true for r in results], [r.predicted for r in results]) if results else {}
            record.update({f"dev_{k}": v for k, v in dev.items()})
            score = dev["mae"] if dev else record["train_total"]
            improved = score < state["best_score"]
            if improved:
                state = {"best_score": score, "best_epoch": epoch, "bad_epochs": 0}
            else:
                state["bad_epochs"] += 1
            record.update(best_epoch=state["best_epoch"], seconds=time.perf_counter() - t0)
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            ckpt = {"model": model_dict(net), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                    "epoch": epoch, "state": dict(state), "dev": dev, "config": cfg.to_dict()}
            _save(ckpt, run_dir / "last.pt")
            if improved:
                _save(ckpt, run_dir / "best.pt")
            shown = f"dev MAE {dev['mae']:.3f}" if dev else f"train loss {score:.4f}"
            print(f"epoch {epoch + 1}/{cfg.epochs}: loss {record.get('train_total', math.nan):.4f}, {shown}"
                  f"{' (best)' if improved else ''}, {record['train_clips_per_s']:.1f} clips/s")
            stop = cfg.patience > 0 and state["bad_epochs"] >= cfg.patience
            if stop:
                print(f"early stop: no better development MAE for {cfg.patience} epochs")
        if ddp:
            flag = torch.tensor([int(stop)], device=device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop:
            break

    if ddp:
        dist.destroy_process_group()
    return run_dir

