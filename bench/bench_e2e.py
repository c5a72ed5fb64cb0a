"""Benchmark: end-to-end latency, throughput under load, and the gateway's memory during a 1 GB upload.

    python -m bench.bench_e2e [--mar model_store/djldml-demo.mar] [--parts latency upload load]
        [--seconds 60 600] [--upload-gb 1] [--stores local s3]
        [--load-n 1 4 16] [--load-modes embedded stack] [--concurrency 1 2]

1. **latency** — for each length (default 60 s and 10 min), a 640×480 30 fps H.264 synthetic face video
   (tests.media: the public-domain astronaut portrait moving over a background) is sent to ``POST /predict`` of a
   private full stack (Redis + Celery worker + TorchServe + uvicorn, started here on free ports and stopped at the
   end). The figure is the end-to-end time as a ratio to the time PyAV takes to merely decode every frame of the
   same file, measured in the same run — absolute seconds on a shared machine mean little, the ratio travels.
2. **upload** — a 1 GB multipart upload streamed to a gateway (a valid container header followed by filler, so it
   is received in full and then refused as not a video), once per upload store: the local directory, and the
   S3-compatible object store (``rclone serve s3`` on 127.0.0.1, service.s3_storage). The figure is the gateway's
   peak RSS (VmHWM) before and after, i.e. what an upload costs the gateway in memory.
3. **load** — N clients at once (N = 1, 4, 16) each upload the 60 s video to ``POST /jobs`` and poll until it is
   done, against the embedded mode (one process: gateway + job threads + in-process model) and the local full
   stack (Redis + Celery worker + TorchServe), each with one job slot and with two (``DJLDML_EMBEDDED_WORKERS`` /
   Celery ``--concurrency``: face clips of one job overlap inference of another). Printed: videos/minute, p50 and
   p95 latency (upload start → done) as ratios to the single-video decode-only time of the same file, and the peak
   RSS of each process of the worker (VmHWM at the end of the run). One warm-up job runs before the timed ones.

The model is the demo archive when present, else a seeded randomly initialised c3d-small (labelled so). On a
machine shared with other work the load figures vary from run to run: compare configurations within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import httpx
import numpy as np

from devstack import LocalStack

DEMO_MAR = Path("model_store/djldml-demo.mar")


def decode_only_s(path: Path) -> float:
    """Seconds to decode every frame (no colour conversion, no face work): the floor any pipeline pays."""
    t = time.perf_counter()
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in c.decode(stream):
            pass
    return time.perf_counter() - t


def loop_video(src: Path, out: Path, times: int) -> Path:
    """``src`` repeated ``times`` times by remuxing its packets with shifted timestamps (no re-encoding)."""
    with av.open(str(src)) as inp, av.open(str(out), "w") as dst:
        s_in = inp.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        packets = [p for p in inp.demux(s_in) if p.size]
        span = max(p.pts for p in packets) - min(p.pts for p in packets) + (packets[1].pts - packets[0].pts
                                                                             if len(packets) > 1 else 1)
        span = max(span, max(p.dts for p in packets) - min(p.dts for p in packets) + 1)
        for k in range(times):
            for p in packets:
                p.pts += span if k else 0
                p.dts += span if k else 0
                p.stream = s_out
                dst.mux(p)
    return out


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a process (kernel's high-water mark), KiB."""
    return vm_kib(pid, "VmHWM")


def vm_rss_kib(pid: int) -> int:
    return vm_kib(pid, "VmRSS")


def big_upload(url: str, n_bytes: int, chunk: int = 1024 * 1024):
    """POST a multipart body of ``n_bytes`` file data generated on the fly (the client holds one chunk)."""
    boundary = "benchb0undary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="big.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    first = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom" + b"\0" * (chunk - 24)

    def body():
        yield head
        sent = 0
        while sent < n_bytes:
            block = first if sent == 0 else b"\x01" * min(chunk, n_bytes - sent)
            block = block[: n_bytes - sent]
            sent += len(block)
            yield block
        yield tail

    length = len(head) + n_bytes + len(tail)
    return httpx.post(url, content=body(), timeout=600,
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                               "Content-Length": str(length)})


