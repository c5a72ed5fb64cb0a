"""Video-level evaluation, always beside the honest baselines (docs/method.md §5), on one of two paths:

- **service** (``--videos SOURCE``, the figure to report): the raw videos of a dataset source (CSV or AVEC
  root) are scored exactly as ``POST /predict`` scores them — :func:`djldml.scoring.score_video` with the clip
  geometry in time, landmark settings and clip selection of the model card (or of the run's config), batches
  of :data:`djldml.scoring.BATCH_CLIPS` clips, the card's mirror averaging, then ``predict_video``. For the
  same model and video the score equals the service's ``bdi_score`` (a test asserts it to 1e-6). A video the
  service would refuse (no face, too short, …) is counted by its error code, not scored.
- **store** (default; fast, for model selection during training): up to ``eval_clips_per_video`` clips evenly
  spread over the valid clip starts of the prepared face store. Not the service's clips; labelled as such.

Reported: MAE, RMSE and Pearson r of the model and of two constant predictors — the mean and the median of the
training labels — each with a bootstrap 95 % interval over videos, and the paired interval of (model MAE −
train-mean MAE); whether the uncertainty means what it says (coverage and mean width of the 90 % interval,
Brier score of the band probabilities, a reliability plot: trainer/uncertainty.py) before and after the model's
calibration (djldml/calibration.py; the card's, a run's ``calibration.json`` or ``calibration=``); and
sensitivity, specificity and ROC AUC at the BDI-II cut-offs 14 and 20 beside the baselines' (trainer/screening.py).
Writes ``predictions.csv`` (one row per video), ``metrics.json`` and PNG plots to the output
directory, and warns when the training and evaluated splits share subjects (AVEC2013 does), because then the
figures overstate what happens on new people.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from djldml import labels
from djldml.calibration import Calibration, calibration_of
from djldml.clips import InputNormalisation
from djldml.device import resolve_device
from djldml.errors import DJLDMLError
from djldml.inference import clip_distributions, clip_inputs
from djldml.model_file import load_model, read_model_file
from djldml.network import DJLDMLNet
from djldml.prediction import VideoPrediction, predict_video
from djldml.runtime import ClipNetwork
from djldml.scoring import score_video

from .calibration_file import read_calibration, run_calibration
from .data import ClipStore, evenly_spaced
from .normalisation import training_normalisation
from .screening import screening_metrics
from .store import open_store
from .uncertainty import uncertainty_report

if TYPE_CHECKING:
    from .config import TrainConfig

BASELINES = ("train_mean", "train_median")


@dataclass
class VideoResult:
    video_id: str
    subject: str | None
    true: float
    prediction: VideoPrediction  # as the service gives it: with the model's calibration, if any
    n_clips: int
    raw: VideoPrediction | None = None  # the same clips without calibration (None: there is no calibration)

    @property
    def uncalibrated(self) -> VideoPrediction:
        return self.raw if self.raw is not None else self.prediction

    @property
    def predicted(self) -> float:
        return self.prediction.score


@dataclass
class ScoringModel:
    """A loaded network with what scoring a raw video needs beyond it, as the service would have it."""

    net: ClipNetwork  # a DJLDMLNet, or for an archive what djldml.runtime made of it
    preprocessing: dict[str, Any]  # the card's record: clip geometry in time, landmark settings, selection
    mirror: bool  # the card's inference.mirror_average
    clip_batch: int  # the archive handler's clip_batch
    source: str  # "archive" (a .mar, as served) or "run" (a run dir / checkpoint, as `trainer export` would pack)
    normalisation: InputNormalisation | None = None  # the card's inference.input_normalisation
    calibration: Calibration | None = None  # the card's inference.calibration (a run: its calibration.json)
    dynamics: str = "none"  # the card's inference.input_dynamics (djldml.clips.INPUT_DYNAMICS)


def scoring_model(model: str | Path, device: Any = "cpu") -> ScoringModel:
    """The model at ``model`` — a .mar archive, a run directory or a training checkpoint — ready to score videos
    like the service. A run's card facts come from its config, as ``trainer export`` would write them."""
    from djldml.model_archive import open_archive

    from .config import read_run_config
    from .export import CLIP_BATCH, training_inference, training_preprocessing

    path = Path(model)
    if path.suffix == ".mar":
        archive = open_archive(path)
        # the engine the service would run it on (djldml.runtime), so the scores equal the service's
        mirror, normalisation, dynamics = clip_inputs(archive.card.inference)
        return ScoringModel(archive.load_for_inference(device), archive.card.preprocessing, mirror,
                            int(archive.handler_knobs.get("clip_batch", CLIP_BATCH)), "archive",
                            normalisation, calibration_of(archive.card.inference), dynamics)
    cfg = read_run_config(path) if path.is_dir() else None
    training = asdict(cfg) if cfg is not None else (read_model_file(path)[1].get("config") or {})
    inference = training_inference(training, path)  # the card's inference section, as `trainer export` writes it
    mirror, normalisation, dynamics = clip_inputs(inference)
    return ScoringModel(load_model(path, device), training_preprocessing(training), mirror, CLIP_BATCH, "run",
                        normalisation, calibration_of(inference), dynamics)


