"""The SYNTHETIC multi-identity benchmark (trainer.synth_identities): real distinct faces, subject-disjoint splits,
the score carried by a movement amplitude (monotone, per-person gain), everything labelled synthetic."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json

import numpy as np
import pytest

from trainer.synth import SPRITE_LANDMARKS
from trainer.synth_identities import (
    A_HIGH_SCORE,
    A_LOW_SCORE,
    IDENTITIES,
    PERSON_GAIN,
    IdentitiesConfig,
    IdentityRenderer,
    generate,
    identity_sprite,
    jaw_amplitude,
    plan,
)


def test_at_least_eight_distinct_real_faces_with_their_source_and_licence():
    assert len(IDENTITIES) >= 8 and len({i.name for i in IDENTITIES}) == len(IDENTITIES)
    sprites = {i.name: identity_sprite(i.name).astype(np.float32) for i in IDENTITIES}
    for i in IDENTITIES:
        assert i.package and i.source and i.licence
        assert sprites[i.name].std() > 20  # a picture, not a blank
    # The inner face (eyes to mouth) of every pair differs by far more than sensor noise: no face twice.
    (x0, y0), (x1, y1) = SPRITE_LANDMARKS.min(0).astype(int) - 8, SPRITE_LANDMARKS.max(0).astype(int) + 8
    inner = {k: v[y0:y1, x0:x1].mean(2) for k, v in sprites.items()}
    for a, b in itertools.combinations(inner, 2):
        za = (inner[a] - inner[a].mean()) / inner[a].std()
        zb = (inner[b] - inner[b].mean()) / inner[b].std()
        assert np.abs(za - zb).mean() > 0.3, (a, b)  # contrast-normalised: not one face under other lighting


def test_splits_are_subject_disjoint_and_deterministic():
    config = IdentitiesConfig()
    videos = plan(config)
    assert [v.plan.video_id for v in videos] == [v.plan.video_id for v in plan(config)]
    split_of: dict[str, set[str]] = {}
    for v in videos:
        split_of.setdefault(v.identity, set()).add(v.plan.subject.split)
    assert all(len(s) == 1 for s in split_of.values())  # each identity in exactly one split
    per_split = {s: sum(next(iter(x)) == s for x in split_of.values()) for s in ("train", "dev", "test")}
    assert tuple(per_split.values()) == config.splits
    other = {v.identity for v in plan(IdentitiesConfig(seed=1)) if v.plan.subject.split == "test"}
    assert other != {i for i, s in split_of.items() if s == {"test"}}  # the seed chooses who is held out
    with pytest.raises(ValueError):
        IdentitiesConfig(splits=(9, 1, 1))  # more identities than exist


def test_score_sets_the_amplitude_monotonically_with_a_per_person_gain():
    scores = np.arange(0, 46)
    for gain in (PERSON_GAIN[0], 1.0, PERSON_GAIN[1]):
        amps = np.array([jaw_amplitude(s, gain) for s in scores])
        assert np.all(np.diff(amps) < 0)
        assert amps[0] == pytest.approx(gain * A_LOW_SCORE) and amps[-1] == pytest.approx(gain * A_HIGH_SCORE)
    videos = plan(IdentitiesConfig())
    gains = {v.identity: v.person_gain for v in videos}
    assert min(gains.values()) >= PERSON_GAIN[0] and max(gains.values()) <= PERSON_GAIN[1]
    assert len(set(gains.values())) == len(gains)  # people differ in expressiveness
    for v in videos:  # the amplitude is the score's, times the person's gain; nothing else enters it
        assert v.jaw_amplitude == pytest.approx(jaw_amplitude(v.plan.bdi, v.person_gain))
        assert v.plan.subject.mouth_amplitude == v.jaw_amplitude
    # the frequency is drawn independently of the score: speed alone does not give it away
    bdi = np.array([v.plan.bdi for v in videos])
    freq = np.array([v.plan.frequency for v in videos])
    assert abs(np.corrcoef(bdi, freq)[0, 1]) < 0.3


def _mouth_motion(video, size=(160, 120), n=20) -> float:
    """Mean temporal std of the pixels around the mouth over one movement period (no noise, no head motion)."""
    still = dataclasses.replace(video.plan.subject, noise=0.0, brow_amplitude=0.0)
    renderer = IdentityRenderer(dataclasses.replace(video, plan=dataclasses.replace(video.plan, subject=still)),
                                size)
    renderer.head_motion = 0.0
    period = 1.0 / video.plan.frequency
    frames = np.stack([renderer.render(k * period / n, noise_pick=0) for k in range(n)]).astype(np.float32)
    return float(frames.std(0).mean())


def test_rendered_motion_falls_as_the_score_rises():
    base = plan(IdentitiesConfig())[0]
    motion = []
    for score in (0, 15, 30, 45):
        amp = jaw_amplitude(score, base.person_gain)
        subject = dataclasses.replace(base.plan.subject, mouth_amplitude=amp)
        video = dataclasses.replace(base, plan=dataclasses.replace(base.plan, bdi=score, subject=subject),
                                    jaw_amplitude=amp)
        motion.append(_mouth_motion(video))
    assert all(a > b for a, b in itertools.pairwise(motion)), motion


def test_generate_labels_everything_synthetic(tmp_path):
    config = IdentitiesConfig(splits=(6, 2, 2), videos_per_identity=1, seconds=0.2, size=(96, 72))
    manifest = generate(tmp_path, config, progress=False)
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and all(r["synthetic"] == "1" for r in rows)
    assert len({r["subject"] for r in rows}) == 10
    assert all((tmp_path / r["video"]).stat().st_size > 0 for r in rows)
    assert "SYNTHETIC" in (tmp_path / "README.md").read_text()
    info = json.loads((tmp_path / "synthetic.json").read_text())
    assert info["synthetic"] is True and "SYNTHETIC" in info["description"]
    assert {i["name"] for i in info["identities"]} == {r["subject"] for r in rows}
    assert all(i["licence"] and i["package"] for i in info["identities"])



def test_rendering_is_deterministic():
    """The same plan renders the same pixels, in any process (docs/training.md, "Reproducibility": the H.264
    encoding after it is not deterministic yet, so this is tested before the encoder)."""
    video = plan(IdentitiesConfig())[1]
    first = [IdentityRenderer(video, (160, 120)).render(k / 25) for k in range(10)]
    again = [IdentityRenderer(video, (160, 120)).render(k / 25) for k in range(10)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert np.abs(first[0].astype(int) - first[5]).max() > 0  # it moves
