"""The training loop on an in-memory fake dataset with c3d-tiny on CPU: determinism, resume, objectives, best.pt."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import trainer.store as store_module
import trainer.train as train_module
from djldml import model_file
from djldml.losses import OBJECTIVES
from trainer.__main__ import main as cli_main
from trainer.config import DEFAULT_CONFIG, SYNTHETIC_CONFIG, TrainConfig, load_config, parse_override
from trainer.data import Augmentation, ClipDataset, EpochClipSampler, augment_clip, capture_offsets, evenly_spaced
from trainer.evaluate import point_metrics, predict_split
from trainer.train import lr_at, train

from .conftest import TINY
from .fakes import FakePreparedDataset

TIMING_KEYS = {"seconds", "train_clips_per_s"}


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def state_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]["state_dict"]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --- config -------------------------------------------------------------------------------------------------------

def test_default_config_is_the_paper_setting():
    cfg = load_config(DEFAULT_CONFIG)
    assert (cfg.preset, cfg.objective, cfg.sigma, cfg.n_bins, cfg.clip_length) == ("c3d", "djldml", 2.0, 100, 16)
    assert cfg == TrainConfig()  # the dataclass defaults and default.toml say the same


def test_config_overrides_and_errors(tmp_path):
    assert parse_override("lr=3e-4") == ("lr", 3e-4)
    assert parse_override("objective=ldl") == ("objective", "ldl")
    assert parse_override("hard_pairs=true") == ("hard_pairs", True)
    cfg = load_config(None, {"epochs": 3, "sigma": 3})  # an int where a float is expected is fine
    assert cfg.epochs == 3 and cfg.sigma == 3.0
    with pytest.raises(ValueError, match="unknown config keys: nope"):
        load_config(None, {"nope": 1})
    with pytest.raises(ValueError, match="epochs must be int"):
        load_config(None, {"epochs": "many"})
    with pytest.raises(ValueError, match="objective"):
        load_config(None, {"objective": "ranking"})
    bad = tmp_path / "bad.toml"
    bad.write_text("[a]\nlr = 1.0\n[b]\nlr = 2.0\n")
    with pytest.raises(ValueError, match="set twice"):
        load_config(bad)


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(epochs=10, lr=1e-3, min_lr=1e-5, warmup_epochs=1.0)
    lrs = [lr_at(cfg, s, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)


# --- data ---------------------------------------------------------------------------------------------------------

def test_sampler_is_deterministic_valid_and_grouped(fake_dataset):
    videos = fake_dataset.split("train")
    make = lambda **kw: EpochClipSampler(fake_dataset, videos, 4, 4, 2, seed=3, **kw)  # noqa: E731
    a, b = make(), make()
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    batches = list(b)
    assert len(batches) == len(b) == 8 and all(len(x) == 4 for x in batches)
    keys = [k for x in batches for k in x]
    for index, start, _ in keys:  # every start is a complete clip (odd fake videos have a gap at frame 1)
        assert start in fake_dataset.clip_starts(videos[index].video_id)
    # clips come in same-video pairs, so every batch has equal-label pairs for the histogram loss
    assert all(keys[i][0] == keys[i + 1][0] for i in range(0, len(keys), 2))


def test_sampler_deals_disjoint_equal_shares_to_ranks(fake_dataset):
    videos = fake_dataset.split("train")
    shares = [list(EpochClipSampler(fake_dataset, videos, 4, 3, 1, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == 2
    flat = [tuple(b) for s in shares for b in s]
    assert len(set(flat)) == len(flat)


def test_augmentation_is_deterministic_and_keeps_format(fake_dataset):
    clip = fake_dataset.read_clip("train00", 0)
    aug = Augmentation(hflip=0.5, brightness=0.1, contrast=0.1, crop_scale=0.8)
    a = augment_clip(clip, np.random.default_rng(7), aug)
    b = augment_clip(clip, np.random.default_rng(7), aug)
    assert a.dtype == np.uint8 and a.shape == clip.shape and np.array_equal(a, b)
    assert not np.array_equal(a, augment_clip(clip, np.random.default_rng(8), aug))
    flip_only = Augmentation(hflip=1.0, brightness=0.0, contrast=0.0, crop_scale=1.0)
    assert np.array_equal(augment_clip(clip, np.random.default_rng(0), flip_only), clip[:, :, ::-1])
    x, y = ClipDataset(fake_dataset, fake_dataset.split("train"), augmentation=aug)[(0, 0, 7)]
    assert torch.equal(x, torch.from_numpy(a)) and y.item() == fake_dataset.split("train")[0].bdi


def test_blur_augmentation_blurs_every_frame_alike(fake_dataset):
    clip = fake_dataset.read_clip("train00", 0)
    blur_only = Augmentation(hflip=0.0, brightness=0.0, contrast=0.0, crop_scale=1.0, blur=1.5)
    rng_draws = np.random.default_rng(3).random(11)
    out = augment_clip(clip, np.random.default_rng(3), blur_only)
    sx, sy = 1.5 * rng_draws[6], 1.5 * rng_draws[7]
    assert max(sx, sy) > 0.1
    want = np.stack([cv2.GaussianBlur(np.ascontiguousarray(f), (0, 0), sigmaX=sx, sigmaY=sy) for f in clip])
    np.testing.assert_array_equal(out, want)  # each frame blurred with one (σx, σy) drawn per clip
    none = Augmentation(hflip=0.0, brightness=0.0, contrast=0.0, crop_scale=1.0, blur=0.0)
    assert np.array_equal(augment_clip(clip, np.random.default_rng(3), none), clip)


def test_capture_offsets_repeat_frames_like_a_slow_camera_on_the_timeline():
    assert capture_offsets(16, 1.0, 0.0).tolist() == list(range(16))  # the timeline's own rate: unchanged
    half = capture_offsets(16, 0.5, 0.0).tolist()  # a 15 fps camera on a 30 fps timeline: pairs
    assert half == [0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14]
    odd = capture_offsets(16, 0.8, 0.3)  # 24 fps on 30: one frame in five repeated
    assert (np.diff(odd) >= 0).all() and 11 <= len(set(odd.tolist())) <= 14 and odd.max() <= 15
    clip = np.arange(16 * 2 * 2 * 3, dtype=np.uint8).reshape(16, 2, 2, 3)
    retimed = Augmentation(hflip=0, brightness=0, contrast=0, crop_scale=1.0, blur=0, capture_rate_min=0.5)
    seeds = [s for s in range(40) if np.random.default_rng(s).random(11)[8] < 0.5]  # draws that re-time
    out = augment_clip(clip, np.random.default_rng(seeds[0]), retimed)
    assert len({f.tobytes() for f in out}) < 16  # frames repeat


def test_evenly_spaced_starts():
    assert evenly_spaced(np.arange(3), 5).tolist() == [0, 1, 2]
    assert evenly_spaced(np.arange(100), 3).tolist() == [0, 50, 99]


# --- the loop -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One 2-epoch djldml run on the fake dataset, shared by the tests that inspect a finished run."""
    root = tmp_path_factory.mktemp("reference")
    cfg = load_config(SYNTHETIC_CONFIG, {**TINY, "lr": 3e-3, "out": str(root / "run")})
    return cfg, train(cfg, FakePreparedDataset(n_train=8, n_dev=4, n_test=6, n_frames=24, seed=0))


