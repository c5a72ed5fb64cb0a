"""Write-to-a-temporary-name-then-rename: a reader (or a crash) never sees a half-written file.

The one implementation for checkpoints, face files, manifests, synthetic videos and archives. The temporary
name sits in the same directory as the target (``os.replace`` is atomic only within one file system) and is
hidden and unique per process and thread (``.<name>.<pid>.<thread>.tmp``), so two writers never share one.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path


def temporary_beside(path: str | os.PathLike) -> Path:
    """The temporary name for ``path``: same directory, hidden, unique per process and thread."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on an exception it is deleted."""
    tmp = temporary_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
