"""The clip timeline: resampling by timestamps to the model's frame rate, and where clips fall."""

from __future__ import annotations

import numpy as np
import pytest

from djldml.faces.decode import DecodedFrame, FrameTable
from djldml.faces.timeline import Timeline, clip_segments, resampled_length


def _table(times_s, time_base=1 / 90000):
    pts = np.round(np.asarray(times_s) / time_base).astype(np.int64)
    return FrameTable(pts=pts, key_pts=pts[:1], time_base=time_base)


def _timeline(times_s, fps, time_base=1 / 90000):
    times_s = np.asarray(times_s, dtype=np.float64)
    source_fps = (len(times_s) - 1) / (times_s[-1] - times_s[0])
    return Timeline(fps, _table(times_s, time_base), float(times_s[-1] + 1 / source_fps), source_fps)


def _frames(times_s, indices=None):
    indices = range(len(times_s)) if indices is None else indices
    return [DecodedFrame(index=i, time=float(times_s[i]), frame=None) for i in indices]


@pytest.mark.parametrize(("source_fps", "fps", "expected"), [
    (30.0, 30.0, list(range(10))),  # identity
    (60.0, 30.0, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]),  # every other frame
    (15.0, 30.0, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]),  # each frame twice (exact ties go to the earlier frame)
    (25.0, 30.0, [0, 1, 2, 2, 3, 4, 5, 6, 7, 7]),  # nearest: at most half a source interval off
])
def test_resampling_picks_the_nearest_frame(source_fps, fps, expected):
    times = np.arange(40) / source_fps
    tl = _timeline(times, fps)
    assert tl.source_index[:10].tolist() == expected
    assert np.abs(times[tl.source_index] - np.arange(tl.n_frames) / fps).max() <= 0.5 / source_fps + 1e-9
    out = list(tl.resample(iter(_frames(times))))
    assert [f.index for f in out] == list(range(tl.n_frames))
    assert [f.time for f in out] == pytest.approx(np.arange(tl.n_frames) / fps)


def test_a_clip_spans_the_same_seconds_at_any_frame_rate():
    for source_fps in (15.0, 24.0, 25.0, 30.0, 50.0, 60.0):
        times = np.arange(int(4 * source_fps)) / source_fps  # 4 s
        tl = _timeline(times, 30.0)
        # the last frame starts 4 s − one interval after the first: 30 fps frames up to it
        assert tl.n_frames == resampled_length(times[-1], 30.0, tl.tolerance)
        assert 4.0 * 30 - 30 / source_fps - 1 <= tl.n_frames <= 4.0 * 30 + 1


def test_millisecond_timestamps_do_not_shift_frames():
    # WebM/Matroska store 30 fps frames at 0, 33, 67, 100 ms: frame 2 is 0.33 ms after 2/30 s
    times = np.round(np.arange(30) / 30.0 * 1000) / 1000
    tl = _timeline(times, 30.0, time_base=1 / 1000)
    assert tl.source_index.tolist() == list(range(30))


def test_variable_frame_rate_follows_the_timestamps():
    rng = np.random.default_rng(0)
    intervals = np.concatenate([np.full(30, 1 / 30), np.full(15, 1 / 15)]) * rng.uniform(0.7, 1.3, 45)
    times = np.concatenate([[0.0], np.cumsum(intervals)])
    tl = _timeline(times, 25.0)
    targets = np.arange(tl.n_frames) / 25.0
    nearest = np.abs(times[None, :] - targets[:, None]).argmin(axis=1)
    assert (tl.source_index == nearest).mean() > 0.95  # ties within the tolerance may go to the earlier frame
    assert np.abs(times[tl.source_index] - targets).max() <= 0.5 * intervals.max() + tl.tolerance


def test_a_missing_source_frame_leaves_a_hole():
    times = np.arange(20) / 30.0
    tl = _timeline(times, 30.0)
    out = list(tl.resample(iter(_frames(times, [i for i in range(20) if i not in (7, 8)]))))
    assert [f.index for f in out] == [i for i in range(20) if i not in (7, 8)]


def test_without_a_table_the_decoded_times_are_used():
    times = np.arange(40) / 60.0
    tl = Timeline(30.0, None, 40 / 60.0, 60.0)
    out = list(tl.resample(iter(_frames(times))))
    with_table = _timeline(times, 30.0)
    assert [f.index for f in out] == list(range(with_table.n_frames))
    assert [round(f.time * 60) for f in out] == [2 * j for j in range(with_table.n_frames)]  # same frames' times
    assert [out[j].frame is None for j in range(len(out))]


def test_clip_segments_depend_on_the_timeline_only():
    assert clip_segments(300, 16, 8) == [(0, 37), (37, 75), (75, 112), (112, 150), (150, 187), (187, 225),
                                         (225, 262), (262, 285)]
    assert clip_segments(40, 16, 32) == [(0, 20), (20, 25)]  # short: as many segments as whole clips fit
    assert clip_segments(16, 16, 32) == [(0, 1)]
