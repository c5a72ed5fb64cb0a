"""Evaluation plots as PNG files (matplotlib, no display): predicted vs true, error histogram, learning curves,
reliability of the band probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (servers, CI)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from djldml import labels  # noqa: E402


def predicted_vs_true(true, predicted, baselines: dict[str, float], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    lim = (labels.MIN_SCORE - 1, labels.MAX_SCORE + 1)
    ax.plot(lim, lim, color="grey", lw=1, label="perfect")
    for (name, value), style in zip(baselines.items(), (":", "--"), strict=False):
        ax.axhline(value, color="tab:orange", ls=style, lw=1, label=name.replace("_", " "))
    ax.scatter(true, predicted, s=18, alpha=0.8, label="videos")
    for band in labels.SEVERITY_BANDS[1:]:
        ax.axvline(band.low - 0.5, color="lightgrey", lw=0.5)
    ax.set(xlim=lim, ylim=lim, xlabel="true BDI-II", ylabel="predicted BDI-II", title="Predicted vs true")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def error_histogram(true, predicted, path: Path) -> None:
    err = np.asarray(predicted) - np.asarray(true)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(err, bins=min(30, max(5, len(err) // 2)), color="tab:blue", alpha=0.8)
    ax.axvline(0, color="grey", lw=1)
    ax.set(xlabel="predicted − true (BDI-II points)", ylabel="videos",
           title=f"Errors (MAE {np.abs(err).mean():.2f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def learning_curves(metrics_jsonl: Path, path: Path) -> None:
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    epochs = [r["epoch"] + 1 for r in rows]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(epochs, [r.get("train_total", np.nan) for r in rows], color="tab:blue", label="train loss")
    ax1.set(xlabel="epoch", ylabel="train loss")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = ax1.get_lines()
    if any("dev_mae" in r for r in rows):
        ax2 = ax1.twinx()
        ax2.plot(epochs, [r.get("dev_mae", np.nan) for r in rows], color="tab:red", marker="o", ms=3,
                 label="dev MAE")
        ax2.set_ylabel("dev MAE")
        handles = handles + ax2.get_lines()
    ax1.legend(handles=handles, loc="upper center", fontsize=8)
    ax1.set_title("Learning curves")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reliability(uncertainty: dict, path: Path) -> str:
    """Reliability diagram of the severity-band probabilities (trainer/uncertainty.py ``reliability_bins``),
    uncalibrated and calibrated when both are there; returns the file name."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot((0, 1), (0, 1), color="grey", lw=1, label="perfectly calibrated")
    for when, style in (("before", "o--"), ("after", "s-")):
        if when in uncertainty:
            bins = uncertainty[when]["reliability"]
            ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins], style, ms=4,
                    label=f"{when} (Brier {uncertainty[when]['brier']:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted band probability", ylabel="observed frequency",
           title="Reliability of the band probabilities")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def write_all(true, predicted, baselines: dict[str, float], out_dir: Path, metrics_jsonl: Path | None) -> list[str]:
    """Write every plot that applies; return their file names."""
    names = ["predicted_vs_true.png", "error_histogram.png"]
    predicted_vs_true(true, predicted, baselines, out_dir / names[0])
    error_histogram(true, predicted, out_dir / names[1])
    if metrics_jsonl is not None:
        names.append("learning_curves.png")
        learning_curves(metrics_jsonl, out_dir / names[-1])
    return names
