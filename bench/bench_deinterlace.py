"""Why interlaced frames are deinterlaced by keeping one field rather than by FFmpeg's filter (docs/faces.md,
"Capture faults"):

    python -m bench.bench_deinterlace

On a 640×480 interlaced H.264 scene (tests/faulty_media.py: fields from two instants, the face swaying), per
frame: FFmpeg's ``bwdif`` through ``av.filter.Graph`` (mode ``send_frame``) on a continuous run of
frames, and with a fresh graph per isolated frame (what GOP skipping leaves); then what the pipeline does —
the detector's copy and a face region from :class:`~djldml.faces.decode.FrameConverter` — on the interlaced
frames and on the same frames marked progressive, and the frame delay the filter adds. Wall times on a shared
machine are noisy: compare the lines of one run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import av
import cv2

from djldml.faces.decode import FrameConverter
from tests.faulty_media import _encode, interlaced_frames

REGION = (200, 100, 400, 300)  # a face-sized region of the 640×480 frame


def _graph(frame: av.VideoFrame) -> av.filter.Graph:
    graph = av.filter.Graph()
    src = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format, time_base=frame.time_base)
    bwdif = graph.add("bwdif", "mode=send_frame:parity=auto:deint=all")
    sink = graph.add("buffersink")
    src.link_to(bwdif)
    bwdif.link_to(sink)
    graph.configure()
    return graph


def _pull_all(graph: av.filter.Graph) -> int:
    n = 0
    while True:
        try:
            graph.pull()
            n += 1
        except (av.error.BlockingIOError, av.error.EOFError):
            return n


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "interlaced.mkv"
        frames = [cv2.resize(f, (640, 480)) for f in interlaced_frames(2.0)]
        options = {"preset": "ultrafast", "flags": "+ilme+ildct", "x264-params": "interlaced=1:tff=1"}
        _encode(path, frames, options=options)
        with av.open(str(path)) as container:
            decoded = list(container.decode(video=0))
    assert all(f.interlaced_frame for f in decoded)

    graph = _graph(decoded[0])
    t, out, lag = time.perf_counter(), 0, 0
    for i, frame in enumerate(decoded):
        graph.push(frame)
        out += _pull_all(graph)
        lag = max(lag, i + 1 - out)
    bwdif_ms = (time.perf_counter() - t) / len(decoded) * 1e3

    isolated = decoded[::5]
    t = time.perf_counter()
    for frame in isolated:
        g = _graph(frame)
        g.push(frame)
        g.push(None)
        _pull_all(g)
    fresh_ms = (time.perf_counter() - t) / len(isolated) * 1e3

    def conversions(frames_: list[av.VideoFrame]) -> float:
        conv = FrameConverter(0, 320)
        t0 = time.perf_counter()
        for frame in frames_:
            conv.small_bgr(frame)
            conv.rgb_region(frame, *REGION)
        return (time.perf_counter() - t0) / len(frames_) * 1e3

    progressive = [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p") for f in frames]
    conversions(decoded[:5])  # warm the scaler contexts
    field_ms, progressive_ms = conversions(decoded), conversions(progressive)
    print(f"{len(decoded)} interlaced 640×480 frames; ms per frame")
    print(f"  bwdif, continuous run (on top of the conversions)     {bwdif_ms:6.2f}   frames of delay: {lag}")
    print(f"  bwdif, fresh graph per isolated frame                  {fresh_ms:6.2f}")
    print(f"  pipeline conversions, interlaced (keep the top field)  {field_ms:6.2f}")
    print(f"  pipeline conversions, the same frames progressive      {progressive_ms:6.2f}")


if __name__ == "__main__":
    main()