def model_store_for(mar: Path | None, workdir: Path) -> tuple[Path, str, str]:
    if mar is not None and mar.is_file():
        return mar.resolve().parent, mar.stem, f"{mar.name}"
    import torch

    from djldml.model_file import save_model
    from djldml.network import build_network
    from trainer.export import export_model

    torch.manual_seed(0)
    save_model(build_network("c3d-small").eval(), workdir / "model.pt")
    export_model(workdir / "model.pt", workdir / "store" / "djldml-bench.mar", "djldml-bench", "0",
                 {"synthetic_demo": True, "description": "untrained c3d-small for benchmarks (random weights)"})
    return workdir / "store", "djldml-bench", "untrained c3d-small (no demo archive found)"


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def group_pids(pgid: int) -> list[int]:
    """Live processes of a process group (a stack component and its children: Celery's pool, TorchServe's workers)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and vm_kib(int(entry), "VmRSS") > 0:
                    out.append(int(entry))
            except (OSError, RuntimeError):
                pass
    return sorted(out)


def process_name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return " ".join(c.decode(errors="replace").rsplit("/", 1)[-1] for c in cmd[:3] if c)[:48]
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--mar", type=Path, default=DEMO_MAR)
    p.add_argument("--parts", nargs="+", choices=["latency", "upload", "load"], default=["latency", "upload", "load"])
    p.add_argument("--seconds", type=float, nargs="+", default=[60, 600], help="video lengths of the latency part")
    p.add_argument("--upload-gb", type=float, default=1.0, help="size of the upload-memory test")
    p.add_argument("--stores", nargs="+", choices=["local", "s3"], default=["local", "s3"],
                   help="upload stores of the upload-memory test")
    p.add_argument("--load-n", type=int, nargs="+", default=[1, 4, 16], help="concurrent uploads of the load run")
    p.add_argument("--load-seconds", type=float, default=60, help="video length of the load run")
    p.add_argument("--load-modes", nargs="+", choices=["embedded", "stack", "stack-inproc"],
                   default=["embedded", "stack"],
                   help="stack-inproc: Redis + Celery worker with the in-process model, no TorchServe")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2],
                   help="job slots per worker to compare (embedded threads / Celery --concurrency)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (videos, stack logs)")
    args = p.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.media import make_face_video

    work = Path(tempfile.mkdtemp(prefix="djldml-bench-e2e-"))
    try:
        return run(args, work, make_face_video)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path, make_face_video) -> int:
    store, name, model_desc = model_store_for(args.mar, work)
    print(f"model: {model_desc}; work dir {work}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the start (other work on the machine slows every figure)", flush=True)
    seconds = sorted(set(args.seconds if "latency" in args.parts else []) | (
        {args.load_seconds} if "load" in args.parts else set()))
    videos: dict[float, Path] = {}
    if seconds:
        base_s = min(seconds)
        base = make_face_video(work / f"face_{int(base_s)}s.mp4", seconds=base_s, size=(640, 480), fps=30)
        for s in seconds:
            # longer videos repeat the shortest one (remuxed, not re-encoded: encoding 10 min takes too long here)
            times = max(1, round(s / base_s))
            videos[s] = base if times == 1 else loop_video(base, work / f"face_{int(s)}s.mp4", times)
            print(f"{s:.0f} s 640×480 video: {videos[s].stat().st_size / 1e6:.1f} MB", flush=True)
    if "latency" in args.parts:
        latency(store, name, work, {s: videos[s] for s in args.seconds})
    if "upload" in args.parts:
        upload_memory(store, name, work, int(args.upload_gb * 1024**3), args.stores)
    if "load" in args.parts:
        load(store, name, work, videos[args.load_seconds], args)
    return 0


BENCH_ENV = {"DJLDML_PREDICT_WAIT_S": "3600", "DJLDML_BACKEND_TIMEOUT_S": "600",
             "DJLDML_MAX_CONCURRENT_JOBS_PER_KEY": "64", "DJLDML_JOB_TIME_LIMIT_S": "3000"}


def latency(store: Path, name: str, work: Path, videos: dict[float, Path]) -> None:
    with LocalStack(store, name, workdir=work / "stack-latency", extra_env=BENCH_ENV) as stack:
        print(f"stack up: {stack.url}", flush=True)
        rows = []
        for s, path in videos.items():
            dec = decode_only_s(path)
            t = time.perf_counter()
            r = httpx.post(stack.url + "/predict", files={"video": (path.name, path.read_bytes(), "video/mp4")},
                           timeout=3600)
            e2e = time.perf_counter() - t
            if r.status_code != 200:
                print(f"{s:.0f} s video: HTTP {r.status_code} {r.text[:300]}")
                continue
            stages = r.json()["timings_s"]
            rows.append((s, e2e, dec, stages))
        print("\nEnd-to-end latency through the full stack (POST /predict → 200), same-run decode-only baseline")
        print(f"{'video':>8} {'e2e s':>8} {'decode s':>9} {'ratio':>7}   stages (s)")
        for s, e2e, dec, stages in rows:
            st = ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
            print(f"{s:>7.0f}s {e2e:>8.2f} {dec:>9.2f} {e2e / dec:>6.2f}×   {st}")


def upload_memory(store: Path, name: str, work: Path, upload_bytes: int, stores: list[str]) -> None:
    """The gateway alone (embedded wiring; the upload path is the same in both modes), once per upload store."""
    env = {**BENCH_ENV, "DJLDML_MAX_UPLOAD_BYTES": str(max(upload_bytes, 2 * 1024**3))}
    print(f"\nGateway memory during a {upload_bytes / 1024**3:.2f} GiB upload (a container header, then filler: "
          "received in full, probed, refused as not a video)")
    for kind in stores:
        with LocalStack(store, name, workdir=work / f"gateway-{kind}", broker=False, torchserve=False,
                        object_store=kind == "s3", extra_env=env) as stack:
            pid = stack.gateway.pid
            rss0, hwm0 = vm_rss_kib(pid), vm_hwm_kib(pid)
            t = time.perf_counter()
            r = big_upload(stack.url + "/jobs", upload_bytes)
            dt = time.perf_counter() - t
            hwm1 = vm_hwm_kib(pid)
            left = stack.s3.objects() if stack.s3 else list((stack.workdir / "uploads").iterdir())
            print(f"  {kind:>5} store: answer {r.status_code} {r.json().get('code', '')}, "
                  f"{upload_bytes / dt / 1e6:.0f} MB/s; RSS before {rss0 / 1024:.0f} MiB; peak RSS before "
                  f"{hwm0 / 1024:.0f} MiB, after {hwm1 / 1024:.0f} MiB; growth of the peak "
                  f"{max(0, hwm1 - hwm0) / 1024:.1f} MiB; files left in the store: {len(left)}", flush=True)


def one_job(url: str, video: bytes, t_start: float) -> tuple[float, float, str, dict]:
    """Upload, then poll until the job ends: (start, end, status, timings_s), seconds since ``t_start``."""
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as c:
        r = c.post("/jobs", files={"video": ("load.mp4", video, "video/mp4")})
        if r.status_code != 202:
            return t0 - t_start, time.perf_counter() - t_start, f"HTTP {r.status_code} {r.text[:120]}", {}
        job_id = r.json()["id"]
        while True:
            body = c.get(f"/jobs/{job_id}").json()
            if body["status"] in ("done", "failed"):
                timings = (body.get("result") or {}).get("timings_s", {})
                return t0 - t_start, time.perf_counter() - t_start, body["status"], timings
            time.sleep(0.1)


def load_run(url: str, video: bytes, n: int) -> dict:
    """``n`` clients at once; videos/minute over the whole run, latency percentiles per job."""
    t_start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        jobs = list(pool.map(lambda _: one_job(url, video, t_start), range(n)))
    done = [j for j in jobs if j[2] == "done"]
    wall = max(j[1] for j in jobs)
    lat = np.array([end - start for start, end, _, _ in done]) if done else np.array([np.nan])
    stages = {k: float(np.mean([j[3].get(k, 0.0) for j in done])) for k in ("queue_wait", "face_clips", "inference")}
    return {"n": n, "done": len(done), "failed": [j[2] for j in jobs if j[2] != "done"], "wall_s": wall,
            "per_min": 60 * len(done) / wall, "p50": float(np.percentile(lat, 50)),
            "p95": float(np.percentile(lat, 95)), "stages": stages}


def worker_memory(stack: LocalStack) -> list[tuple[str, int]]:
    """(process, peak RSS KiB) of every process that runs jobs: the embedded gateway, or the Celery workers (parent
    and pool children) and TorchServe (frontend and its Python workers)."""
    groups = [w.pid for w in stack.workers] if stack.use_broker else [stack.gateway.pid]
    if stack.torchserve is not None:
        groups.append(stack.torchserve.pgid)
    out = []
    for g in groups:
        for pid in group_pids(g):
            with contextlib.suppress(OSError, RuntimeError):
                out.append((f"{pid} {process_name(pid)}", vm_kib(pid, "VmHWM")))
    return out


def load(store: Path, name: str, work: Path, video_path: Path, args) -> None:
    video = video_path.read_bytes()
    dec = min(decode_only_s(video_path) for _ in range(3))
    print(f"\nLoad: {args.load_seconds:.0f} s 640×480 video, decode-only {dec:.2f} s (min of 3, same file)", flush=True)
    table = []
    for mode in args.load_modes:
        for conc in args.concurrency:
            env = {**BENCH_ENV, "DJLDML_EMBEDDED_WORKERS": str(conc)}
            stack = LocalStack(store, name, workdir=work / f"load-{mode}-{conc}", broker=mode != "embedded",
                               torchserve=mode == "stack", concurrency=conc, extra_env=env)
            with stack:
                # model load, first TorchServe batch; one job per slot, so that each Celery pool process has
                # loaded its own model before the timed runs (one warm-up left the second one's load in N = 1)
                warm = load_run(stack.url, video, conc)
                if warm["failed"]:
                    print(f"  {mode} ×{conc}: warm-up jobs {warm['failed']}", flush=True)
                for n in args.load_n:
                    res = load_run(stack.url, video, n)
                    table.append((mode, conc, res))
                    print(f"  {mode:>8} slots {conc} N={n:>2}: {res['per_min']:5.1f} videos/min, p50 "
                          f"{res['p50']:6.1f} s ({res['p50'] / dec:5.1f}× decode), p95 {res['p95']:6.1f} s "
                          f"({res['p95'] / dec:5.1f}×); mean face clips {res['stages']['face_clips']:.1f} s, "
                          f"inference {res['stages']['inference']:.1f} s"
                          + (f"; not done: {res['failed']}" if res["failed"] else ""), flush=True)
                mem = worker_memory(stack)
                print(f"  {mode} slots {conc}, peak RSS per process: "
                      + "; ".join(f"{p} {kib / 1024:.0f} MiB" for p, kib in mem), flush=True)
    print("\n| mode | job slots | N | videos/min | p50 latency | p95 latency |")
    print("|---|---|---|---|---|---|")
    for mode, conc, r in table:
        print(f"| {mode} | {conc} | {r['n']} | {r['per_min']:.1f} | {r['p50']:.1f} s ({r['p50'] / dec:.1f}×) | "
              f"{r['p95']:.1f} s ({r['p95'] / dec:.1f}×) |")
    print(f"(latency: upload start → job done; in brackets, as a multiple of decoding the file alone, {dec:.2f} s)")


if __name__ == "__main__":
    sys.exit(main())
