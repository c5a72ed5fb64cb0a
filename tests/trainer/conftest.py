"""Shared fixtures of the trainer tests: a fake prepared dataset and a tiny, fast CPU config."""

from __future__ import annotations

import pytest
import torch

from trainer.config import SYNTHETIC_CONFIG, load_config

from .fakes import FakePreparedDataset


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Same thread count in every test (float sums, hence bit-exact comparisons, depend on it); one thread is
    also the fastest on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fake_dataset() -> FakePreparedDataset:
    return FakePreparedDataset(n_train=8, n_dev=4, n_test=6, n_frames=24, seed=0)


TINY = {"preset": "c3d-tiny", "epochs": 2, "batch_size": 4, "clips_per_video": 2, "n_bins": 20,
        "dev_clips_per_video": 2, "eval_clips_per_video": 3, "progress": False}


@pytest.fixture
def tiny_config(tmp_path):
    """c3d-tiny, 4 steps per epoch on ``fake_dataset``: an epoch with its dev check takes ≈2 s on one core."""
    return load_config(SYNTHETIC_CONFIG, {**TINY, "out": str(tmp_path / "run")})


@pytest.fixture
def small_dataset() -> FakePreparedDataset:
    """One step per epoch with ``tiny_config``: for tests of the loop's logic, not of learning."""
    return FakePreparedDataset(n_train=2, n_dev=1, n_test=2, n_frames=20, seed=1)
