"""Capture faults at the decoding level (issue 8): the same face gives the same clips whatever the capture — a
face-less stream first, full colour range, a header that lies about the duration, damaged packets, interlaced
fields, a mirroring display matrix — and the quality report says what was chosen or corrected. A cut moov-first
mp4 is scored on its readable part and flagged. Media: tests/faulty_media.py."""

import av
import cv2
import numpy as np
import pytest

from djldml.faces import FaceConfig, extract_face_clips, iter_aligned_frames, probe
from djldml.faces.decode import (
    Deadline,
    DecodeErrors,
    FrameConverter,
    SkipPlan,
    _interpolate_lines,
    decode_frames,
    display_orientation,
    stored_to_display,
)
from tests.faulty_media import (
    cut_faststart_video,
    damaged_video,
    interlaced_video,
    lying_duration_video,
    mirrored_video,
    range_video,
    two_stream_video,
)
from tests.media import face_scene, face_video, make_truncated_copy

from .truth import eye_errors

DENSE = FaceConfig(max_clips=None)


def _dense(path, config=DENSE):
    """{frame index: (aligned face uint8 [S, S, 3], landmarks [5, 2])} of the frames with a face, and the
    report."""
    frames = iter_aligned_frames(path, config)
    out = {af.index: (af.face, af.landmarks) for af in frames if af.face is not None}
    return out, frames.report


# --- 1. stream choice ------------------------------------------------------------------------------------------


def test_the_default_stream_is_used_not_the_first():
    path = two_stream_video(container="mkv", default_second=True)
    info = probe(path, FaceConfig())
    assert (info.stream_index, info.stream_chosen_by) == (1, "default")
    assert (info.width, info.height) == (320, 240)
    # Decoding reads the same stream as the probe: the face track's frames.
    frames = decode_frames(path, FaceConfig(), Deadline(60))
    assert (next(frames).frame.width, next(frames).frame.height) == (320, 240)
    frames.close()
    result = extract_face_clips(path)
    assert len(result) >= 1
    assert result.quality.corrections["stream"] == {"index": 1, "chosen_by": "default"}


def test_without_a_default_the_largest_stream_is_used():
    path = two_stream_video(container="avi", default_second=False)
    result = extract_face_clips(path)
    assert len(result) >= 1
    assert result.quality.corrections["stream"] == {"index": 1, "chosen_by": "largest"}


def test_a_single_stream_reports_no_stream_choice():
    result = extract_face_clips(face_video(seconds=1.0, size=(320, 240)))
    assert "stream" not in result.quality.corrections


# --- 2. colour range -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["vp9", "h264"])  # VP9: yuv420p + color_range=pc; H.264: yuvj420p
def test_full_range_gives_the_same_faces_as_limited_range(codec):
    limited, rep_limited = _dense(range_video(full=False, codec=codec))
    full, rep_full = _dense(range_video(full=True, codec=codec))
    common = sorted(set(limited) & set(full))
    assert len(common) >= 20
    a = np.stack([limited[i][0] for i in common]).astype(np.float64)
    b = np.stack([full[i][0] for i in common]).astype(np.float64)
    # Same scene, same faces. Landmark noise between two encodings moves the alignment by a pixel or two, so
    # compare blurred faces (σ = 4 px) and the statistics that a wrong range changes: contrast and clipping.
    # Measured on these faces, before the fix and after: VP9 full range converted as limited in the region conversion:
    # blurred difference 8.2 grey levels, std 71.3 vs 63.1, 4.0 % vs 1.2 % of channel values clipped to 0; now
    # 2.6, 62.8 vs 63.1, 1.3 % vs 1.2 %. H.264 (yuvj420p) gave 3.6, 62.9 vs 62.9 before and after.
    # (Since the landmarks come from the face square at 128 px, VP9's noise moves them by ≈2 px between the two
    # encodings, which alone makes the blurred difference ≈8: the statistics below are what the range decides.)
    blurred = np.abs(_blur(a) - _blur(b)).mean()
    assert blurred < (9.0 if codec == "vp9" else 4.5), blurred
    assert abs(b.std() / a.std() - 1) < 0.05, (a.std(), b.std())
    assert abs(b.mean() - a.mean()) < 3.0, (a.mean(), b.mean())
    zero_a, zero_b = (a == 0).mean(), (b == 0).mean()
    assert abs(zero_b - zero_a) < 0.5 * zero_a + 1e-3, (zero_a, zero_b)
    assert rep_full.corrections.get("color_range") == "pc" and "color_range" not in rep_limited.corrections


