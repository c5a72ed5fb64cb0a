"""Video-level evaluation, always beside the honest baselines (METHOD.md §5).

Each video is scored exactly as the service scores it: up to K clips evenly spread over the video
(``eval_clips_per_video``, as the service's ``max_clips``), ``djldml.inference.clip_distributions``, then
``djldml.prediction.predict_video``. Reported: MAE, RMSE and Pearson r of the model and of two constant
predictors — the mean and the median of the training labels — each with a bootstrap 95 % interval over videos,
and the paired interval of (model MAE − train-mean MAE). Writes ``predictions.csv`` (one row per video),
``metrics.json`` and PNG plots to the output directory, and warns when the training and evaluated splits share
subjects (AVEC2013 does), because then the figures overstate what happens on new people.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from djldml import labels
from djldml.inference import clip_distributions
from djldml.network import DJLDMLNet
from djldml.prediction import VideoPrediction, predict_video

from .data import ClipStore, evenly_spaced

BASELINES = ("train_mean", "train_median")


@dataclass
class VideoResult:
    video_id: str
    subject: str | None
    true: float
    prediction: VideoPrediction
    n_clips: int

    @property
    def predicted(self) -> float:
        return self.prediction.score


def predict_split(net: DJLDMLNet, store: ClipStore, videos: list, clips_per_video: int, clip_length: int = 16,
                  stride: int = 1, batch_size: int = 16, amp: bool = False, progress: bool = True,
                  ) -> list[VideoResult]:
    """One :class:`VideoResult` per video that has at least one complete clip (others are skipped, with a warning)."""
    was_training = net.training
    net.eval()
    results, skipped = [], 0
    for video in tqdm(videos, desc="evaluating", unit="video", disable=not progress, leave=False):
        starts = evenly_spaced(store.clip_starts(video.video_id, clip_length, stride), clips_per_video)
        if len(starts) == 0:
            skipped += 1
            continue
        clips = np.stack([store.read_clip(video.video_id, int(s), clip_length, stride) for s in starts])
        dists = clip_distributions(net, clips, batch_size=batch_size, amp=amp)
        fps = getattr(video, "fps", 0.0) or 0.0
        times = np.asarray(starts, np.float64) / fps if fps > 0 else None
        results.append(VideoResult(video.video_id, getattr(video, "subject", None), float(video.bdi),
                                   predict_video(dists, times), len(starts)))
    net.train(was_training)
    if skipped:
        warnings.warn(f"{skipped} video(s) without a complete clip were not evaluated", stacklevel=2)
    return results


def point_metrics(true, predicted) -> dict[str, Any]:
    """MAE, RMSE, Pearson r (None when undefined, e.g. a constant predictor) and n."""
    t, p = np.asarray(true, np.float64), np.asarray(predicted, np.float64)
    err = p - t
    r = None
    if len(t) > 1 and t.std() > 0 and p.std() > 0:
        r = float(np.corrcoef(t, p)[0, 1])
    return {"mae": float(np.abs(err).mean()) if len(t) else math.nan,
            "rmse": float(np.sqrt((err**2).mean())) if len(t) else math.nan, "pearson_r": r, "n": int(len(t))}


def bootstrap_intervals(true, predictions: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0,
                        reference: str | None = None) -> dict[str, dict[str, list[float]]]:
    """Percentile 95 % intervals of MAE and RMSE per predictor, resampling videos with replacement.

    All predictors share the same resamples; with ``reference`` each other predictor also gets the interval of
    its MAE minus the reference's (``mae_minus_<reference>``), a paired comparison.
    """
    t = np.asarray(true, np.float64)
    idx = np.random.default_rng(seed).integers(0, len(t), (n_boot, len(t)))
    abs_err = {name: np.abs(np.asarray(p, np.float64) - t) for name, p in predictions.items()}
    out: dict[str, dict[str, list[float]]] = {}
    for name, e in abs_err.items():
        mae, rmse = e[idx].mean(1), np.sqrt((e[idx] ** 2).mean(1))
        out[name] = {"mae_ci95": _percentiles(mae), "rmse_ci95": _percentiles(rmse)}
        if reference and name != reference:
            out[name][f"mae_minus_{reference}_ci95"] = _percentiles((e - abs_err[reference])[idx].mean(1))
    return out


def _percentiles(x: np.ndarray) -> list[float]:
    return [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))]


def shared_subjects(store: ClipStore, split: str) -> set[str]:
    """Subjects with videos in both the training split and ``split`` (unknown subjects never match)."""
    if split == "train":
        return set()

    def subjects(name: str) -> set[str]:
        return {v.subject for v in store.split(name) if getattr(v, "subject", None)}

    return subjects("train") & subjects(split)


def write_predictions(results: list[VideoResult], split: str, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "subject", "split", "bdi_true", "bdi_predicted", "abs_error", "std", "interval_low",
                    "interval_high", "severity_true", "severity_predicted", "n_clips"])
        for r in results:
            p = r.prediction
            w.writerow([r.video_id, r.subject or "", split, f"{r.true:g}", f"{p.score:.4f}",
                        f"{abs(p.score - r.true):.4f}", f"{p.std:.4f}", p.interval[0], p.interval[1],
                        labels.severity_of(r.true), p.severity, r.n_clips])


def evaluate(model: str | Path | DJLDMLNet, data: str | Path | ClipStore | None = None, split: str = "test",
             out_dir: str | Path | None = None, clips_per_video: int | None = None, batch_size: int | None = None,
             n_bootstrap: int = 1000, seed: int = 0, device: str = "auto", amp: bool = False, plots: bool = True,
             progress: bool = True) -> dict[str, Any]:
    """Evaluate ``model`` on ``split`` of ``data``; write predictions.csv, metrics.json and plots; return the metrics.

    ``model``: a run directory (its best.pt; its config.json gives the defaults for ``data``, the clip settings
    and ``clips_per_video``, and its metrics.jsonl the learning curves), a training checkpoint, a djldml model
    file, or a network. ``data``: a prepared-dataset root or an object with its interface. ``amp``: float16
    autocast on CUDA — use it only if the served model runs so too (``trainer export --amp``).
    """
    from . import plots as plotting
    from .config import TrainConfig, read_run_config
    from .train import load_net, open_store, resolve_device  # here: train.py imports this module

    run_dir = Path(model) if isinstance(model, str | Path) and Path(model).is_dir() else None
    cfg = (read_run_config(run_dir) if run_dir else None) or TrainConfig()
    net = model if isinstance(model, DJLDMLNet) else load_net(model, resolve_device(device))
    if data is None:
        if run_dir is None or read_run_config(run_dir) is None:
            raise ValueError("say which dataset to evaluate on (data=...)")
        data = cfg.data
    store = open_store(data) if isinstance(data, str | Path) else data
    out = Path(out_dir) if out_dir else (run_dir / f"eval-{split}" if run_dir else Path("runs") / f"eval-{split}")
    out.mkdir(parents=True, exist_ok=True)
    k = clips_per_video or cfg.eval_clips_per_video
    notes: list[str] = []

    shared = shared_subjects(store, split)
    if shared:
        notes.append(f"{len(shared)} subject(s) appear in both train and {split}: the figures are optimistic for "
                     "new people")
    videos = store.split(split)
    if not videos:
        raise ValueError(f"the dataset has no {split!r} videos")
    results = predict_split(net, store, videos, k, cfg.clip_length, cfg.clip_stride,
                            batch_size or cfg.eval_batch_size, amp, progress)
    if not results:
        raise ValueError(f"no {split!r} video has a complete clip")
    if len(results) < len(videos):
        notes.append(f"{len(videos) - len(results)} {split} video(s) without a complete clip were left out")
    true = np.array([r.true for r in results])
    preds = {"model": np.array([r.predicted for r in results])}
    train_labels = np.array([v.bdi for v in store.split("train")], np.float64)
    baseline_values: dict[str, float] = {}
    if len(train_labels):
        baseline_values = {"train_mean": float(train_labels.mean()), "train_median": float(np.median(train_labels))}
        preds.update({name: np.full_like(true, value) for name, value in baseline_values.items()})
    else:
        notes.append("no training videos: no baselines")
    intervals = bootstrap_intervals(true, preds, n_bootstrap, seed, "train_mean" if baseline_values else None)

    metrics: dict[str, Any] = {
        "split": split, "n_videos": len(results), "clips_per_video": k,
        "model": {**point_metrics(true, preds["model"]), **intervals["model"]},
        "baselines": {name: {"value": value, **point_metrics(true, preds[name]), **intervals[name]}
                      for name, value in baseline_values.items()},
        "bootstrap": {"resamples": n_bootstrap, "seed": seed, "unit": "video"},
        "warnings": notes,
    }
    for note in notes:
        warnings.warn(note, stacklevel=2)
    write_predictions(results, split, out / "predictions.csv")
    if plots:
        curves = run_dir / "metrics.jsonl" if run_dir and (run_dir / "metrics.jsonl").is_file() else None
        metrics["plots"] = plotting.write_all(true, preds["model"], baseline_values, out, curves)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    metrics["out_dir"] = str(out)
    return metrics


def format_report(metrics: dict[str, Any]) -> str:
    """A few lines for the terminal: the model beside the baselines, with intervals (no per-video scores)."""
    rows = [("model", metrics["model"])] + list(metrics["baselines"].items())
    lines = [f"{metrics['split']}: {metrics['n_videos']} videos, ≤{metrics['clips_per_video']} clips each",
             f"{'':14}{'MAE':>8} {'95% CI':>16}  {'RMSE':>8} {'95% CI':>16}  {'r':>6}"]
    for name, m in rows:
        r = "—" if m["pearson_r"] is None else f"{m['pearson_r']:.3f}"
        lines.append(f"{name:14}{m['mae']:8.3f} [{m['mae_ci95'][0]:6.2f}, {m['mae_ci95'][1]:6.2f}]  "
                     f"{m['rmse']:8.3f} [{m['rmse_ci95'][0]:6.2f}, {m['rmse_ci95'][1]:6.2f}]  {r:>6}")
    diff = metrics["model"].get("mae_minus_train_mean_ci95")
    if diff:
        lines.append(f"model MAE − train-mean MAE: 95% CI [{diff[0]:.2f}, {diff[1]:.2f}]")
    lines += [f"warning: {w}" for w in metrics["warnings"]]
    return "\n".join(lines)

