"""The synthetic dataset: labelled synthetic everywhere, subject-disjoint, score only in the motion."""

from __future__ import annotations

import csv
import dataclasses
import json

import av
import numpy as np

from trainer import synth
from trainer.synth import SCORE_MAX, SynthConfig, plan, render_frames, score_frequency, triangle

SMALL = SynthConfig(subjects=(4, 2, 2), videos_per_subject=3, seconds=1.0, seed=3)


def test_plan_is_deterministic_and_subject_disjoint():
    videos = plan(SMALL)
    assert plan(SMALL) == videos and plan(dataclasses.replace(SMALL, seed=4)) != videos
    splits = {}
    for v in videos:
        splits.setdefault(v.subject.subject_id, set()).add(v.subject.split)
    assert all(len(s) == 1 for s in splits.values())  # every subject in exactly one split
    assert [sum(1 for s in splits.values() if s == {name}) for name in ("train", "dev", "test")] == [4, 2, 2]


def test_every_subject_spans_the_score_range():
    """Appearance is per subject; scores are spread within each subject, so appearance cannot give the score."""
    by_subject = {}
    for v in plan(SynthConfig(subjects=(20, 0, 0), seed=1)):
        by_subject.setdefault(v.subject.subject_id, []).append(v.bdi)
    for scores in by_subject.values():
        assert all(0 <= s <= SCORE_MAX for s in scores)
        assert max(scores) - min(scores) >= SCORE_MAX / 3  # one score per third of the range
    means = [np.mean(s) for s in by_subject.values()]
    assert np.std(means) < 8  # subjects' mean scores are alike


def test_score_sets_speed_only():
    assert score_frequency(0) > score_frequency(20) > score_frequency(SCORE_MAX) > 0
    # A triangle wave occupies every level equally at any frequency: one frame's position says nothing.
    t = np.random.default_rng(0).uniform(0, 1000, 50000)
    for f in (score_frequency(0), score_frequency(SCORE_MAX)):
        hist, _ = np.histogram(triangle(f * t + 0.3), bins=8, range=(-1, 1))
        assert hist.min() > 0.95 * hist.mean()


def _video(score: int, subject_index: int = 0, **subject_changes):
    v = plan(SMALL)[subject_index * 3]
    subject = dataclasses.replace(v.subject, **subject_changes)
    return dataclasses.replace(v, subject=subject, bdi=score, frequency=score_frequency(score))


def test_first_frame_does_not_depend_on_the_score():
    low = next(render_frames(_video(2), SMALL))
    high = next(render_frames(_video(44), SMALL))
    assert np.array_equal(low, high)  # same subject, phases and drift: the score changed nothing static


def test_low_scores_move_faster():
    def motion(score):  # mean frame-to-frame change, without sensor noise (it would swamp the measure)
        frames = np.stack(list(render_frames(_video(score, noise=0.0), SMALL))).astype(np.float32)
        return np.abs(np.diff(frames, axis=0)).mean()

    assert motion(0) > 1.2 * motion(SCORE_MAX)


def test_generate_labels_everything_synthetic(tmp_path):
    cfg = SynthConfig(subjects=(1, 1, 1), videos_per_subject=1, seconds=0.6, seed=0)
    manifest = synth.generate(tmp_path, cfg, progress=False)
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 3 and {r["split"] for r in rows} == {"train", "dev", "test"}
    assert all(r["synthetic"] == "1" for r in rows)
    info = json.loads((tmp_path / "synthetic.json").read_text())
    assert info["synthetic"] is True and "SYNTHETIC" in info["description"]
    assert "SYNTHETIC" in (tmp_path / "README.md").read_text()
    with av.open(str(tmp_path / rows[0]["video"])) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        assert (s.width, s.height) == cfg.size and n == round(cfg.seconds * cfg.fps)
    # Re-running keeps the videos (resume) and rewrites the same manifest.
    before = (tmp_path / rows[0]["video"]).stat().st_mtime_ns
    synth.generate(tmp_path, cfg, progress=False)
    assert (tmp_path / rows[0]["video"]).stat().st_mtime_ns == before