def _blur(faces: np.ndarray) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(f, (0, 0), 4) for f in faces])


def test_region_conversion_keeps_the_full_range():
    """rgb_region rebuilds a frame from the planes: it must convert as rgb() does, full range included."""
    with av.open(str(range_video(full=True, codec="vp9"))) as container:
        frame = next(container.decode(video=0))
    assert frame.format.name == "yuv420p" and int(frame.color_range) == 2  # the case that was lost
    conv = FrameConverter(0, 320)
    whole = conv.rgb(frame).astype(int)
    region = conv.rgb_region(frame, 100, 60, 220, 180).astype(int)
    np.testing.assert_array_equal(region, whole[60:180, 100:220])
    small, _, _ = conv.small_bgr(frame)
    reference = frame.reformat(format="bgr24", width=small.shape[1], height=small.shape[0], src_color_range="JPEG")
    assert np.abs(small.astype(int) - reference.to_ndarray().astype(int)).mean() < 2.0


# --- 3. the header's duration is a hint ------------------------------------------------------------------------


def test_a_header_claiming_nine_hours_does_not_refuse_a_six_second_video():
    path = lying_duration_video(seconds=6.0, claims_s=9 * 3600.0)
    with av.open(str(path)) as container:
        assert container.duration / 1e6 > 8 * 3600  # the file does claim it
    info = probe(path, FaceConfig())
    assert info.duration_s == pytest.approx(6.0, abs=0.05) and info.n_frames == 180
    result = extract_face_clips(path)
    assert len(result) >= 1 and result.quality.duration_s == pytest.approx(6.0, abs=0.05)
    # The claim is reported, not trusted.
    truncated = result.quality.corrections["truncated"]
    assert truncated["by"] == "header_duration" and truncated["duration_declared_s"] == pytest.approx(32400.0)
    assert truncated["frames_read"] == 180


# --- 4. damaged packets ----------------------------------------------------------------------------------------

BAD = (40, 41, 42)  # corrupted P-frame packets; the GOP runs 30–59, the next keyframe is frame 60


def test_frames_after_a_damaged_packet_are_dropped_until_the_next_keyframe():
    path = damaged_video(bad=BAD, gop=30, seconds=3.0)
    info = probe(path, FaceConfig())
    errors = DecodeErrors()
    plan = SkipPlan()  # with a plan (never raised: nothing skipped) frames are numbered by the frame table
    seen = [df.index for df in decode_frames(path, FaceConfig(), Deadline(60), info.table, plan, errors)]
    missing = set(range(90)) - set(seen)
    assert set(range(40, 60)) <= missing, sorted(missing)  # damaged, then predicted from damage: all gone
    # Frame threads report an error a few packets late: at most a few frames before it go too; never another GOP.
    assert missing <= set(range(30, 60)), sorted(missing)
    assert errors.packets >= len(BAD)
    assert errors.frames_dropped >= 60 - 43  # frames 43–59 decoded "fine" from damaged references
    assert seen == sorted(seen) and set(range(60, 90)) <= set(seen)


def test_counting_without_a_table_skips_the_dropped_indices():
    path = damaged_video(bad=BAD, gop=30, seconds=3.0)
    errors = DecodeErrors()
    seen = [df.index for df in decode_frames(path, FaceConfig(decode_threads=1), Deadline(60), None, None, errors)]
    # One thread: exactly the damaged GOP's tail (43–59) is dropped, and its indices are skipped. Without a frame
    # table the packets that failed (40–42) leave no frame to count: indices after them run 3 short, as before.
    assert seen == [*range(40), *range(40 + 17, 90 - 3)], seen
    assert errors.frames_dropped == 17 and errors.packets == 3


@pytest.mark.parametrize("max_clips", [None, 32])
def test_the_report_counts_frames_dropped_after_a_decode_error(max_clips):
    result = extract_face_clips(damaged_video(bad=BAD, gop=30, seconds=3.0), FaceConfig(max_clips=max_clips))
    q = result.quality
    assert q.dropped["after_decode_error"] == q.corrections["frames_after_decode_error"] >= 17
    for meta in result.meta:  # no clip holds a frame of the damaged stretch
        assert meta.last_frame < 40 or meta.first_frame >= 60, meta


# --- 5. interlaced ---------------------------------------------------------------------------------------------


