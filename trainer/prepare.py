"""``trainer prepare``: run the face pipeline once per video and write a prepared dataset (see store.py).

    python -m trainer prepare --source data/manifest.csv --out runs/prepared        # CSV video,bdi,split[,subject]
    python -m trainer prepare --source /data/AVEC2014 --out runs/avec2014 --workers 8
    python -m trainer prepare --source /data/AVEC2013 --kind avec2013 --out runs/avec2013

Resumable: a video whose face file exists (written atomically) with the same face settings is skipped, so an
interrupted run continues where it stopped. A video that cannot be read, or gives no complete clip, is counted
and listed in ``prepare_report.json`` (by dataset id, with the error code) — never fatal, and never logged with
its file name. ``manifest.csv`` lists the usable videos; ``dataset.json`` says what the data is.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from djldml.errors import DJLDMLError
from djldml.faces import FaceConfig, iter_aligned_frames
from djldml.faces.provenance import preprocessing
from djldml.openmp import openmp_threads

from .face_file import CODECS, FaceFile, FaceFileWriter, StoreError
from .manifest import SOURCES, SourceVideo, discover, warn_shared_subjects
from .store import INFO, MANIFEST_CSV, VideoRecord, face_file_name, valid_clip_starts, write_manifest

FORMAT = "djldml-prepared/1"
REPORT = "prepare_report.json"


@dataclass
class VideoOutcome:
    video_id: str
    status: str  # "prepared" | "skipped_done" | "failed" | "no_clips"
    n_frames: int = 0
    n_faces: int = 0
    n_clips: int = 0
    fps: float = 0.0
    bytes: int = 0
    duration_s: float = 0.0
    seconds: float = 0.0
    error: str | None = None  # a stable error code, never a message with paths


@dataclass
class PrepareResult:
    root: Path
    outcomes: list[VideoOutcome] = field(default_factory=list)

    @property
    def usable(self) -> list[VideoOutcome]:
        return [o for o in self.outcomes if o.status in ("prepared", "skipped_done")]

    def counts(self) -> dict[str, int]:
        return dict(Counter(o.status for o in self.outcomes))


def face_config_for(args: Any | None = None) -> FaceConfig:
    """The trainer's face settings: every frame of the clip timeline (``--fps``: the rate the model will be
    trained at, recorded in its card), no clip limit (clips are cut at training time)."""
    defaults = FaceConfig()
    detect_every = getattr(args, "detect_every", None) or defaults.detect_every
    fps = getattr(args, "fps", None) or defaults.fps
    return FaceConfig(max_clips=None, detect_every=detect_every, fps=fps)


def _done(path: Path, config_dict: dict) -> FaceFile | None:
    """The existing face file if it is complete and was made with the same face settings."""
    if not path.is_file():
        return None
    try:
        f = FaceFile(path)
    except StoreError:
        return None  # not ours or damaged: prepare again
    return f if f.meta.get("face_config") == config_dict else None


def _write_face_file(video: SourceVideo, path: Path, config: FaceConfig, config_dict: dict, codec: str) -> None:
    frames = iter_aligned_frames(video.path, config)
    with FaceFileWriter(path, config.fps, codec=codec) as writer:  # the store holds the clip timeline
        for af in frames:
            writer.add(af.time, af.face)
        report = frames.report.to_dict() if frames.report is not None else {}
        writer.close({"face_config": config_dict, "quality": report})


def prepare_video(video: SourceVideo, root: Path, config: FaceConfig, codec: str) -> VideoOutcome:
    """Face file for one video (skip when already done). Runs in a worker process when ``--workers`` > 1."""
    started = time.perf_counter()
    path = root / face_file_name(video.video_id)
    config_dict = json.loads(json.dumps(config.to_dict()))
    existing = _done(path, config_dict)
    status = "skipped_done"
    if existing is None:
        status = "prepared"
        if not Path(video.path).is_file():
            return VideoOutcome(video.video_id, "failed", error="file_not_found")
        try:
            with openmp_threads():  # parallelism comes from --workers processes instead
                _write_face_file(video, path, config, config_dict, codec)
        except DJLDMLError as exc:
            return VideoOutcome(video.video_id, "failed", error=exc.code, seconds=time.perf_counter() - started)
        existing = FaceFile(path)
    n_clips = len(valid_clip_starts(existing.valid, config.clip_length, config.temporal_stride))
    fps = float(existing.meta.get("fps") or 0.0)
    duration = existing.meta.get("quality", {}).get("duration_s") or (existing.n_frames / fps if fps else 0.0)
    outcome = VideoOutcome(
        video.video_id, status if n_clips else "no_clips", n_frames=existing.n_frames, n_faces=existing.n_faces,
        n_clips=n_clips, fps=fps, bytes=path.stat().st_size, duration_s=float(duration),
        seconds=time.perf_counter() - started, error=None if n_clips else "too_few_face_clips",
    )
    existing.close()
    return outcome


def prepare(source: str | os.PathLike, out: str | os.PathLike, kind: str = "auto", config: FaceConfig | None = None,
            codec: str = "h264", workers: int = 1, progress: bool = True) -> PrepareResult:
    """Prepare every video of ``source`` into ``out``; returns the outcomes (also in ``prepare_report.json``).

    ``workers`` > 1 runs videos in spawned processes: a script calling this must guard its top level with
    ``if __name__ == "__main__":`` (as ``python -m trainer`` does).
    """
    config = config or face_config_for()
    root = Path(out)
    (root / "faces").mkdir(parents=True, exist_ok=True)
    kind, videos = discover(source, kind)
    warn_shared_subjects(videos, "source dataset")
    by_id = {v.video_id: v for v in videos}
    result = PrepareResult(root)
    bar = tqdm(total=len(videos), desc="prepare", unit="video", disable=not progress)
    try:
        if workers <= 1:
            for v in videos:
                result.outcomes.append(prepare_video(v, root, config, codec))
                bar.update()
        else:
            # spawn, not fork: a forked child of a process that already ran OpenMP (torch) can hang in it.
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(prepare_video, v, root, config, codec) for v in videos]
                for fut in as_completed(futures):
                    result.outcomes.append(fut.result())
                    bar.update()
    finally:  # an interrupted run still leaves a consistent manifest of what is done
        bar.close()
        _write_outputs(result, by_id, kind, source, config, codec)
    return result


def _write_outputs(result: PrepareResult, by_id: dict[str, SourceVideo], kind: str, source, config: FaceConfig,
                   codec: str) -> None:
    root = result.root
    records = []
    for o in result.usable:
        v = by_id[o.video_id]
        records.append(VideoRecord(video_id=o.video_id, bdi=v.bdi, split=v.split, subject=v.subject,
                                   n_frames=o.n_frames, fps=o.fps, n_faces=o.n_faces,
                                   file=face_file_name(o.video_id)))
    write_manifest(root / MANIFEST_CSV, records)
    synthetic = bool(by_id) and all(v.synthetic for v in by_id.values())
    info: dict[str, Any] = {
        "format": FORMAT,
        "source_kind": kind,
        "synthetic": synthetic,
        "description": ("SYNTHETIC data (trainer synth): not patient data; models trained on it are demos only."
                        if synthetic else "prepared from a real dataset"),
        "face_config": config.to_dict(),
        "preprocessing": preprocessing(config),  # copied into the model card by `trainer export`
        "codec": codec,
        "videos_in_source": len(by_id),
        "videos_usable": len(records),
    }
    synth_info = Path(source).parent / "synthetic.json" if Path(source).is_file() else None
    if synthetic and synth_info is not None and synth_info.is_file():
        info["synthetic_info"] = json.loads(synth_info.read_text())
    (root / INFO).write_text(json.dumps(info, indent=2) + "\n")
    usable = result.usable
    hours = sum(o.duration_s for o in usable) / 3600
    total_bytes = sum(o.bytes for o in usable)
    report = {
        "counts": result.counts(),
        "frames": sum(o.n_frames for o in usable),
        "faces": sum(o.n_faces for o in usable),
        "clips": sum(o.n_clips for o in usable),
        "bytes": total_bytes,
        "hours_of_video": round(hours, 4),
        "bytes_per_hour": round(total_bytes / hours) if hours > 0 else None,
        "bytes_per_face": round(total_bytes / max(1, sum(o.n_faces for o in usable)), 1),
        "not_usable": {o.video_id: o.error for o in result.outcomes if o.status in ("failed", "no_clips")},
        "seconds": round(sum(o.seconds for o in result.outcomes), 2),
    }
    (root / REPORT).write_text(json.dumps(report, indent=2) + "\n")


# --- CLI --------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="a CSV manifest, or an AVEC2014/AVEC2013 root directory")
    parser.add_argument("--out", required=True, help="prepared dataset directory (created; re-runs resume)")
    parser.add_argument("--kind", choices=("auto", *SOURCES), default="auto")
    parser.add_argument("--workers", type=int, default=1, help="videos processed in parallel (processes)")
    parser.add_argument("--codec", choices=CODECS, default="h264",
                        help="face storage: h264 (compact, default) or jpeg (8× larger, faster random reads)")
    parser.add_argument("--detect-every", type=int, default=None, help="run the detector every k-th frame")
    parser.add_argument("--fps", type=float, default=None,
                        help=f"frame rate of the clip timeline every video is resampled to (default "
                             f"{FaceConfig().fps:g}); a model trained on it is served at it")
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    result = prepare(args.source, args.out, kind=args.kind, config=face_config_for(args), codec=args.codec,
                     workers=args.workers, progress=not args.no_progress)
    counts = result.counts()
    failed = Counter(o.error for o in result.outcomes if o.status in ("failed", "no_clips"))
    print(f"prepared dataset: {len(result.usable)} usable video(s) {counts}")
    if failed:
        print(f"not usable: {dict(failed)} — ids and codes in {Path(args.out) / REPORT}")
    return 0 if result.usable else 1
