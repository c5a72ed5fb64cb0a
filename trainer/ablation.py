"""The ablation of docs/method.md §3 ("Joint objective"), with seeds: each objective trained and evaluated with the
same data and settings.

``python -m trainer ablation --config trainer/configs/identities.toml --seeds 3`` trains ``regression``,
``ldl``, ``regression+dml`` and ``djldml`` once per seed (runs in ``<out>/<objective>/seed<k>``), evaluates each
best.pt on the same split, and prints one table:

* per objective, the mean ± sd over seeds of the video-level MAE, RMSE and Pearson r, beside the train-mean and
  train-median baselines (constant predictors: no seed);
* the paired differences djldml − ldl and djldml − regression (and each objective's MAE ÷ the train-mean's),
  with a 95 % bootstrap interval that resamples **videos and seeds** (:func:`two_way_bootstrap`).

Single runs on a few dozen videos are noise: a difference whose interval contains 0 is not a finding. The table
is also written to ``<out>/ablation.md`` and everything to ``ablation.json``. The paper's claim to check:
djldml < ldl < regression in error.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from djldml.losses import OBJECTIVES

from .config import TrainConfig
from .data import ClipStore
from .evaluate import evaluate
from .store import open_store
from .train import train

COMPARISONS = (("djldml", "ldl"), ("djldml", "regression"))


def two_way_bootstrap(values: np.ndarray, n_boot: int = 2000, seed: int = 0, statistic=None,
                      confidence: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap interval of a statistic of a ``[n_seeds, n_videos]`` array, resampling both axes.

    Each resample draws seeds with replacement and, independently, videos with replacement (a crossed two-way
    bootstrap: seeds and videos are both random samples, and the same videos are scored under every seed), and
    computes ``statistic(values[seeds][:, videos])`` (default: the mean of all entries). Pass a stack
    ``[k, n_seeds, n_videos]`` with a statistic of such a stack for ratios (e.g. MAE ÷ baseline MAE).
    ``scipy.stats.bootstrap`` resamples one axis of observations (jointly across paired samples), not two
    crossed factors, so it would hide the seed-to-seed spread; with one seed this reduces to its
    percentile bootstrap over videos. Returns {"estimate", "ci95": [lo, hi], "resamples"}. ValueError on an
    empty array.
    """
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("nothing to bootstrap")
    stat = statistic or (lambda v: float(v.mean()))
    n_seeds, n_videos = values.shape[-2:]
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        s = rng.integers(0, n_seeds, n_seeds)
        v = rng.integers(0, n_videos, n_videos)
        draws[b] = stat(values[..., s, :][..., v])
    alpha = (1 - confidence) / 2
    return {"estimate": stat(values), "ci95": [float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))],
            "resamples": n_boot}


