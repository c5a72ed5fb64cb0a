"""One OpenMP thread (or n) for a stretch of work, restored afterwards: the project's one way to limit OpenMP.

libfacedetection (yuface) parallelises one small image over all cores with OpenMP. On a shared or busy machine
the spinning threads made a 320×240 detection 30× more expensive (≈400 ms of CPU instead of ≈12 ms, measured),
and a service running several workers wants one core per detection anyway. Which OpenMP runtime yuface's calls
reach depends on import order (torch loads its own libgomp globally and then wins the symbol lookup), so the
limit applies to every OpenMP runtime loaded in the process, through threadpoolctl. ``omp_set_num_threads``
acts on the calling thread only, so other threads (torch's inference in the service) keep their pools.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

_lock = threading.Lock()
_controller: ThreadpoolController | None = None
_modules_seen = -1


def _openmp_runtimes() -> ThreadpoolController:
    """The loaded OpenMP runtimes; searched again only when a module was imported since (it may load one)."""
    global _controller, _modules_seen
    with _lock:
        if _controller is None or len(sys.modules) != _modules_seen:
            _modules_seen = len(sys.modules)
            _controller = ThreadpoolController().select(user_api="openmp")
        return _controller


@contextmanager
def openmp_threads(n: int = 1) -> Iterator[None]:
    """Run the body with every loaded OpenMP runtime at ``n`` threads (for this thread), then restore it.

    Sets the runtimes found by threadpoolctl directly rather than through ``ThreadpoolController.limit``, which
    re-reads every library's state on each call: this runs once per face detection (measured ≈20 µs vs ≈60 µs
    a call on the shared 2-core machine; a detection is 2–14 ms).
    """
    runtimes = _openmp_runtimes().lib_controllers
    saved = [lib.get_num_threads() for lib in runtimes]
    for lib in runtimes:
        lib.set_num_threads(n)
    try:
        yield
    finally:
        for lib, threads in zip(runtimes, saved, strict=True):
            lib.set_num_threads(threads)
