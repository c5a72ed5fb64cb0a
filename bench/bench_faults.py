"""``python -m bench faults``: the fault suite (tests/service/test_faults.py) as an operator's report.

Runs the suite — real Redis, Celery workers, TorchServe and uvicorn on 127.0.0.1; worker SIGKILL, Redis
stalled (SIGSTOP/SIGCONT) at each job stage and restarted, TorchServe killed — and prints, per fault: jobs
accepted, done, failed by code, lost, uploads left on disk and the recovery time in seconds. Exit status 1
when any fault test failed (the table still prints what was measured).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="djldml-faults-") as tmp:
        report = Path(tmp) / "faults.json"
        env = {**os.environ, "DJLDML_FAULT_REPORT": str(report)}
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "tests/service/test_faults.py"], cwd=REPO, env=env)
        rows = json.loads(report.read_text()) if report.exists() else []
    print(f"\n{'fault':<40} {'accepted':>8} {'done':>5} {'failed by code':<22} {'lost':>4} {'uploads left':>12} "
          f"{'recovery s':>10}")
    for r in rows:
        failed = ",".join(f"{k}:{v}" for k, v in r["failed"].items()) or "-"
        print(f"{r['fault']:<40} {r['accepted']:>8} {r['done']:>5} {failed:<22} {r['lost']:>4} "
              f"{r['uploads_left']:>12} {r['recovery_s']:>10.1f}")
    totals = {k: sum(r[k] for r in rows) for k in ("accepted", "done", "lost", "uploads_left")}
    print(f"\ntotal: {totals['accepted']} accepted, {totals['done']} done, "
          f"{totals['accepted'] - totals['done'] - totals['lost']} failed, {totals['lost']} lost, "
          f"{totals['uploads_left']} uploads left")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