def read_predictions(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(video ids, true BDI, predicted BDI) from an evaluation's predictions.csv, sorted by video id."""
    with open(path, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["video_id"])
    return ([r["video_id"] for r in rows], np.array([float(r["bdi_true"]) for r in rows]),
            np.array([float(r["bdi_predicted"]) for r in rows]))


def aggregate(runs: dict[str, list[dict[str, Any]]], baselines: dict[str, float], n_boot: int = 2000,
              seed: int = 0) -> dict[str, Any]:
    """Summarise per-seed, per-video predictions of each objective.

    ``runs``: objective → one entry per seed, each ``{"seed", "video_ids", "true", "predicted"}`` (the same videos
    in every run); ``baselines``: name → constant prediction (e.g. the train mean). Returns
    {"objectives": {objective: {mae|rmse|pearson_r: {"mean", "sd", "per_seed"}, "mae_ratio_train_mean": ...}},
    "baselines": {name: {"mae", "rmse"}}, "differences": {"djldml - ldl": bootstrap dict, ...}, "n_videos",
    "seeds"}. ValueError when runs disagree on the videos.
    """
    first = next(iter(runs.values()))[0]
    ids, true = first["video_ids"], np.asarray(first["true"], np.float64)
    abs_err: dict[str, np.ndarray] = {}
    out: dict[str, Any] = {"objectives": {}, "baselines": {}, "differences": {}, "n_videos": len(ids)}
    for name, seeds in runs.items():
        for r in seeds:
            if list(r["video_ids"]) != list(ids):
                raise ValueError(f"{name} seed {r['seed']} was evaluated on other videos")
        pred = np.array([r["predicted"] for r in seeds], np.float64)  # [n_seeds, n_videos]
        err = pred - true
        abs_err[name] = np.abs(err)
        per_seed = {
            "mae": np.abs(err).mean(1),
            "rmse": np.sqrt((err**2).mean(1)),
            "pearson_r": np.array([np.corrcoef(true, p)[0, 1] if p.std() > 0 else np.nan for p in pred]),
        }
        out["objectives"][name] = {
            "seeds": [r["seed"] for r in seeds],
            **{k: {"mean": float(np.nanmean(v)), "sd": float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0,
                   "per_seed": [float(x) for x in v]} for k, v in per_seed.items()},
        }
    for name, value in baselines.items():
        err = value - true
        out["baselines"][name] = {"value": value, "mae": float(np.abs(err).mean()),
                                  "rmse": float(np.sqrt((err**2).mean()))}
    if "train_mean" in baselines:
        base = np.abs(baselines["train_mean"] - true)
        for name, e in abs_err.items():
            stack = np.stack([e, np.broadcast_to(base, e.shape)])
            out["objectives"][name]["mae_ratio_train_mean"] = two_way_bootstrap(
                stack, n_boot, seed, statistic=lambda v: float(v[0].mean() / max(v[1].mean(), 1e-12)))
    for a, b in COMPARISONS:
        if a in abs_err and b in abs_err and abs_err[a].shape == abs_err[b].shape:
            out["differences"][f"{a} - {b}"] = two_way_bootstrap(abs_err[a] - abs_err[b], n_boot, seed)
    out["seeds"] = [r["seed"] for r in next(iter(runs.values()))]
    return out


def run_ablation(cfg: TrainConfig, objectives: tuple[str, ...] = OBJECTIVES, split: str = "test",
                 out: str | Path | None = None, dataset: ClipStore | None = None, n_bootstrap: int = 1000,
                 seeds: int = 1) -> dict[str, Any]:
    """Train + evaluate each objective with seeds ``cfg.seed … cfg.seed + seeds − 1``; return
    {"summary": :func:`aggregate`'s dict, "rows": per-objective, per-seed metrics, "table": str, ...}."""
    root = Path(out or Path(cfg.out).parent / "ablation")
    store = dataset if dataset is not None else open_store(cfg.data)
    runs: dict[str, list[dict[str, Any]]] = {}
    rows: dict[str, list[dict[str, Any]]] = {}
    baselines: dict[str, float] = {}
    for objective in objectives:
        for k in range(seeds):
            seed = cfg.seed + k
            run_cfg = cfg.with_overrides(objective=objective, seed=seed,
                                         out=str(root / objective.replace("+", "_") / f"seed{seed}"))
            metrics = _finished(run_cfg, split)
            run_dir = Path(run_cfg.out)
            if metrics is None:
                print(f"== {objective}, seed {seed} ==")
                run_dir = train(run_cfg, store)
                metrics = evaluate(run_dir, store, split=split, n_bootstrap=n_bootstrap, seed=seed,
                                   progress=cfg.progress, plots=False)
                metrics.pop("plots", None)
            else:
                print(f"== {objective}, seed {seed}: finished before, reused ==")
            ids, true, predicted = read_predictions(Path(metrics["out_dir"]) / "predictions.csv")
            runs.setdefault(objective, []).append({"seed": seed, "video_ids": ids, "true": true,
                                                   "predicted": predicted})
            rows.setdefault(objective, []).append({**metrics["model"], "seed": seed,
                                                   "best_epoch": _best_epoch(run_dir), "run_dir": str(run_dir)})
            baselines = {name: m["value"] for name, m in metrics["baselines"].items()}
    summary = aggregate(runs, baselines, n_bootstrap, cfg.seed)
    table = format_table(summary, split)
    root.mkdir(parents=True, exist_ok=True)
    (root / "ablation.md").write_text(table + "\n")
    result = {"split": split, "config": cfg.to_dict(), "seeds": seeds, "summary": summary, "rows": rows,
              "table": table}
    (root / "ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _finished(run_cfg: TrainConfig, split: str) -> dict[str, Any] | None:
    """The evaluation of a run made earlier with exactly this config (an interrupted ablation, or several
    ablation processes sharing ``--ablation-out`` to use more cores), else None."""
    run_dir = Path(run_cfg.out)
    metrics_path = run_dir / f"eval-{split}" / "metrics.json"
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        want = json.loads(json.dumps(run_cfg.to_dict()))
        defaults = TrainConfig().to_dict()  # a key added since the run was made has its default there
        # training rewrites input_normalisation "auto" as what it resolved to (trainer/normalisation.py)
        resolved = ("input_normalisation",) if want.get("input_normalisation") == "auto" else ()
        same = all(saved.get(k, defaults[k]) == v for k, v in want.items()
                   if k not in ("progress", "resume", *resolved))
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        done = bool(lines) and json.loads(lines[-1])["epoch"] == run_cfg.epochs - 1
        metrics = json.loads(metrics_path.read_text()) if same and done else None
    except (OSError, ValueError, KeyError):
        return None
    if metrics is not None:
        metrics["out_dir"] = str(metrics_path.parent)
    return metrics


def _best_epoch(run_dir: Path) -> int | None:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1]).get("best_epoch") if lines else None


def format_table(summary: dict[str, Any], split: str) -> str:
    """Markdown: mean ± sd over seeds per objective, the baselines, and the paired differences."""
    n_seeds = len(summary["seeds"])

    def ms(m: dict) -> str:
        return f"{m['mean']:.2f} ± {m['sd']:.2f}" if not np.isnan(m["mean"]) else "—"

    lines = [f"Ablation on {split}: {summary['n_videos']} videos × {n_seeds} seed(s); mean ± sd over seeds; "
             "MAE ÷ train-mean and differences with 95 % bootstrap intervals over videos and seeds", "",
             "| objective | MAE | RMSE | r | MAE ÷ train-mean MAE |", "|---|---|---|---|---|"]
    for name, m in summary["objectives"].items():
        ratio = m.get("mae_ratio_train_mean")
        ratio_s = f"{ratio['estimate']:.2f} [{ratio['ci95'][0]:.2f}, {ratio['ci95'][1]:.2f}]" if ratio else "—"
        lines.append(f"| {name} | {ms(m['mae'])} | {ms(m['rmse'])} | {ms(m['pearson_r'])} | {ratio_s} |")
    for name, m in summary["baselines"].items():
        lines.append(f"| baseline: {name.replace('_', ' ')} ({m['value']:.1f}) | {m['mae']:.2f} | {m['rmse']:.2f} "
                     f"| — | {'1.00' if name == 'train_mean' else '—'} |")
    if summary["differences"]:
        lines += ["", "| paired difference in MAE | mean | 95 % interval |", "|---|---|---|"]
        for name, d in summary["differences"].items():
            lines.append(f"| {name} | {d['estimate']:+.2f} | [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] |")
    return "\n".join(lines)
