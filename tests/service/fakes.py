"""Stand-ins for unit tests of the service: a backend and a face pipeline that need no model and no detector.

The fake backend's distribution of a clip is a Gaussian label distribution centred on the clip's mean pixel
value scaled to 0..63, so tests can compute the expected score independently.
"""

from __future__ import annotations

import threading

import numpy as np

from djldml import labels
from djldml.clips import CLIP_SHAPE, ClipMeta, FaceClips, QualityReport
from service.backends.base import BackendUnavailable, ModelInfo


def clip_centre(clip: np.ndarray) -> float:
    return float(clip.mean()) / 255.0 * labels.MAX_SCORE


class FakeBackend:
    def __init__(self, fail_times: int = 0, delay_s: float = 0.0):
        self.fail_times = fail_times  # the first N calls raise BackendUnavailable
        self.delay_s = delay_s
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def clip_distributions(self, clips: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.gate.wait(10)
        if self.calls <= self.fail_times:
            raise BackendUnavailable("fake backend down")
        self.batch_sizes.append(len(clips))
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        return np.stack([labels.label_distribution(clip_centre(c)) for c in clips])

    def model_info(self) -> ModelInfo:
        return ModelInfo(name="fake", version="0", sha256="0" * 64, synthetic_demo=True, description="unit tests")

    def ready(self) -> tuple[bool, str]:
        return True, ""

    def close(self) -> None:
        pass


def fake_clips(n: int = 5, seed: int = 0) -> FaceClips:
    rng = np.random.default_rng(seed)
    clips = np.stack([np.full(CLIP_SHAPE, rng.integers(20, 235), dtype=np.uint8) for _ in range(n)])
    meta = [ClipMeta(first_frame=16 * i, last_frame=16 * i + 15, start_time=16 * i / 30) for i in range(n)]
    q = QualityReport(frames_decoded=16 * n, frames_with_face=16 * n, clips_made=n, duration_s=16 * n / 30, fps=30.0,
                      width=320, height=240)
    return FaceClips(clips, meta, q)


def expected_score(fc: FaceClips) -> float:
    d = np.stack([labels.label_distribution(clip_centre(c)) for c in fc.clips]).mean(0)
    return float(labels.expectation(d / d.sum()))


def all_at_once(n: int, call) -> list:
    """``call(i)`` for i in 0..n-1, each in its own thread, released together by a barrier; their results."""
    import threading

    barrier, results = threading.Barrier(n), []

    def one(i):
        barrier.wait()
        results.append(call(i))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