def _row_energy(faces: np.ndarray) -> float:
    """Mean absolute difference between vertically adjacent pixels: combing (alternate lines from two instants)
    raises it."""
    f = faces.astype(np.float64)
    return float(np.abs(f[:, 1:] - f[:, :-1]).mean())


def test_interlaced_video_is_deinterlaced_before_faces_are_cut():
    prog, rep_prog = _dense(interlaced_video(progressive=True))
    inter, rep_inter = _dense(interlaced_video(progressive=False))
    assert len(inter) >= 0.9 * len(prog) > 40
    e_prog = _row_energy(np.stack([f for f, _ in prog.values()]))
    e_inter = _row_energy(np.stack([f for f, _ in inter.values()]))
    # Measured: progressive 6.7; interlaced converted as if progressive 11.1 (combing); deinterlaced 5.7.
    assert e_inter < 1.1 * e_prog, (e_inter, e_prog)
    assert rep_inter.corrections.get("deinterlaced") is True and "deinterlaced" not in rep_prog.corrections


@pytest.mark.parametrize("first", [0, 1, 2, 3])
@pytest.mark.parametrize("n", [2, 3, 4, 7, 8])
def test_interpolate_lines_replaces_the_bottom_field_only(n, first):
    rows = np.random.default_rng(n * 10 + first).integers(0, 256, (n, 6, 3)).astype(np.uint8)
    out = _interpolate_lines(rows.copy(), first)
    for j in range(n):
        if (j + first) % 2 == 0:  # a top-field row: kept
            np.testing.assert_array_equal(out[j], rows[j])
        else:  # a bottom-field row: the mean of its top-field neighbours (one at an edge)
            expected = np.mean([rows[k].astype(float) for k in (j - 1, j + 1) if 0 <= k < n], axis=0)
            assert np.abs(out[j] - expected).max() <= 0.5


def test_interlaced_region_and_whole_frame_agree():
    with av.open(str(interlaced_video(progressive=False))) as container:
        frames = [f for _, f in zip(range(5), container.decode(video=0), strict=False)]
    frame = frames[-1]
    assert frame.interlaced_frame
    conv = FrameConverter(0, 320)
    whole = conv.rgb(frame).astype(int)
    region = conv.rgb_region(frame, 100, 60, 220, 180).astype(int)
    # Interpolated in YUV (region) or in RGB (whole frame): equal up to rounding and chroma interpolation.
    assert np.abs(region[2:-2] - whole[62:178, 100:220]).mean() < 2.0
    assert conv.deinterlaced == 2
    small, sx, sy = conv.small_bgr(frame)
    assert small.shape[:2] == (240, 320) and sx == sy == 1.0


