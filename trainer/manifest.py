"""Finding the videos of a dataset and their labels: a CSV manifest, an AVEC2014 tree or an AVEC2013 tree.

Every source becomes a list of :class:`SourceVideo` (path, BDI-II, split train/dev/test, subject, id), which
``trainer prepare`` turns into a prepared dataset.

* **CSV** ``video,bdi,split[,subject]`` (more columns are ignored; a ``synthetic`` column marks synthetic rows).
  Paths are relative to the CSV. Splits accept train/training, dev/development/val/validation, test/testing.
* **AVEC2014** as distributed: ``{Training,Development,Testing}/{Northwind,Freeform}/<id>_<task>_video.<ext>``,
  labels in ``*_DepressionLabels/<id>_Depression.csv`` (one value per file), ``<id>`` = ``<subject>_<session>``.
* **AVEC2013** — assumed layout (the corpus is licensed; the one public description we found, a script that
  reads ``AVEC2013/Development/Video`` and ``AVEC2013/Development/DepressionLabels``, agrees with it):
  ``{Training,Development,Testing}/…/<id>_<anything>.<ext>`` with ``<id>`` = ``<subject>_<session>`` (e.g.
  ``203_1_cut_video.mp4``) and ``<id>_Depression.csv`` label files anywhere under the root. The search is
  deliberately loose (any depth, any video extension, case-insensitive split names), so a re-packed copy works.

Both AVEC readers take the split from the first path component named Training/Development/Testing, pair a video
with the label file of the same ``<id>``, and name the subject by the number before the first underscore (the
AVEC ids are ``<subject>_<recording>``; AVEC2013 has subjects in more than one split — see :func:`shared_subjects`).
Videos without a label are skipped and counted (the Testing labels were released separately).
"""

from __future__ import annotations

import csv
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from djldml import labels

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "dev": "dev", "development": "dev", "val": "dev", "valid": "dev", "validation": "dev",
    "test": "test", "testing": "test",
}
AVEC_SPLIT_DIRS = {"training": "train", "development": "dev", "testing": "test"}
AVEC2014_TASKS = ("Northwind", "Freeform")
_AVEC_ID = re.compile(r"^(\d+)_(\d+)")
_LABEL_FILE = re.compile(r"^(\d+_\d+)_Depression\.csv$", re.IGNORECASE)
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


class ManifestError(ValueError):
    """The dataset description cannot be read (missing columns, bad values, nothing found)."""

    code = "manifest_error"


@dataclass(frozen=True)
class SourceVideo:
    video_id: str  # unique, file-name safe: names the face file of the prepared dataset
    path: Path
    bdi: float
    split: str  # "train" | "dev" | "test"
    subject: str | None = None
    synthetic: bool = False


def normalise_split(name: str) -> str:
    key = name.strip().lower()
    if key not in SPLIT_NAMES:
        raise ManifestError(f"unknown split {name!r}; use train/dev/test")
    return SPLIT_NAMES[key]