def predict_videos(model: ScoringModel, videos: list, progress: bool = True) -> tuple[list[VideoResult], Counter]:
    """Score raw videos (``trainer.manifest.SourceVideo``) through the service's path; returns the results and
    the error codes of the videos the service would refuse."""
    was_training = model.net.training
    model.net.eval()
    results, refused = [], Counter()

    seen: list[np.ndarray] = []  # this video's clip distributions, for the uncalibrated prediction beside it

    def distributions(clips: np.ndarray) -> np.ndarray:
        d = clip_distributions(model.net, clips, batch_size=model.clip_batch, mirror=model.mirror,
                               normalisation=model.normalisation, dynamics=model.dynamics)
        seen.append(d)
        return d

    for video in tqdm(videos, desc="scoring videos", unit="video", disable=not progress, leave=False):
        seen.clear()
        try:
            clips, prediction = score_video(video.path, model.preprocessing, distributions,
                                            calibration=model.calibration)
        except DJLDMLError as exc:
            refused[exc.code] += 1
            continue
        raw = predict_video(np.concatenate(seen), clips.start_times) if model.calibration is not None else None
        results.append(VideoResult(video.video_id, video.subject, float(video.bdi), prediction, len(clips), raw))
    model.net.train(was_training)
    return results, refused


def predict_split(net: DJLDMLNet, store: ClipStore, videos: list, clips_per_video: int, clip_length: int = 16,
                  stride: int = 1, batch_size: int = 16, amp: bool = False, progress: bool = True,
                  mirror: bool = False, normalisation: InputNormalisation | None = None,
                  calibration: Calibration | None = None, dynamics: str = "none") -> list[VideoResult]:
    """One :class:`VideoResult` per video that has at least one complete clip (others are skipped, with a warning).
    ``normalisation``, ``calibration`` and ``dynamics``: the run's (trainer/normalisation.py,
    trainer/calibrate.py, djldml.clips.INPUT_DYNAMICS)."""
    was_training = net.training
    net.eval()
    results, skipped = [], 0
    for video in tqdm(videos, desc="evaluating", unit="video", disable=not progress, leave=False):
        starts = evenly_spaced(store.clip_starts(video.video_id, clip_length, stride), clips_per_video)
        if len(starts) == 0:
            skipped += 1
            continue
        clips = np.stack([store.read_clip(video.video_id, int(s), clip_length, stride) for s in starts])
        dists = clip_distributions(net, clips, batch_size=batch_size, amp=amp, mirror=mirror,
                                   normalisation=normalisation, dynamics=dynamics)
        fps = getattr(video, "fps", 0.0) or 0.0
        times = np.asarray(starts, np.float64) / fps if fps > 0 else None
        raw = predict_video(dists, times)
        served = predict_video(dists, times, calibration=calibration) if calibration is not None else raw
        results.append(VideoResult(video.video_id, getattr(video, "subject", None), float(video.bdi), served,
                                   len(starts), raw if calibration is not None else None))
    net.train(was_training)
    if skipped:
        warnings.warn(f"{skipped} video(s) without a complete clip were not evaluated", stacklevel=2)
    return results


def point_metrics(true, predicted) -> dict[str, Any]:
    """MAE, RMSE, Pearson r (None when undefined, e.g. a constant predictor) and n."""
    t, p = np.asarray(true, np.float64), np.asarray(predicted, np.float64)
    err = p - t
    r = None
    if len(t) > 1 and np.ptp(t) > 0 and np.ptp(p) > 0:  # ptp, not std: a constant float array can have std 1e-15
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
            w.writerow([r.video_id, r.subject or "", split, f"{r.true:g}", f"{p.score:.9f}",
                        f"{abs(p.score - r.true):.4f}", f"{p.std:.4f}", p.interval[0], p.interval[1],
                        labels.severity_of(r.true), p.severity, r.n_clips])


