"""The clip contract in time: every video is resampled by its timestamps to one frame rate before clips are cut.

A clip is T frames *of the model's frame rate* (``FaceConfig.fps``, recorded in the model card), so it spans
the same seconds whatever the camera delivered: 15, 25, 30, 60 fps or a variable rate. Resampled frame ``j``
stands for time ``j / fps`` after the video's first frame and shows the source frame whose timestamp is nearest
to it (half a source frame interval of error at most; "the frame on screen then" would allow a whole one, and
a variable-rate video's jitter shifted the demo's score by 3.5 points that way). A tie — within a millisecond,
the precision containers keep (WebM and Matroska store frame 2 of 30 fps at 67 ms) — goes to the earlier
frame: integer-ratio upsampling (15 → 30 fps) lands exactly between two frames.
Downsampling drops frames, upsampling repeats them; nothing is blended, so the pixels stay the camera's.

Where clips fall (:func:`clip_segments`) is a function of this timeline only — never of keyframes, GOPs or the
container — and is the one selection used by the service and by ``trainer evaluate`` on raw videos.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from .decode import DecodedFrame, FrameTable, SkipPlan

EPS_S = 1e-6  # timestamps within a microsecond are the same instant (rounding of time bases)


def resampled_length(last_time_s: float, fps: float, tolerance_s: float = EPS_S) -> int:
    """Frames of the timeline at ``fps`` for a video whose last frame starts ``last_time_s`` after its first
    (a frame stamped up to ``tolerance_s`` late still counts as shown at its slot)."""
    return int(math.floor((max(0.0, last_time_s) + tolerance_s) * fps)) + 1


class Timeline:
    """A video's frames resampled to ``fps``.

    With the probe's :class:`~djldml.faces.decode.FrameTable` (every frame's timestamp; the usual case) the
    mapping is exact and known before decoding: ``source_index[j]`` is the source frame shown at ``j / fps``,
    so a consumer that needs resampled frame ``j`` can ask the decoder for source frame ``source_index[j]``
    and GOP skipping keeps working. Without a table (duplicate or missing timestamps) the decoded frames'
    own times are used as they stream by, and ``n_frames`` comes from the probe's duration.
    """

    def __init__(self, fps: float, table: FrameTable | None, duration_s: float, source_fps: float):
        if not fps > 0:
            raise ValueError("the timeline's fps must be > 0")
        self.fps = float(fps)
        self.source_fps = float(source_fps)
        self.source_index: np.ndarray | None = None  # int64 [n_frames] when the table is known
        # timestamps this close count as equal (container rounding, exact ties of integer-ratio upsampling)
        self.tolerance = min(1e-3, 0.1 / max(self.fps, self.source_fps))
        if table is not None:
            times = (table.pts - table.pts[0]).astype(np.float64) * table.time_base
            self.n_frames = resampled_length(float(times[-1]), self.fps, self.tolerance)
            targets = np.arange(self.n_frames, dtype=np.float64) / self.fps
            # nearest frame: the number of midpoints between consecutive frames that lie before the target
            # (a tie, or a later frame nearer only within the tolerance, goes to the earlier frame)
            midpoints = 0.5 * (times[1:] + times[:-1])
            self.source_index = np.searchsorted(midpoints, targets - self.tolerance, side="left")
            # first resampled frame of each source frame; a source frame never shown has an empty range
            self._first = np.searchsorted(self.source_index, np.arange(len(times) + 1), side="left")
        else:
            last = max(0.0, duration_s - (1.0 / source_fps if source_fps > 0 else 0.0))
            self.n_frames = resampled_length(last, self.fps, self.tolerance)

    def source_for(self, j: int) -> int:
        """The source frame index to decode for resampled frame ``j`` (``j`` itself without a table)."""
        if self.source_index is None:
            return j
        return int(self.source_index[min(max(j, 0), self.n_frames - 1)])

    def resample(self, frames: Iterator[DecodedFrame]) -> Iterator[DecodedFrame]:
        """Resampled frames (``index`` = j, ``time`` = j / fps) from decoded source frames in presentation order.

        A source frame missing from ``frames`` (skipped GOP, dropped after a decode error) leaves its resampled
        frames out: consumers see the hole as a jump in ``index``.
        """
        if self.source_index is not None:
            for df in frames:
                if df.index + 1 >= len(self._first):
                    continue
                for j in range(int(self._first[df.index]), int(self._first[df.index + 1])):
                    yield replace(df, index=j, time=j / self.fps)
            return
        yield from self._resample_by_times(frames)

    def _resample_by_times(self, frames: Iterator[DecodedFrame]) -> Iterator[DecodedFrame]:
        # The frame nearest to j/fps is known once the next frame (or the end) arrives: targets up to the
        # midpoint (plus the tolerance) go to the earlier frame. A jump in source indices is a hole: targets more
        # than half a source frame interval after the frame before it are not near any decoded frame.
        half = 0.5 / self.source_fps if self.source_fps > 0 else math.inf
        j, prev = 0, None
        for df in frames:
            if prev is not None:
                while j < self.n_frames and j / self.fps - self.tolerance <= 0.5 * (prev.time + df.time):
                    if df.index == prev.index + 1 or j / self.fps - prev.time <= half + self.tolerance:
                        yield replace(prev, index=j, time=j / self.fps)
                    j += 1
            prev = df
        while prev is not None and j < self.n_frames:
            yield replace(prev, index=j, time=j / self.fps)
            j += 1


def clip_segments(n_frames: int, span: int, max_clips: int) -> list[tuple[int, int]]:
    """[first, last) ranges of allowed clip starts on the resampled timeline: ``max_clips`` equal parts of the
    video (fewer when it is short); the sampled mode takes the first window with a face in each part, trying
    from the part's first frame. A function of ``n_frames`` only, so of the video's duration and the model's
    frame rate — never of how it was encoded."""
    n_seg = max(1, min(max_clips, n_frames // span))
    bounds = [j * n_frames // n_seg for j in range(n_seg + 1)]
    last_start = n_frames - span  # the last frame index at which a whole clip still fits
    return [(bounds[j], min(bounds[j + 1], last_start + 1)) for j in range(n_seg)]


class ResampledSkipPlan(SkipPlan):
    """A :class:`~djldml.faces.decode.SkipPlan` whose consumer counts in resampled frames: it sets ``needed``
    (a resampled index) and the decoder reads ``next_needed`` as the source frame shown then."""

    def __init__(self, timeline: Timeline):
        self.timeline = timeline
        self.needed = 0
        super().__init__()

    @property
    def next_needed(self) -> int:
        return self.timeline.source_for(self.needed)

    @next_needed.setter
    def next_needed(self, value: int) -> None:  # SkipPlan.__init__ sets 0; a resampled frame 0 is source frame 0
        self.needed = value