def test_same_seed_same_run(reference, fake_dataset, tmp_path):
    cfg, run = reference
    again = train(cfg.with_overrides(out=str(tmp_path / "again")), fake_dataset)
    assert without_timing(rows(again)) == without_timing(rows(run))
    assert_same_state(state_of(again / "last.pt"), state_of(run / "last.pt"))


def test_resume_continues_identically(reference, fake_dataset, tmp_path, monkeypatch):
    cfg, straight = reference

    class Crash(Exception):
        pass

    real_save = train_module._save

    def crashing_save(obj, path):
        real_save(obj, path)
        if path.name == "last.pt":
            raise Crash  # the process dies right after epoch 1's checkpoint

    interrupted = cfg.with_overrides(out=str(tmp_path / "resumed"))
    monkeypatch.setattr(train_module, "_save", crashing_save)
    with pytest.raises(Crash):
        train(interrupted, fake_dataset)
    monkeypatch.setattr(train_module, "_save", real_save)
    assert len(rows(Path(interrupted.out))) == 1
    resumed = train(interrupted.with_overrides(resume=True), fake_dataset)
    assert without_timing(rows(resumed)) == without_timing(rows(straight))
    assert_same_state(state_of(resumed / "last.pt"), state_of(straight / "last.pt"))
    with pytest.raises(ValueError, match="objective"):
        train(interrupted.with_overrides(resume=True, objective="ldl"), fake_dataset)


