"""The face file: one video's aligned faces, stored compactly and read back as clips at random.

Why this format. AVEC2013 is 150 videos × ~10 min × 30 fps ≈ 2.7 M frames; raw 112×112×3 would be ~100 GB and
per-frame JPEG (q 90) ~4.3 KB/frame ≈ 12 GB. The aligned faces of consecutive frames are nearly identical, so a
video codec wins by an order of magnitude: each face file is an H.264 stream of the 112×112 faces (CRF 20,
~0.5 KB/frame, PSNR ≈ 35 dB) cut into closed groups of ``GOP`` frames that each start with a keyframe and hold
no B-frames. A clip of 16 frames then needs at most ``GOP + 15`` decodes of tiny frames (a few ms), from any
start — random access for training without decoding whole videos. Measured figures: docs/training.md.

Face file layout (little-endian)::

    [packet 0][packet 1]...[packet n_faces-1]      one encoded face per frame that has a face, in frame order
    [index: .npz bytes]                            arrays below + meta (JSON as uint8)
    [footer: uint64 index_offset, uint64 index_length, 8-byte MAGIC]

Index arrays: ``frame_time`` float64 [n_frames] (seconds), ``frame_slot`` int32 [n_frames] (which packet holds
the frame's face, −1 = no face: the valid mask), ``slot_offset`` int64 [n_faces + 1] (byte offsets; packet i is
``[slot_offset[i], slot_offset[i+1])``). A file is written to a temporary name and renamed when complete, so a
face file that exists is whole (an interrupted ``prepare`` resumes cleanly).

Readers open files lazily and re-open them after a fork (``os.getpid()`` changes), and read with ``os.pread``,
so one reader is safe to share with several DataLoader workers. The dataset around the files: trainer/store.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from djldml.atomic import temporary_beside
from djldml.clips import FACE_SIZE

MAGIC = b"DJFACE01"
FOOTER = struct.Struct("<QQ8s")
FACE_SUFFIX = ".djf"
GOP = 16  # faces per closed group (keyframe interval): random-access cost vs size
H264_CRF = 20  # visually lossless-ish on 112×112 faces (PSNR ≈ 35 dB); 23 saves 30 % more
CODECS = ("h264", "jpeg")  # jpeg: 8× larger, ~6× faster random access; for small sets or slow CPUs
JPEG_QUALITY = 90


class StoreError(Exception):
    """A face file or prepared dataset is missing, truncated or not ours."""

    code = "prepared_dataset_error"


# --- writing ---------------------------------------------------------------------------------------------------


class FaceFileWriter:
    """Write one video's aligned faces to ``path`` atomically (temp file + rename on :meth:`close`).

    Call :meth:`add` once per decoded frame, in order, with the face or ``None``; then :meth:`close`. If anything
    fails in between, :meth:`abort` (or leaving the ``with`` block by an exception) deletes the temporary file.
    """

    def __init__(self, path: str | os.PathLike, fps: float, codec: str = "h264", crf: int = H264_CRF):
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temporary_beside(self.path)
        self.fps = float(fps)
        self.codec = codec
        self._file = open(self.tmp, "wb")  # noqa: SIM115 — closed in close()/abort()
        self._times: list[float] = []
        self._slots: list[int] = []
        self._offsets: list[int] = [0]
        self._n_faces = 0
        self._encoder = None
        if codec == "h264":
            enc = av.CodecContext.create("libx264", "w")
            enc.width = enc.height = FACE_SIZE
            enc.pix_fmt = "yuv420p"
            enc.time_base = Fraction(1, 25)  # nominal: pts are face numbers; x264 rate control reads the rate
            enc.thread_count = 1  # tiny frames: threads cost more than they give
            enc.options = {
                "crf": str(crf),
                "preset": "veryfast",
                "tune": "fastdecode,zerolatency",  # zerolatency: no B-frames, one packet out per frame in
                "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0:repeat-headers=1",
            }
            self._encoder = enc

    def __enter__(self) -> FaceFileWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, time: float, face: np.ndarray | None) -> None:
        """Append the next decoded frame: its time (s) and aligned face (uint8 [112, 112, 3] RGB) or None."""
        self._times.append(float(time))
        if face is None:
            self._slots.append(-1)
            return
        if face.shape != (FACE_SIZE, FACE_SIZE, 3) or face.dtype != np.uint8:
            raise ValueError(f"face must be uint8 [{FACE_SIZE}, {FACE_SIZE}, 3], got {face.dtype} {face.shape}")
        self._slots.append(self._n_faces)
        if self._encoder is None:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(face, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:  # pragma: no cover — imencode fails only on invalid input, checked above
                raise StoreError("JPEG encoding failed")
            self._write([buf.tobytes()])
        else:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(face), format="rgb24")
            frame.pts = self._n_faces
            self._write([bytes(p) for p in self._encoder.encode(frame)])
        self._n_faces += 1

    def _write(self, packets: list[bytes]) -> None:
        for p in packets:
            self._file.write(p)
            self._offsets.append(self._offsets[-1] + len(p))

    def close(self, meta: dict[str, Any] | None = None) -> Path:
        """Finish the stream, write the index and footer, and rename into place. Returns the final path."""
        if self._encoder is not None:
            self._write([bytes(p) for p in self._encoder.encode(None)])
        if len(self._offsets) != self._n_faces + 1:  # the no-B-frame settings guarantee one packet per face
            self.abort()
            raise StoreError(f"encoder gave {len(self._offsets) - 1} packets for {self._n_faces} faces")
        info = {"codec": self.codec, "gop": GOP if self.codec == "h264" else 1, "fps": self.fps,
                "n_frames": len(self._times), "n_faces": self._n_faces, "face_size": FACE_SIZE, **(meta or {})}
        buf = io.BytesIO()
        np.savez(buf, frame_time=np.asarray(self._times, np.float64), frame_slot=np.asarray(self._slots, np.int32),
                 slot_offset=np.asarray(self._offsets, np.int64),
                 meta=np.frombuffer(json.dumps(info).encode(), np.uint8))
        index = buf.getvalue()
        self._file.write(index)
        self._file.write(FOOTER.pack(self._offsets[-1], len(index), MAGIC))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.tmp.unlink(missing_ok=True)


# --- reading ---------------------------------------------------------------------------------------------------


class FaceFile:
    """Random access to one face file. Opened lazily; safe across fork (re-opens in a new process)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None
        self._pid = -1
        index = self._read_index()
        self.frame_time: np.ndarray = index["frame_time"]
        self.frame_slot: np.ndarray = index["frame_slot"]
        self.slot_offset: np.ndarray = index["slot_offset"]
        self.meta: dict[str, Any] = json.loads(index["meta"].tobytes().decode())
        self.codec: str = self.meta["codec"]
        self.gop: int = int(self.meta["gop"])
        self.close()  # the index is in memory; packets are read through a per-process descriptor

    @property
    def n_frames(self) -> int:
        return len(self.frame_slot)

    @property
    def n_faces(self) -> int:
        return len(self.slot_offset) - 1

    @property
    def valid(self) -> np.ndarray:
        """bool [n_frames]: which frames have a face."""
        return self.frame_slot >= 0

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY)  # after a fork the parent's descriptor is shared: reopen
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:  # pragma: no cover — best effort
        with contextlib.suppress(Exception):
            self.close()

    def _read_index(self) -> dict[str, np.ndarray]:
        try:
            size = self.path.stat().st_size
            fd = self._descriptor()
            if size < FOOTER.size:
                raise StoreError("face file too short")
            index_offset, index_len, magic = FOOTER.unpack(os.pread(fd, FOOTER.size, size - FOOTER.size))
            if magic != MAGIC or index_offset + index_len + FOOTER.size != size:
                raise StoreError("not a face file (bad footer)")
            raw = os.pread(fd, index_len, index_offset)
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                return {k: z[k] for k in ("frame_time", "frame_slot", "slot_offset", "meta")}
        except StoreError:
            raise
        except (OSError, ValueError, KeyError, struct.error) as exc:
            raise StoreError(f"cannot read face file index: {exc.__class__.__name__}") from None

    def _packet(self, slot: int) -> bytes:
        a, b = int(self.slot_offset[slot]), int(self.slot_offset[slot + 1])
        return os.pread(self._descriptor(), b - a, a)

    def read_slots(self, slots: np.ndarray) -> np.ndarray:
        """Decode the faces in ``slots`` (packet numbers, ascending) → uint8 [len(slots), 112, 112, 3]."""
        slots = np.asarray(slots, dtype=np.int64)
        out = np.empty((len(slots), FACE_SIZE, FACE_SIZE, 3), np.uint8)
        if self.codec == "jpeg":
            for i, s in enumerate(slots):
                bgr = cv2.imdecode(np.frombuffer(self._packet(int(s)), np.uint8), cv2.IMREAD_COLOR)
                out[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            return out
        if len(slots) and (np.diff(slots) < 0).any():
            raise ValueError("slots must be ascending")
        # H.264: decode forward from the keyframe that starts each needed group; restart the decoder only when
        # the next needed face lies in a later group than the one being decoded.
        want = {int(s): i for i, s in enumerate(slots)}
        decoder, pos = None, -1  # pos: the next packet the decoder would take
        for s in sorted(want):
            key = s - s % self.gop
            if decoder is None or key > pos:
                decoder, pos = _h264_decoder(), key
            while pos <= s:
                frames = decoder.decode(av.Packet(self._packet(pos)))
                if len(frames) != 1:  # no B-frames, no delay: one picture out per packet in
                    raise StoreError(f"decoder returned {len(frames)} pictures for one packet")
                if pos in want:
                    out[want[pos]] = _rgb(frames[0])
                pos += 1
        return out


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded face → uint8 RGB [112, 112, 3].

    OpenCV converts the yuv420p picture (BT.601, limited range: what the writer's conversion produced) ≈4× faster
    than PyAV's ``to_ndarray(format="rgb24")`` (swscale), which was ≈70 % of a clip's read time — on the H100
    machine where training was measured, 24 of 33 ms per clip (docs/training.md). The two differ only in how
    chroma is upsampled (≈1 grey level on average), far below the codec's own error (PSNR ≈ 35 dB).
    """
    if frame.format.name != "yuv420p" or frame.width % 2 or frame.height % 2:
        return frame.to_ndarray(format="rgb24")
    return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)


def _h264_decoder():
    dec = av.CodecContext.create("h264", "r")
    dec.thread_count = 1
    dec.thread_type = "NONE"  # frame threading would delay output by a picture
    return dec