def parse_bdi(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ManifestError(f"BDI-II value {text!r} is not a number") from None
    if not labels.MIN_SCORE <= value <= labels.MAX_SCORE:
        raise ManifestError(f"BDI-II value {value} outside {labels.MIN_SCORE}..{labels.MAX_SCORE}")
    return value


def safe_id(text: str) -> str:
    return _SAFE_ID.sub("_", text).strip("._") or "video"


# --- CSV ------------------------------------------------------------------------------------------------------


def read_csv_manifest(path: str | Path) -> list[SourceVideo]:
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
        missing = {"video", "bdi", "split"} - set(fields)
        if missing:
            raise ManifestError(f"manifest lacks column(s) {sorted(missing)}; need video,bdi,split[,subject]")
        rows = list(reader)
    out, seen = [], set()
    for line, row in enumerate(rows, start=2):
        def get(key: str, row=row) -> str:
            return (row.get(fields[key]) or "").strip() if key in fields else ""

        rel = get("video")
        if not rel:
            raise ManifestError(f"line {line}: empty video path")
        video_id = safe_id(str(Path(rel).with_suffix("")))
        if video_id in seen:
            raise ManifestError(f"line {line}: video listed twice")
        seen.add(video_id)
        try:
            bdi, split = parse_bdi(get("bdi")), normalise_split(get("split"))
        except ManifestError as exc:
            raise ManifestError(f"line {line}: {exc}") from None
        out.append(SourceVideo(video_id=video_id, path=(path.parent / rel), bdi=bdi, split=split,
                               subject=get("subject") or None,
                               synthetic=get("synthetic").lower() in ("1", "true", "yes")))
    if not out:
        raise ManifestError("manifest has no rows")
    return out


# --- AVEC -----------------------------------------------------------------------------------------------------


def read_label_file(path: Path) -> float:
    """An AVEC label file: one number (possibly with a header line or trailing commas)."""
    for token in re.split(r"[\s,;]+", path.read_text(encoding="utf-8-sig")):
        try:
            float(token)
        except ValueError:
            continue  # a header word
        return parse_bdi(token)
    raise ManifestError("label file holds no number")


def _avec_labels(root: Path) -> dict[str, float]:
    found: dict[str, float] = {}
    for p in root.rglob("*"):
        m = _LABEL_FILE.match(p.name)
        if m and p.is_file():
            found[m.group(1)] = read_label_file(p)
    return found


def _avec_split(rel: Path) -> str | None:
    for part in rel.parts[:-1]:
        if part.lower() in AVEC_SPLIT_DIRS:
            return AVEC_SPLIT_DIRS[part.lower()]
    return None


def _avec_videos(root: Path, tasks: tuple[str, ...] | None) -> tuple[list[SourceVideo], Counter]:
    labels_by_id = _avec_labels(root)
    out, skipped = [], Counter()
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in VIDEO_EXTENSIONS or not p.is_file():
            continue
        rel = p.relative_to(root)
        m = _AVEC_ID.match(p.name)
        split = _avec_split(rel)
        if m is None or split is None:
            skipped["not_an_avec_video"] += 1
            continue
        avec_id = f"{m.group(1)}_{m.group(2)}"
        task = next((t for t in AVEC2014_TASKS if t.lower() in p.name.lower()), None)
        if tasks is not None and task not in tasks:
            skipped["other_task"] += 1
            continue
        if avec_id not in labels_by_id:
            skipped["no_label"] += 1
            continue
        video_id = f"{avec_id}_{task}" if task else avec_id
        out.append(SourceVideo(video_id=video_id, path=p, bdi=labels_by_id[avec_id], split=split,
                               subject=m.group(1)))
    ids = Counter(v.video_id for v in out)
    dup = [i for i, n in ids.items() if n > 1]
    if dup:
        raise ManifestError(f"{len(dup)} recording id(s) have more than one video file")
    return out, skipped


def read_avec2014(root: str | Path, tasks: tuple[str, ...] = AVEC2014_TASKS) -> list[SourceVideo]:
    """AVEC2014: both tasks by default (same BDI for a session's Northwind and Freeform videos)."""
    videos, skipped = _avec_videos(Path(root), tuple(tasks))
    return _checked(videos, skipped, "AVEC2014")


def read_avec2013(root: str | Path) -> list[SourceVideo]:
    videos, skipped = _avec_videos(Path(root), None)
    return _checked(videos, skipped, "AVEC2013")


def _checked(videos: list[SourceVideo], skipped: Counter, name: str) -> list[SourceVideo]:
    if skipped:
        warnings.warn(f"{name}: skipped {sum(skipped.values())} video file(s): {dict(skipped)}", stacklevel=3)
    if not videos:
        raise ManifestError(f"no labelled {name} videos found under the root")
    return videos


# --- dispatch and checks ----------------------------------------------------------------------------------------

SOURCES = ("csv", "avec2014", "avec2013")


def discover(source: str | Path, kind: str = "auto") -> tuple[str, list[SourceVideo]]:
    """Read a dataset description: a .csv file, or an AVEC2014/AVEC2013 root. ``kind`` auto-detects:
    a file is a CSV; a tree with Northwind/Freeform video names is AVEC2014; any other tree is AVEC2013."""
    source = Path(source)
    if kind == "auto":
        if source.is_file():
            kind = "csv"
        elif source.is_dir():
            avec2014 = any(t.lower() in p.name.lower() for p in source.rglob("*")
                           if p.suffix.lower() in VIDEO_EXTENSIONS for t in AVEC2014_TASKS)
            kind = "avec2014" if avec2014 else "avec2013"
        else:
            raise ManifestError("dataset source does not exist")
    readers = {"csv": read_csv_manifest, "avec2014": read_avec2014, "avec2013": read_avec2013}
    if kind not in readers:
        raise ManifestError(f"unknown dataset kind {kind!r}; choose from {SOURCES}")
    return kind, readers[kind](source)


def shared_subjects(videos) -> dict[str, list[str]]:
    """Subjects that appear in more than one split → the splits they appear in (empty when splits are
    subject-disjoint). Works on anything with ``subject`` and ``split`` (SourceVideo, VideoRecord)."""
    splits: dict[str, set[str]] = {}
    for v in videos:
        if v.subject:
            splits.setdefault(v.subject, set()).add(v.split)
    return {s: sorted(sp) for s, sp in sorted(splits.items()) if len(sp) > 1}


def warn_shared_subjects(videos, what: str = "dataset") -> dict[str, list[str]]:
    """Warn (UserWarning) when splits share subjects: scores on a split then overstate generalisation."""
    shared = shared_subjects(videos)
    if shared:
        pairs = Counter("/".join(sp) for sp in shared.values())
        warnings.warn(f"{what}: {len(shared)} subject(s) appear in more than one split ({dict(pairs)}); "
                      "test figures then include subjects seen in training", stacklevel=2)
    return shared