def test_best_checkpoint_has_the_lowest_dev_mae(reference, fake_dataset):
    cfg, run = reference
    records = rows(run)
    assert len(records) == 2 and {"train_main", "train_dml", "train_total", "dev_mae", "dev_rmse"} <= set(records[0])
    best = min(records, key=lambda r: r["dev_mae"])
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["epoch"] == best["epoch"] == records[-1]["best_epoch"]
    # best.pt holds the very weights that scored that MAE
    best_net = model_file.load_model(run)
    results = predict_split(best_net, fake_dataset, fake_dataset.split("dev"), cfg.dev_clips_per_video, progress=False)
    assert point_metrics([r.true for r in results], [r.predicted for r in results])["mae"] == pytest.approx(
        best["dev_mae"], rel=1e-6)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_each_objective_trains_and_exports(objective, tiny_config, small_dataset, tmp_path):
    run = train(tiny_config.with_overrides(objective=objective, epochs=1), small_dataset)
    (record,) = rows(run)
    assert record["steps"] == 1 and np.isfinite(record["train_total"]) and np.isfinite(record["dev_mae"])
    assert ("train_dml" in record) == objective.endswith("dml")
    ckpt = torch.load(run / "best.pt", weights_only=True)
    torch.save(ckpt["model"], tmp_path / "model.pt")  # what `trainer export` does
    net = model_file.load_model(tmp_path / "model.pt")
    assert net.config.head == ("regression" if objective.startswith("regression") else "distribution")
    assert_same_state(net.state_dict(), model_file.load_model(run).state_dict())


def test_early_stopping(tiny_config, small_dataset, monkeypatch):
    maes = iter([5.0, 4.0, 4.5, 4.2, 3.0, 1.0])
    monkeypatch.setattr(train_module, "point_metrics", lambda t, p: {"mae": next(maes), "rmse": 0.0, "n": 1})
    run = train(tiny_config.with_overrides(epochs=6, patience=2), small_dataset)
    assert [r["epoch"] for r in rows(run)] == [0, 1, 2, 3]  # two epochs without a better MAE after epoch 1
    assert torch.load(run / "best.pt", weights_only=True)["epoch"] == 1


def test_without_dev_videos_best_follows_the_training_loss(tiny_config, tmp_path):
    data = FakePreparedDataset(n_train=2, n_dev=0, n_test=1, n_frames=20)
    with pytest.warns(UserWarning, match="no usable development videos"):
        run = train(tiny_config.with_overrides(epochs=2), data)
    records = rows(run)
    assert "dev_mae" not in records[0]
    best = min(records, key=lambda r: r["train_total"])["epoch"]
    assert torch.load(run / "best.pt", weights_only=True)["epoch"] == best
    with pytest.warns(UserWarning):
        train(tiny_config.with_overrides(epochs=1), data)  # a fresh run in the same directory
    assert len(rows(run)) == 1  # starts a fresh log


# --- the command line ---------------------------------------------------------------------------------------------

