"""Run every benchmark in turn: ``python -m bench`` (or ``make bench``); ``python -m bench faces train`` for some.

Each benchmark prints its figures as ratios against a baseline measured in the same run, so they travel between
machines; absolute seconds are printed beside them for context only. Each runs in its own process so that one
benchmark's memory and threads do not colour the next one's figures.
"""

from __future__ import annotations

import subprocess
import sys

BENCHES = {
    "faces": "bench.bench_faces",  # aligned faces/s vs decode-only and per-frame detection; peak memory
    "train": "bench.bench_train",  # training clips/s per network preset
    "backends": "bench.bench_backends",  # eager PyTorch vs the CPU engine per preset; TorchServe vs in-process
    "e2e": "bench.bench_e2e",  # latency vs decode-only; N concurrent uploads; gateway memory during a 1 GB upload
    "invariance": "bench.bench_invariance",  # score moves when one scene is captured differently (demo model)
    "faults": "bench.bench_faults",  # the fault suite's report: accepted, done, failed, lost, uploads left
}


def main(argv: list[str]) -> int:
    """``python -m bench [NAME ...]``, or ``python -m bench NAME --option ...``: one benchmark with its options."""
    first_option = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = argv[:first_option] or list(BENCHES), argv[first_option:]
    if options and len(names) != 1:
        print("options go to one benchmark: python -m bench NAME --option ...", file=sys.stderr)
        return 2
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"\n=== bench {name} ({BENCHES[name]}) ===", flush=True)
        if subprocess.call([sys.executable, "-m", BENCHES[name], *options]) != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
