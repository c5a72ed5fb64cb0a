"""``trainer demo``: the SYNTHETIC demo model, end to end — synth → prepare → train → evaluate → export.

    python -m trainer demo --out model_store/djldml-demo.mar          # what `make demo-model` runs

Deterministic for a given ``--seed`` (same videos, same faces, same CPU training). Takes a few minutes on two
cores. The archive's model card says ``synthetic_demo: true`` and describes the data; its scores mean nothing
clinically. Intermediate files go to ``--work`` (default ``runs/demo``); each step resumes if they exist.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .synth import SynthConfig

DEMO_SYNTH = SynthConfig(subjects=(12, 3, 4), videos_per_subject=3, seconds=4.0, seed=0)
DEMO_NAME = "djldml-demo"
# torch's CPU threads while training the demo: a CPU run is bit-reproducible only at one thread count (and one
# instruction set, docs/training.md); 2 is what the committed model was built with (torch's default on 2 cores)
DEMO_THREADS = 2
DEMO_VERSION = "1.0"
DEMO_DESCRIPTION = ("SYNTHETIC DEMO MODEL — trained only on synthetic videos (a public test face animated with "
                    "score-dependent motion speed, `trainer synth`). Its scores mean nothing clinically.")


def run_demo(out_mar: str | Path, work: str | Path = "runs/demo", seed: int = 0,
             synth_config: SynthConfig = DEMO_SYNTH, overrides: dict[str, Any] | None = None,
             workers: int = 2, progress: bool = True) -> dict[str, Any]:
    """Build the demo archive at ``out_mar``; returns {"mar", "run_dir", "metrics", "seconds"}."""
    from .calibrate import calibrate
    from .config import SYNTHETIC_CONFIG, load_config
    from .evaluate import evaluate, format_report
    from .export import export_model
    from .prepare import face_config_for, prepare
    from .store import SPLITS, PreparedDataset
    from .synth import generate
    from .train import train

    work = Path(work)
    started = time.perf_counter()
    synth_config = SynthConfig(**{**synth_config.to_dict(), "seed": seed})
    manifest = generate(work / "synthetic", synth_config, progress=progress)
    # The clip timeline at the rate the synthetic videos are rendered at: no frame repeated or dropped
    prepared = prepare(manifest, work / "prepared", config=face_config_for(argparse.Namespace(fps=synth_config.fps)),
                       workers=workers, progress=progress)
    if not prepared.usable:
        raise RuntimeError("the synthetic videos gave no usable faces (face pipeline broken?)")
    resume = (work / "run" / "last.pt").is_file()  # an interrupted or finished run continues, not restarts
    cfg = load_config(SYNTHETIC_CONFIG, {"data": str(work / "prepared"), "out": str(work / "run"), "seed": seed,
                                         "progress": progress, "resume": resume, "threads": DEMO_THREADS,
                                         **(overrides or {})})
    run_dir = train(cfg)
    # The calibration of the video distribution, fitted on the development subjects through the service's path
    # (run_dir/calibration.json: evaluate applies it, export packs it into the card's inference.calibration).
    calibrated = calibrate(run_dir, manifest, split="dev", progress=progress)["calibration"]
    print(f"calibration ({calibrated.method}): {calibrated.to_dict()}")
    # Model selection figures from the face store, then the figure the card carries: the held-out synthetic
    # test videos scored through the service's path (raw video → clips as the card will say → prediction).
    print(format_report(evaluate(run_dir, split="test", plots=False, progress=progress, n_bootstrap=200)))
    metrics = evaluate(run_dir, split="test", plots=False, progress=progress, n_bootstrap=200, videos=manifest,
                       out_dir=run_dir / "eval-test-videos")
    print(format_report(metrics))
    store = PreparedDataset(work / "prepared")
    card = {
        "description": DEMO_DESCRIPTION,
        "synthetic_demo": True,
        "metrics": {"test_synthetic": {k: metrics[k] for k in ("n_videos", "path", "model", "baselines",
                                                               "uncertainty", "screening")}},
        "data": {
            "synthetic": True,
            "generator": json.loads((work / "synthetic" / "synthetic.json").read_text())["generator"],
            "synth_config": synth_config.to_dict(),
            "videos_per_split": {s: len(store.split(s)) for s in SPLITS},
            "note": "subject-disjoint train/dev/test splits of synthetic subjects; no patient data",
        },
    }
    mar = export_model(run_dir, out_mar, DEMO_NAME, DEMO_VERSION, card)
    return {"mar": mar, "run_dir": run_dir, "metrics": metrics, "seconds": time.perf_counter() - started}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=f"model_store/{DEMO_NAME}.mar", help="where to write the .mar")
    parser.add_argument("--work", default="runs/demo", help="intermediate files (synthetic videos, faces, run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    result = run_demo(args.out, args.work, args.seed, progress=not args.no_progress)
    size_mb = Path(result["mar"]).stat().st_size / 1e6
    print(f"wrote {result['mar']} ({size_mb:.1f} MB) — SYNTHETIC demo model, {result['seconds']:.0f} s")
    return 0
