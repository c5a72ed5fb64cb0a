"""``trainer ablation --seeds N``: mean ± sd over seeds and paired differences with a bootstrap over videos and
seeds (trainer.ablation), on hand-made predictions and on a tiny real run."""

from __future__ import annotations

import numpy as np
import pytest

import trainer.ablation as ablation
import trainer.train as train_module
from trainer.ablation import aggregate, run_ablation, two_way_bootstrap


def test_two_way_bootstrap_finds_a_real_shift_and_not_a_null_one():
    rng = np.random.default_rng(0)
    shifted = 2.0 + rng.normal(0, 1, (3, 40))  # 3 seeds × 40 videos
    b = two_way_bootstrap(shifted, n_boot=500)
    assert b["estimate"] == pytest.approx(shifted.mean())
    assert 0 < b["ci95"][0] < 2.0 < b["ci95"][1]
    null = rng.normal(0, 1, (3, 40))
    lo, hi = two_way_bootstrap(null, n_boot=500)["ci95"]
    assert lo < 0 < hi
    assert two_way_bootstrap(np.full((3, 5), 1.5), n_boot=50)["ci95"] == [1.5, 1.5]
    # a seed that disagrees widens the interval: seeds are resampled, not only videos
    seeds_differ = np.stack([np.zeros(40), np.zeros(40), np.full(40, 3.0)]) + rng.normal(0, 0.1, (3, 40))
    lo, hi = two_way_bootstrap(seeds_differ, n_boot=500)["ci95"]
    assert hi - lo > 1.0
    with pytest.raises(ValueError):
        two_way_bootstrap(np.zeros((0, 0)))


def _runs(true, predictions):
    ids = [f"v{i}" for i in range(len(true))]
    return [{"seed": s, "video_ids": ids, "true": true, "predicted": p} for s, p in enumerate(predictions)]


def test_aggregate_means_sds_ratio_and_paired_differences():
    rng = np.random.default_rng(1)
    true = rng.uniform(0, 45, 30)
    good = [true + rng.normal(0, 2, 30) for _ in range(3)]
    bad = [true + rng.normal(0, 8, 30) for _ in range(3)]
    mean = 20.0
    summary = aggregate({"regression": _runs(true, bad), "ldl": _runs(true, bad), "djldml": _runs(true, good)},
                        {"train_mean": mean}, n_boot=300)
    maes = np.array([np.abs(p - true).mean() for p in good])
    dj = summary["objectives"]["djldml"]
    assert dj["mae"]["mean"] == pytest.approx(maes.mean())
    assert dj["mae"]["sd"] == pytest.approx(maes.std(ddof=1))
    assert dj["mae"]["per_seed"] == pytest.approx(list(maes))
    assert dj["pearson_r"]["mean"] > 0.9
    ratio = dj["mae_ratio_train_mean"]
    assert ratio["estimate"] == pytest.approx(maes.mean() / np.abs(mean - true).mean())
    assert ratio["ci95"][0] < ratio["estimate"] < ratio["ci95"][1] < 1
    assert summary["baselines"]["train_mean"]["mae"] == pytest.approx(np.abs(mean - true).mean())
    for name in ("djldml - ldl", "djldml - regression"):
        d = summary["differences"][name]
        assert d["ci95"][1] < 0  # djldml's errors are smaller, and the interval says so
    table = ablation.format_table(summary, "test")
    assert "| djldml |" in table and "djldml - ldl" in table and "baseline: train mean" in table
    other = _runs(true, good)
    other[1] = {**other[1], "video_ids": other[1]["video_ids"][::-1]}
    with pytest.raises(ValueError, match="other videos"):
        aggregate({"djldml": other}, {"train_mean": mean})


def test_tiny_ablation_over_two_seeds_then_reuses_finished_runs(tiny_config, small_dataset, tmp_path, monkeypatch):
    cfg = tiny_config.with_overrides(epochs=1, input_dynamics="mean_removed")
    result = run_ablation(cfg, ("ldl", "djldml"), out=tmp_path / "abl", dataset=small_dataset, n_bootstrap=50,
                          seeds=2)
    s = result["summary"]
    assert s["seeds"] == [cfg.seed, cfg.seed + 1] and s["n_videos"] == len(small_dataset.split("test"))
    assert set(s["objectives"]) == {"ldl", "djldml"} and "djldml - ldl" in s["differences"]
    assert len(s["objectives"]["djldml"]["mae"]["per_seed"]) == 2
    rows = result["rows"]["djldml"]
    assert [r["seed"] for r in rows] == [cfg.seed, cfg.seed + 1] and rows[0]["run_dir"] != rows[1]["run_dir"]
    assert (tmp_path / "abl" / "ablation.md").read_text().strip() == result["table"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ablation, "train", no_training)
    again = run_ablation(cfg, ("ldl", "djldml"), out=tmp_path / "abl", dataset=small_dataset, n_bootstrap=50,
                         seeds=2)
    assert again["summary"]["objectives"] == s["objectives"]
    monkeypatch.setattr(ablation, "train", train_module.train)
    with pytest.raises(AssertionError, match="trained again"):  # another setting is another run
        monkeypatch.setattr(ablation, "train", no_training)
        run_ablation(cfg.with_overrides(sigma=3.0), ("ldl",), out=tmp_path / "abl", dataset=small_dataset,
                     n_bootstrap=50)
