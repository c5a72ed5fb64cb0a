"""``python -m trainer <command>``: prepare → train → evaluate → export, plus synth, demo and ablation.

``train``, ``evaluate`` and ``ablation`` are wired here. ``prepare``, ``synth``, ``demo`` and ``export`` live in
their own modules (``trainer.prepare`` …), each exposing ``add_arguments(parser)`` and ``main(args)``. A module
that is missing or fails to import disables only its own command, with a clear message, never the whole CLI.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

# command → (module, one-line help); the module provides add_arguments(parser) and main(args) -> int | None
PLUGGED = {
    "synth": ("trainer.synth", "make a SYNTHETIC labelled video dataset (demo and tests only)"),
    "synth-identities": ("trainer.synth_identities",
                         "make the SYNTHETIC multi-identity benchmark (10 real faces, score in a movement amplitude)"),
    "prepare": ("trainer.prepare", "videos + labels → prepared face-clip dataset"),
    "demo": ("trainer.demo", "synth → prepare → train → export the SYNTHETIC demo model"),
    "export": ("trainer.export", "package a trained model as a TorchServe .mar"),
    "calibrate": ("trainer.calibrate", "fit the calibration of the video distribution on the development split"),
}


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="TOML config (default: trainer/configs/default.toml)")
    p.add_argument("--data", help="prepared dataset root (config key: data)")
    p.add_argument("--out", help="run directory (config key: out)")
    p.add_argument("--preset", help="network preset: c3d, c3d-bn, c3d-small, c3d-tiny")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (repeatable), e.g. --set lr=3e-4 --set sigma=3")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars (logs, CI)")


def _config_from(args: argparse.Namespace, **extra):
    from .config import load_config, parse_override

    overrides = dict(parse_override(o) for o in args.overrides)
    for key in ("data", "out", "preset", "epochs", "seed", "device", "objective"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    if args.no_progress:
        overrides["progress"] = False
    overrides.update(extra)
    return load_config(args.config, overrides)


def _train(args: argparse.Namespace) -> int:
    from .train import train

    cfg = _config_from(args, **({"resume": True} if args.resume else {}))
    run_dir = train(cfg)
    print(f"run directory: {run_dir}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, format_report

    metrics = evaluate(args.model, args.data, split=args.split, out_dir=args.out, clips_per_video=args.clips_per_video,
                       batch_size=args.batch_size, n_bootstrap=args.bootstrap, seed=args.seed, device=args.device,
                       amp=args.amp, plots=not args.no_plots, progress=not args.no_progress, videos=args.videos,
                       calibration=args.calibration)
    print(format_report(metrics))
    print(f"written to {metrics['out_dir']}")
    return 0


def _ablation(args: argparse.Namespace) -> int:
    from djldml.losses import OBJECTIVES

    from .ablation import run_ablation

    objectives = tuple(args.objectives or OBJECTIVES)
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise SystemExit(f"unknown objective(s) {unknown}; choose from {OBJECTIVES}")
    if args.seeds < 1:
        raise SystemExit("--seeds must be ≥ 1")
    result = run_ablation(_config_from(args), objectives, split=args.split, out=args.ablation_out,
                          n_bootstrap=args.bootstrap, seeds=args.seeds)
    print(result["table"])
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int | None]]]:
    from djldml.losses import OBJECTIVES

    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    handlers: dict[str, Callable[[argparse.Namespace], int | None]] = {}

    p = sub.add_parser("train", help="train a model (config file + flag overrides); torchrun for DDP")
    _add_train_options(p)
    p.add_argument("--objective", choices=OBJECTIVES, help="loss: the method (djldml) or an ablation")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    handlers["train"] = _train

    p = sub.add_parser("evaluate", help="video-level MAE/RMSE/r beside the train-mean/median baselines")
    p.add_argument("model", type=Path, help="run directory (uses best.pt), training checkpoint, model file, or a "
                                            ".mar archive (with --videos)")
    p.add_argument("--videos", type=Path, help="score the RAW videos of this dataset source (CSV manifest or AVEC "
                                              "root) exactly as the service does: the figure to report")
    p.add_argument("--data", help="prepared dataset root, store path (default: the run's config)")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--out", type=Path, help="output directory (default: <run>/eval-<split>)")
    p.add_argument("--clips-per-video", type=int, help="clips evenly spread per video (default: config)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="float16 autocast on CUDA, as a .mar exported with --amp")
    p.add_argument("--calibration", type=Path, help="apply this calibration JSON (trainer calibrate) instead of the "
                                                    "model's own; the uncalibrated figures are shown beside it")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    handlers["evaluate"] = _evaluate

    p = sub.add_parser("ablation", help="train + evaluate every objective over seeds; print one table")
    _add_train_options(p)
    p.add_argument("--objectives", nargs="+", metavar="OBJECTIVE", help=f"subset of {' '.join(OBJECTIVES)}")
    p.add_argument("--split", default="test", choices=["dev", "test"])
    p.add_argument("--ablation-out", type=Path, help="where the runs and the table go (default: beside out)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=1, help="seeds per objective: --seed, --seed+1, … (mean ± sd, "
                                                        "bootstrap over videos and seeds)")
    handlers["ablation"] = _ablation

    for name, (module_name, help_text) in PLUGGED.items():
        p = sub.add_parser(name, help=help_text)
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a missing or broken module disables its command only
            reason = f"{exc.__class__.__name__}: {exc}"
            p.add_argument("rest", nargs=argparse.REMAINDER)
            handlers[name] = _unavailable(name, module_name, reason)
            continue
        module.add_arguments(p)
        handlers[name] = module.main
    return parser, handlers


def _unavailable(name: str, module_name: str, reason: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        print(f"`{name}` is not available: {module_name} could not be imported ({reason})", file=sys.stderr)
        return 2

    return handler


def main(argv: list[str] | None = None) -> int:
    from djldml.errors import ModelError

    from .manifest import ManifestError

    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(handlers[args.command](args) or 0)
    except (ManifestError, ModelError) as exc:  # the user's data or model file: say what, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