def test_cli_train_evaluate_ablation(tiny_config, small_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(store_module, "PreparedDataset", lambda root: small_dataset)
    config = tmp_path / "tiny.toml"
    config.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in tiny_config.to_dict().items()) + "\n")
    assert cli_main(["train", "--config", str(config), "--objective", "ldl", "--epochs", "1", "--set",
                     "sigma=3", "--out", str(tmp_path / "cli")]) == 0
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert (saved["objective"], saved["sigma"], saved["epochs"]) == ("ldl", 3.0, 1)
    assert cli_main(["evaluate", str(tmp_path / "cli"), "--bootstrap", "50", "--no-progress"]) == 0
    assert "train_mean" in capsys.readouterr().out
    assert cli_main(["ablation", "--config", str(config), "--epochs", "1", "--objectives", "ldl", "djldml",
                     "--ablation-out", str(tmp_path / "abl"), "--bootstrap", "50"]) == 0
    table = capsys.readouterr().out
    for name in ("| ldl |", "| djldml |", "baseline: train mean", "baseline: train median"):
        assert name in table
    assert (tmp_path / "abl" / "ablation.md").is_file()


def test_cli_missing_module_disables_only_its_command(monkeypatch, capsys):
    import trainer.__main__ as cli

    monkeypatch.setitem(cli.PLUGGED, "export", ("trainer.no_such_module", "x"))
    assert cli.main(["export", "anything"]) == 2
    assert "trainer.no_such_module could not be imported" in capsys.readouterr().err


# --- DDP ----------------------------------------------------------------------------------------------------------

DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from tests.trainer.fakes import FakePreparedDataset
from trainer.config import TrainConfig
from trainer.train import train
import trainer.train as t
seen = []
t.DistributedDataParallel = (lambda cls: type("Spy", (cls,), {{"__init__": lambda self, m, **kw: (
    cls.__init__(self, m, **kw), seen.append(1))[0]}}))(t.DistributedDataParallel)
cfg = TrainConfig(**{cfg!r})
train(cfg, FakePreparedDataset(n_train=2, n_dev=1, n_test=2, n_frames=20, seed=1))
print("RANK_DONE", len(seen))
"""


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tiny_config, tmp_path):
    """torchrun-style: two gloo processes train one model; rank 0 writes the run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = str(Path(__file__).resolve().parents[2])
    # ldl: the embedding head is unused, the case where DDP fails unless such parameters are frozen
    script = DDP_SCRIPT.format(root=root, cfg={**tiny_config.to_dict(), "epochs": 1, "batch_size": 2,
                                               "clips_per_video": 4, "objective": "ldl"})
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all("RANK_DONE 1" in o for o in outs), outs
    (record,) = rows(Path(tiny_config.out))
    assert record["steps"] == 2 and "dev_mae" in record  # 8 clips / (2 per process × 2 processes)


def test_head_prior_starts_regression_at_the_train_mean_baseline():
    from djldml.network import build_network
    from trainer.train import init_head_prior

    net = build_network("c3d-tiny", head="regression").eval()
    init_head_prior(net, [3.0, 10.0, 29.0])
    with torch.no_grad():
        assert net(torch.randn(2, 3, 16, 112, 112)).score.tolist() == pytest.approx([14.0, 14.0])
    net = build_network("c3d-tiny")
    before = net.head.bias.clone()
    init_head_prior(net, [3.0, 10.0, 29.0])
    assert torch.equal(net.head.bias, before)  # the distribution head keeps its initialisation


def test_param_groups_decay_and_regression_head_lr():
    from djldml.network import build_network
    from trainer.train import param_groups

    cfg = TrainConfig(weight_decay=0.05, regression_head_lr_scale=10.0)
    net = build_network("c3d-tiny", head="regression")
    groups = param_groups(net, cfg)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    head = {id(p) for p in net.head.parameters()}
    for g in groups:
        assert g["weight_decay"] == (0.05 if all(p.dim() >= 2 for p in g["params"]) else 0.0)
        assert g["lr_scale"] == (10.0 if all(id(p) in head for p in g["params"]) else 1.0)
    assert {g["lr_scale"] for g in param_groups(build_network("c3d-tiny"), cfg)} == {1.0}  # LDL head: no scale