# --- 6. a display matrix that mirrors --------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_stored_to_display_with_a_flip_matches_fliplr_of_rot90(rotation):
    stored = np.arange(30 * 50).reshape(30, 50)
    shown = np.fliplr(np.rot90(stored, rotation // 90))
    m = stored_to_display(rotation, 50, 30, hflip=True)[:2]
    for y, x in [(0, 0), (29, 0), (0, 49), (17, 23)]:
        dx, dy = m @ [x, y, 1.0]
        assert shown[int(round(dy)), int(round(dx))] == stored[y, x]


class _FrameWithMatrix:
    """Stands in for a decoded frame carrying a display matrix (side data), for display_orientation."""

    def __init__(self, matrix: list[int]):
        self.side_data = {av.sidedata.sidedata.Type.DISPLAYMATRIX: np.asarray(matrix, "<i4").tobytes()}
        self.rotation = None


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_display_orientation_follows_ffmpegs_matrix_convention(turns, flip):
    """Every rotation, with and without a mirror: FFmpeg's display matrix [a b u; c d v; tx ty w] (16.16) maps a
    stored pixel (x, y) to (a·x + c·y + tx, b·x + d·y + ty) (libavutil/display.h). The picture that mapping
    gives must be the one display_orientation's (rotation, hflip) describes."""
    one = 65536
    a, b, c, d = [(one, 0, 0, one), (0, -one, one, 0), (-one, 0, 0, -one), (0, one, -one, 0)][turns]
    if flip:  # mirror the displayed x: negate the first column
        a, c = -a, -c
    stored = np.arange(3 * 5).reshape(3, 5)
    ys, xs = np.mgrid[:3, :5]
    dx = (a * xs + c * ys) // one
    dy = (b * xs + d * ys) // one
    dx, dy = dx - dx.min(), dy - dy.min()
    shown = np.zeros((dy.max() + 1, dx.max() + 1), stored.dtype)
    shown[dy, dx] = stored
    rotation, hflip = display_orientation(_FrameWithMatrix([a, b, 0, c, d, 0, 0, 0, 1 << 30]))
    assert hflip == flip
    expected = np.rot90(stored, rotation // 90)
    np.testing.assert_array_equal(shown, np.fliplr(expected) if hflip else expected)


@pytest.mark.parametrize("rotation", [0, 90])
def test_frame_converter_shows_the_detector_the_displayed_picture(rotation):
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[:60, :80] = (255, 0, 0)  # red top-left corner of the stored frame
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    small, sx, sy = FrameConverter(rotation, 320, hflip=True).small_bgr(frame)
    expected = np.fliplr(np.rot90(rgb, rotation // 90))
    red = np.argwhere(small[:, :, 2] > 128).mean(0) * 2
    assert np.allclose(red, np.argwhere(expected[:, :, 0] > 128).mean(0), atol=2)


def test_a_mirroring_display_matrix_is_a_flip_not_a_half_turn():
    path = mirrored_video(seconds=2.0, size=(320, 240))
    mirrored, report = _dense(path)
    upright, _ = _dense(face_video(seconds=2.0, size=(320, 240)))
    scene = face_scene(seconds=2.0, size=(320, 240))
    common = sorted(set(mirrored) & set(upright))
    assert len(common) >= 50
    rel = []
    for i in common:
        truth = scene.truth(i)
        eye = truth.eye_distance
        # Same landmarks as the upright original: within a few % of the eye distance.
        rel.append(np.linalg.norm(mirrored[i][1] - upright[i][1], axis=1).max() / eye)
        assert eye_errors(mirrored[i][1], truth.landmarks)[1] < 10.0  # and the eyes land on the template's
    # (measured median 0.04, max 0.16 with landmarks from the 128-px face square and the line fit over a clip:
    # yuface is not mirror-symmetric)
    assert np.median(rel) < 0.05 and max(rel) < 0.18, (np.median(rel), max(rel))
    # The aligned faces are the upright original's, not mirrored ones.
    diff = np.mean([np.abs(mirrored[i][0].astype(int) - upright[i][0].astype(int)).mean() for i in common])
    flipped = np.mean([np.abs(mirrored[i][0][:, ::-1].astype(int) - upright[i][0].astype(int)).mean() for i in common])
    assert diff < 0.5 * flipped, (diff, flipped)
    assert report.corrections.get("display_flip") == "horizontal" and report.rotation == 0
    info = probe(path, FaceConfig())
    assert (info.rotation, info.hflip) == (0, True)  # frame.rotation alone says 180


# --- 7. a cut file ---------------------------------------------------------------------------------------------


def test_a_cut_moov_first_mp4_is_scored_on_its_readable_part_and_flagged():
    result = extract_face_clips(cut_faststart_video(seconds=2.0, fraction=0.5), DENSE)
    assert len(result) >= 1
    truncated = result.quality.corrections["truncated"]
    assert truncated["by"] == "index" and truncated["frames_expected"] == 60
    assert 20 <= truncated["frames_read"] < 60


@pytest.mark.parametrize("fraction", [0.5, 0.8])
def test_a_cut_matroska_file_is_flagged_by_its_header_duration(tmp_path, fraction):
    # Matroska writes its Duration into the header at the end of writing: a cut file still declares it.
    src = face_video(seconds=2.0, size=(320, 240), container="mkv")
    path = make_truncated_copy(src, tmp_path / "cut.mkv", fraction)
    result = extract_face_clips(path, DENSE)
    truncated = result.quality.corrections["truncated"]
    assert truncated["by"] == "header_duration" and truncated["duration_declared_s"] == pytest.approx(2.0, abs=0.05)
    assert truncated["frames_expected"] == 60 and truncated["frames_read"] == result.quality.frames_decoded < 60


@pytest.mark.parametrize(
    "kwargs",
    [
        {"container": "mp4"},
        {"container": "mkv"},
        {"container": "webm", "codec": "vp9"},
        {"container": "avi", "codec": "mpeg4"},  # AVI's header length is in stream ticks, not frames
        {"container": "mp4", "vfr": True},
    ],
)
def test_a_complete_file_is_not_flagged_as_truncated(kwargs):
    path = face_video(seconds=2.0, size=(320, 240), **kwargs)
    assert probe(path, FaceConfig()).truncated is None
    assert "truncated" not in extract_face_clips(path).quality.corrections