def evaluate(model: str | Path | DJLDMLNet, data: str | Path | ClipStore | None = None, split: str = "test",
             out_dir: str | Path | None = None, clips_per_video: int | None = None, batch_size: int | None = None,
             n_bootstrap: int = 1000, seed: int = 0, device: str = "auto", amp: bool = False, plots: bool = True,
             progress: bool = True, videos: str | Path | None = None,
             calibration: str | Path | Calibration | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on ``split``; write predictions.csv, metrics.json and plots; return the metrics.

    ``videos``: a dataset source (CSV manifest or AVEC root, as for ``trainer prepare``) whose raw videos are
    scored through the service's path (module docstring); ``model`` is then a .mar, a run directory or a
    checkpoint. Otherwise the store path: ``data`` is a prepared-dataset root or an object with its interface
    (default: the run's), ``model`` also may be a model file or a network. ``amp``: float16 autocast on CUDA
    (store path only) — use it only if the served model runs so too (``trainer export --amp``).
    ``calibration``: a calibration (or its JSON file, ``trainer calibrate``) to apply instead of the model's own
    — e.g. one just fitted for a model whose card has none; the uncalibrated figures are reported beside it.
    """
    from .config import TrainConfig, read_run_config

    run_dir = Path(model) if isinstance(model, str | Path) and Path(model).is_dir() else None
    cfg = (read_run_config(run_dir) if run_dir else None) or TrainConfig()
    out = Path(out_dir) if out_dir else (run_dir / f"eval-{split}" if run_dir else Path("runs") / f"eval-{split}")
    out.mkdir(parents=True, exist_ok=True)
    if videos is not None:
        scored = score_with_service(model, videos, split, device, calibration, progress)
    else:
        scored = score_from_store(model, data, split, run_dir, cfg, clips_per_video, batch_size, device, amp,
                                  progress, calibration)
    notes = scored.notes
    if scored.shared:
        notes.insert(0, f"{len(scored.shared)} subject(s) appear in both train and {split}: the figures are "
                        "optimistic for new people")
    if not scored.results:
        raise ValueError(f"no {split!r} video could be scored")
    true, preds, baseline_values = model_and_baselines(scored, notes)
    metrics = assemble_metrics(scored, split, true, preds, baseline_values, n_bootstrap, seed)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    write_outputs(metrics, scored.results, split, out, run_dir, true, preds, baseline_values, plots)
    return metrics


@dataclass
class Scored:
    """One split as scored by either path: the per-video results and what the report says about how.

    ``train_labels``: the training BDI-II scores (float64, for the baselines); ``shared``: subjects in both train
    and the split; ``clips_per_video``: the clip budget per video; ``path``: the path's description in
    metrics.json; ``notes``: warnings for the report; ``n_videos``: videos in the split, scored or not.
    """

    results: list[VideoResult]
    train_labels: np.ndarray
    shared: set[str]
    clips_per_video: int | None
    calibration: Calibration | None
    path: dict[str, Any]
    notes: list[str]
    n_videos: int


def score_with_service(model: str | Path | DJLDMLNet, videos: str | Path, split: str, device: str,
                       calibration: str | Path | Calibration | None, progress: bool) -> Scored:
    """The service path (module docstring): ``split``'s raw videos of the source ``videos``, scored as
    ``POST /predict`` scores them. Raises ValueError for a bare network or a split without videos."""
    from .manifest import discover

    if isinstance(model, DJLDMLNet):
        raise ValueError("scoring raw videos needs a .mar, a run directory or a checkpoint, not a bare network")
    scorer = scoring_model(model, resolve_device(device))
    if calibration is not None:
        scorer.calibration = read_calibration(calibration)
    _, source = discover(videos)
    chosen = [v for v in source if v.split == split]
    train_labels = np.array([v.bdi for v in source if v.split == "train"], np.float64)
    shared = ({v.subject for v in source if v.split == "train" and v.subject}
              & {v.subject for v in chosen if v.subject}) if split != "train" else set()
    if not chosen:
        raise ValueError(f"the source has no {split!r} videos")
    results, refused = predict_videos(scorer, chosen, progress)
    selection = scorer.preprocessing.get("selection") or {}
    path_info = {"name": "service", "model_from": scorer.source, "mirror_average": scorer.mirror,
                 "fps": (scorer.preprocessing.get("face_config") or {}).get("fps"), "selection": selection,
                 "refused": dict(refused)}
    notes: list[str] = []
    if refused:
        notes.append(f"{sum(refused.values())} {split} video(s) the service would refuse were not scored: "
                     f"{dict(refused)}")
    return Scored(results, train_labels, shared, selection.get("max_clips"), scorer.calibration, path_info, notes,
                  len(chosen))


def score_from_store(model: str | Path | DJLDMLNet, data: str | Path | ClipStore | None, split: str,
                     run_dir: Path | None, cfg: TrainConfig, clips_per_video: int | None, batch_size: int | None,
                     device: str, amp: bool, progress: bool,
                     calibration: str | Path | Calibration | None) -> Scored:
    """The store path (module docstring): evenly spaced clips of ``split`` in the prepared face store ``data``
    (default: the run's). Raises ValueError without a dataset or when the split has no videos."""
    from .config import read_run_config

    net = model if isinstance(model, DJLDMLNet) else load_model(model, resolve_device(device))
    if data is None:
        if run_dir is None or read_run_config(run_dir) is None:
            raise ValueError("say which dataset to evaluate on (data=...)")
        data = cfg.data
    store = open_store(data) if isinstance(data, str | Path) else data
    k = clips_per_video or cfg.eval_clips_per_video
    shared = shared_subjects(store, split)
    chosen = store.split(split)
    if not chosen:
        raise ValueError(f"the dataset has no {split!r} videos")
    cal = read_calibration(calibration) if calibration is not None else (
        run_calibration(run_dir) if run_dir else None)
    results = predict_split(net, store, chosen, k, cfg.clip_length, cfg.clip_stride,
                            batch_size or cfg.eval_batch_size, amp, progress, cfg.test_time_mirror,
                            training_normalisation(cfg.to_dict()), cal, cfg.input_dynamics)
    train_labels = np.array([v.bdi for v in store.split("train")], np.float64)
    path_info = {"name": "store", "mirror_average": cfg.test_time_mirror, "input_dynamics": cfg.input_dynamics,
                 "note": "clips evenly spaced in the prepared face store: for model selection; "
                         "`--videos` gives the service's figures"}
    notes: list[str] = []
    if len(results) < len(chosen):
        notes.append(f"{len(chosen) - len(results)} {split} video(s) without a complete clip were left out")
    return Scored(results, train_labels, shared, k, cal, path_info, notes, len(chosen))


def model_and_baselines(scored: Scored, notes: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray],
                                                                   dict[str, float]]:
    """The true scores, the predictions of the model and of the constant baselines (the training labels'
    mean and median; none, with a note, without training videos), and the baselines' values."""
    true = np.array([r.true for r in scored.results])
    preds = {"model": np.array([r.predicted for r in scored.results])}
    baseline_values: dict[str, float] = {}
    train_labels = scored.train_labels
    if len(train_labels):
        baseline_values = {"train_mean": float(train_labels.mean()), "train_median": float(np.median(train_labels))}
        preds.update({name: np.full_like(true, value) for name, value in baseline_values.items()})
    else:
        notes.append("no training videos: no baselines")
    return true, preds, baseline_values


def assemble_metrics(scored: Scored, split: str, true: np.ndarray, preds: dict[str, np.ndarray],
                     baseline_values: dict[str, float], n_bootstrap: int, seed: int) -> dict[str, Any]:
    """metrics.json's content: point figures with bootstrap intervals, uncertainty and screening figures."""
    intervals = bootstrap_intervals(true, preds, n_bootstrap, seed, "train_mean" if baseline_values else None)
    return {
        "split": split, "n_videos": len(scored.results), "n_videos_in_split": scored.n_videos,
        "clips_per_video": scored.clips_per_video,
        "path": scored.path,
        "model": {**point_metrics(true, preds["model"]), **intervals["model"]},
        "baselines": {name: {"value": value, **point_metrics(true, preds[name]), **intervals[name]}
                      for name, value in baseline_values.items()},
        "bootstrap": {"resamples": n_bootstrap, "seed": seed, "unit": "video"},
        "uncertainty": uncertainty_report(scored.results, scored.calibration),
        "screening": screening_metrics(true, preds),
        "warnings": scored.notes,
    }


def write_outputs(metrics: dict[str, Any], results: list[VideoResult], split: str, out: Path, run_dir: Path | None,
                  true: np.ndarray, preds: dict[str, np.ndarray], baseline_values: dict[str, float],
                  plots: bool) -> None:
    """predictions.csv, the plots (listed in ``metrics["plots"]``) and metrics.json in ``out``; adds
    ``metrics["out_dir"]`` after writing metrics.json."""
    from . import plots as plotting

    write_predictions(results, split, out / "predictions.csv")
    if plots:
        curves = run_dir / "metrics.jsonl" if run_dir and (run_dir / "metrics.jsonl").is_file() else None
        metrics["plots"] = plotting.write_all(true, preds["model"], baseline_values, out, curves)
        metrics["plots"].append(plotting.reliability(metrics["uncertainty"], out / "reliability.png"))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    metrics["out_dir"] = str(out)


def format_report(metrics: dict[str, Any]) -> str:
    """A few lines for the terminal: the model beside the baselines, with intervals (no per-video scores)."""
    rows = [("model", metrics["model"])] + list(metrics["baselines"].items())
    path = metrics.get("path") or {"name": "store"}
    how = ("the service's path: raw videos → face pipeline → clips chosen as the model card says (the figure to "
           "report)" if path["name"] == "service" else
           "the prepared face store (fast, for model selection; not the service's clips — use --videos)")
    lines = [f"{metrics['split']}: {metrics['n_videos']} videos, ≤{metrics['clips_per_video']} clips each",
             f"scored on {how}",
             f"{'':14}{'MAE':>8} {'95% CI':>16}  {'RMSE':>8} {'95% CI':>16}  {'r':>6}"]
    for name, m in rows:
        r = "—" if m["pearson_r"] is None else f"{m['pearson_r']:.3f}"
        lines.append(f"{name:14}{m['mae']:8.3f} [{m['mae_ci95'][0]:6.2f}, {m['mae_ci95'][1]:6.2f}]  "
                     f"{m['rmse']:8.3f} [{m['rmse_ci95'][0]:6.2f}, {m['rmse_ci95'][1]:6.2f}]  {r:>6}")
    diff = metrics["model"].get("mae_minus_train_mean_ci95")
    if diff:
        lines.append(f"model MAE − train-mean MAE: 95% CI [{diff[0]:.2f}, {diff[1]:.2f}]")
    lines += uncertainty_lines(metrics.get("uncertainty"))
    lines += screening_lines(metrics.get("screening"))
    lines += [f"warning: {w}" for w in metrics["warnings"]]
    return "\n".join(lines)


def uncertainty_lines(u: dict[str, Any] | None) -> list[str]:
    if not u:
        return []
    cal = u.get("calibration")
    what = "no calibration"
    if cal:
        key, sign = {"temperature": ("temperature", "T="), "gaussian": ("sigma", "σ="),
                     "conformal": ("half_width", "±")}[cal["method"]]
        value = sign + ("∞" if cal.get(key) is None else f"{cal[key]:.3g}")
        what = f"calibration: {cal['method']} {value} (fitted on {cal['fitted_on'].get('split', '?')})"
    lines = [f"{int(u['before']['interval_mass'] * 100)}% interval ({what}):"]
    for when in ("before", "after"):
        if when in u:
            m = u[when]
            lines.append(f"  {when:7}coverage {m['coverage']:.1%} ({m['covered']}/{m['n']}, 95% CI "
                         f"[{m['coverage_ci95'][0]:.0%}, {m['coverage_ci95'][1]:.0%}]), mean width "
                         f"{m['mean_width']:.1f} points, Brier {m['brier']:.3f}, NLL {m['nll']:.2f}")
    return lines


def screening_lines(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return []
    lines = [f"{'':26}{'sens':>6} {'spec':>6} {'AUC':>6}"]
    for per in s.values():
        for who, m in per.items():
            cells = " ".join(f"{'—':>6}" if m[k] is None else f"{m[k]:6.2f}"
                             for k in ("sensitivity", "specificity", "roc_auc"))
            lines.append(f"BDI ≥ {m['cutoff']:<3}{who:17}{cells}   ({m['n_positive']}+ / {m['n_negative']}−)")
    return lines

