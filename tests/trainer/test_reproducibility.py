"""What makes the same seed give the same model on a CPU (docs/training.md "Reproducibility"): the seed, the
thread count and the instruction set. A tiny seeded run, with the input option of the benchmark, twice."""

from __future__ import annotations

import torch

from trainer.train import train

from .fakes import FakePreparedDataset


def _weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model"]["state_dict"]


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_and_threads_give_the_same_model_other_threads_do_not(tiny_config, tmp_path):
    data = FakePreparedDataset(n_train=8, n_dev=4, n_test=6, n_frames=24, seed=0)
    cfg = tiny_config.with_overrides(epochs=1, input_dynamics="mean_removed", threads=1)
    before = torch.get_num_threads()
    try:
        first = _weights(train(cfg.with_overrides(out=str(tmp_path / "a")), data))
        second = _weights(train(cfg.with_overrides(out=str(tmp_path / "b")), data))
        assert _same(first, second)  # bit for bit
        two_threads = _weights(train(cfg.with_overrides(out=str(tmp_path / "d"), threads=2), data))
        assert torch.get_num_threads() == 2  # the config's thread count is what ran
        # the same seed on another thread count sums floats in another order: close, not identical
        assert not _same(first, two_threads)
        assert max((first[k].float() - two_threads[k].float()).abs().max().item() for k in first) < 0.1
    finally:
        torch.set_num_threads(before)
