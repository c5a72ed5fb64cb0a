"""The ablation of docs/method.md §3 ("Joint objective"): each objective trained and evaluated with the same data,
seed and settings.

``python -m trainer ablation --config trainer/configs/synthetic.toml`` trains ``regression``, ``ldl``,
``regression+dml`` and ``djldml`` one after another (runs in ``<out>/<objective>``), evaluates each best.pt on
the same split, and prints one table — MAE and RMSE with bootstrap 95 % intervals per objective, beside the
train-mean and train-median baselines. The table is also written to ``<out>/ablation.md`` and ``ablation.json``.
The paper's claim to check: djldml < ldl < regression in error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from djldml.losses import OBJECTIVES

from .config import TrainConfig
from .data import ClipStore
from .evaluate import evaluate
from .store import open_store
from .train import train


def run_ablation(cfg: TrainConfig, objectives: tuple[str, ...] = OBJECTIVES, split: str = "test",
                 out: str | Path | None = None, dataset: ClipStore | None = None,
                 n_bootstrap: int = 1000) -> dict[str, Any]:
    """Train + evaluate each objective; return {"rows": {objective: metrics}, "baselines": ..., "table": str}."""
    root = Path(out or Path(cfg.out).parent / "ablation")
    store = dataset if dataset is not None else open_store(cfg.data)
    rows: dict[str, dict[str, Any]] = {}
    baselines: dict[str, Any] = {}
    for objective in objectives:
        run_cfg = cfg.with_overrides(objective=objective, out=str(root / objective.replace("+", "_")))
        print(f"== {objective} ==")
        run_dir = train(run_cfg, store)
        metrics = evaluate(run_dir, store, split=split, n_bootstrap=n_bootstrap, seed=cfg.seed,
                           progress=cfg.progress)
        best_epoch = _best_epoch(run_dir)
        rows[objective] = {**metrics["model"], "best_epoch": best_epoch, "run_dir": str(run_dir)}
        baselines = metrics["baselines"]  # identical for every objective: same data and split
    table = format_table(rows, baselines, split)
    root.mkdir(parents=True, exist_ok=True)
    (root / "ablation.md").write_text(table + "\n")
    result = {"split": split, "config": cfg.to_dict(), "rows": rows, "baselines": baselines, "table": table}
    (root / "ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _best_epoch(run_dir: Path) -> int | None:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1]).get("best_epoch") if lines else None


def format_table(rows: dict[str, dict], baselines: dict[str, dict], split: str) -> str:
    def ci(m: dict, key: str) -> str:
        lo, hi = m[f"{key}_ci95"]
        return f"{m[key]:.2f} [{lo:.2f}, {hi:.2f}]"

    lines = [f"Ablation on {split} (MAE / RMSE per video, bootstrap 95% CI)", "",
             "| objective | MAE | RMSE | r |", "|---|---|---|---|"]
    for name, m in list(rows.items()) + [(f"baseline: {k.replace('_', ' ')}", v) for k, v in baselines.items()]:
        r = "—" if m.get("pearson_r") is None else f"{m['pearson_r']:.3f}"
        lines.append(f"| {name} | {ci(m, 'mae')} | {ci(m, 'rmse')} | {r} |")
    return "\n".join(lines)
