"""``trainer calibrate``: fit the calibration of a model's video distribution on the development split.

    python -m trainer calibrate runs/demo/run --videos runs/demo/synthetic/manifest.csv     # → run/calibration.json
    python -m trainer calibrate model_store/djldml-demo.mar --videos SRC --out runs/calibration.json

The development videos (held-out subjects, never the test split) are scored exactly as the service scores them
(``trainer evaluate --videos``' path, without any calibration), then one of djldml.calibration's methods is
fitted: ``gaussian`` (default: σ of a Gaussian around the score by maximum likelihood), ``temperature`` (T by
minimum NLL) or ``conformal`` (split-conformal widening of the interval) — docs/training.md, "Calibration", has
what each measured and why gaussian is the default. A run directory's ``calibration.json`` is read by
``trainer evaluate`` and packed by ``trainer export`` into the card's ``inference.calibration``;
``trainer evaluate --calibration FILE`` applies any such file.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from djldml import labels
from djldml.calibration import METHODS, Calibration, score_gaussian, temper
from djldml.prediction import DEFAULT_INTERVAL_MASS, predict_video

from .calibration_file import CALIBRATION_FILE
from .uncertainty import NLL_FLOOR, uncertainty_report

DEFAULT_METHOD = "gaussian"
FEW_VIDEOS, FEW_SUBJECTS = 20, 5  # below either, calibrate warns that the fit may not carry to new people
#: log-spaced search grid of T; 0.02 (p^50: nearly the mode alone) … 50 (nearly uniform)
TEMPERATURE_GRID = np.exp(np.linspace(np.log(0.02), np.log(50.0), 1601))


def nll(distributions: np.ndarray, true) -> float:
    """Mean −log p(round(true)) of video distributions float [n, 64]."""
    d = np.asarray(distributions, np.float64)
    k = np.clip(np.rint(np.asarray(true, np.float64)).astype(int) - labels.MIN_SCORE, 0, labels.NUM_BINS - 1)
    return float(-np.log(np.maximum(d[np.arange(len(k)), k], NLL_FLOOR)).mean())


def fit_temperature(distributions: np.ndarray, true) -> float:
    """T minimising the NLL of the true scores under p^(1/T) (grid search over :data:`TEMPERATURE_GRID`: one
    parameter, and the NLL of a few dozen videos is cheap — no optimiser to trust)."""
    d = np.asarray(distributions, np.float64)
    losses = [nll(temper(d, t), true) for t in TEMPERATURE_GRID]
    return float(TEMPERATURE_GRID[int(np.argmin(losses))])


#: σ grid of the Gaussian method, BDI-II points
SIGMA_GRID = np.exp(np.linspace(np.log(0.5), np.log(40.0), 401))


def fit_sigma(scores, true) -> float:
    """σ maximising the likelihood of the true scores under djldml.calibration.score_gaussian of each predicted
    score (grid search over :data:`SIGMA_GRID`; about the RMS error away from the scale's ends)."""
    s = np.asarray(scores, np.float64)
    losses = [nll(score_gaussian(s, sigma), true) for sigma in SIGMA_GRID]
    return float(SIGMA_GRID[int(np.argmin(losses))])


def fit_conformal(scores, true, mass: float = DEFAULT_INTERVAL_MASS) -> float:
    """Split-conformal half-width: the ⌈(n+1)·mass⌉-th smallest |true − score| (inf when that exceeds n: too
    few development videos for this mass; the interval is then the whole scale)."""
    err = np.sort(np.abs(np.asarray(true, np.float64) - np.asarray(scores, np.float64)))
    k = math.ceil((len(err) + 1) * mass)
    return math.inf if k > len(err) else float(err[k - 1])


def fit_calibration(results: list, method: str = DEFAULT_METHOD, mass: float = DEFAULT_INTERVAL_MASS,
                    split: str = "dev", source: str = "") -> Calibration:
    """Fit ``method`` on ``results`` (trainer.evaluate.VideoResult, uncalibrated predictions used) and record
    what it did on them (``fitted_on``: split, n, coverage and NLL before and after)."""
    if len(results) < 2:
        raise ValueError(f"calibration needs at least 2 scored {split} videos, got {len(results)}")
    raw = [r.uncalibrated for r in results]
    true = np.array([r.true for r in results])
    if method == "temperature":
        cal = Calibration("temperature", temperature=fit_temperature(np.array([p.distribution for p in raw]), true),
                          interval_mass=mass)
    elif method == "gaussian":
        cal = Calibration("gaussian", sigma=fit_sigma([p.score for p in raw], true), interval_mass=mass)
    elif method == "conformal":
        cal = Calibration("conformal", half_width=fit_conformal([p.score for p in raw], true, mass),
                          interval_mass=mass)
    else:
        raise ValueError(f"unknown calibration method {method!r}")
    # the fitted calibration on the same videos, as predict_video applies it (one video distribution each)
    fitted = [type(r)(r.video_id, r.subject, r.true, predict_video(r.uncalibrated.distribution[None], None, mass, cal),
                      r.n_clips, r.uncalibrated) for r in results]
    report = uncertainty_report(fitted, cal)
    summary = {k: {m: report[k][m] for m in ("coverage", "mean_width", "brier", "nll")} for k in ("before", "after")}
    subjects = {r.subject for r in results if r.subject}
    fitted_on = {"split": split, "n_videos": len(results), "n_subjects": len(subjects), **summary}
    if source:
        fitted_on["source"] = source
    return Calibration(cal.method, cal.temperature, cal.sigma, cal.half_width, cal.interval_mass, fitted_on)


def calibrate(model: str | Path, videos: str | Path, split: str = "dev", method: str = DEFAULT_METHOD,
              out: str | Path | None = None, device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Score ``split`` of the dataset source ``videos`` through the service's path (uncalibrated), fit, write
    the calibration to ``out`` (default: the run directory's calibration.json); returns {"calibration", "out"}."""
    from djldml.device import resolve_device

    from .evaluate import predict_videos, scoring_model
    from .manifest import discover

    path = Path(model)
    if out is None:
        if not path.is_dir():
            raise ValueError("say where to write the calibration (--out) for a model that is not a run directory")
        out = path / CALIBRATION_FILE
    scorer = scoring_model(path, resolve_device(device))
    scorer.calibration = None  # fitted on the uncalibrated distributions, whatever the model carries now
    _, source = discover(videos)
    chosen = [v for v in source if v.split == split]
    if not chosen:
        raise ValueError(f"the source has no {split!r} videos")
    results, refused = predict_videos(scorer, chosen, progress)
    cal = fit_calibration(results, method, split=split, source=f"{len(results)} of {len(chosen)} {split} videos "
                          f"scored through the service's path" + (f"; refused {dict(refused)}" if refused else ""))
    n_subjects = cal.fitted_on["n_subjects"]
    if len(results) < FEW_VIDEOS or 0 < n_subjects < FEW_SUBJECTS:
        # Measured (docs/training.md): fitted on 6 videos of 2 subjects, σ = 5.0 while the test error was larger
        # (MAE 6.1), and held-out coverage fell from 8/9 to 5/9.
        warnings.warn(f"calibration fitted on {len(results)} {split} videos of {n_subjects} subject(s): the "
                      "error of new people may differ; check the coverage on held-out subjects "
                      "(trainer evaluate)", stacklevel=2)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(cal.to_dict(), indent=2) + "\n")
    return {"calibration": cal, "out": Path(out)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="run directory, checkpoint or .mar archive")
    parser.add_argument("--videos", type=Path, required=True, help="dataset source (CSV manifest or AVEC root)")
    parser.add_argument("--split", default="dev", choices=["dev", "train"],
                        help="fit on this split (dev: held-out subjects; never the test split)")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=list(METHODS))
    parser.add_argument("--out", type=Path, help="JSON file (default: <run dir>/calibration.json)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    done = calibrate(args.model, args.videos, args.split, args.method, args.out, args.device, not args.no_progress)
    cal = done["calibration"]
    f = cal.fitted_on
    what = {"temperature": f"T = {cal.temperature:.4g}", "gaussian": f"σ = {cal.sigma:.4g} points",
            "conformal": f"half-width {cal.half_width:.4g} points"}[cal.method]
    print(f"{cal.method} calibration: {what}, fitted on {f['n_videos']} {f['split']} videos")
    for when in ("before", "after"):
        m = f[when]
        print(f"  {args.split} {when:7}coverage {m['coverage']:.1%}, mean width {m['mean_width']:.1f} points, "
              f"Brier {m['brier']:.3f}, NLL {m['nll']:.2f}")
    print(f"written to {done['out']}")
    return 0
