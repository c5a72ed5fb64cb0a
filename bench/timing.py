"""Timing helper shared by the engine benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def min_time(f: Callable[[], T], runs: int) -> tuple[float, T]:
    """Seconds of the fastest of ``runs`` calls of ``f`` after one warm-up call (which pays allocation and lazy
    initialisation), and the last call's result."""
    y = f()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        y = f()
        times.append(time.perf_counter() - t)
    return min(times), y
