"""Benchmark: end-to-end latency through the full stack, and the gateway's memory during a 1 GB upload.

    python -m bench.bench_e2e [--mar model_store/djldml-demo.mar] [--seconds 60 600] [--upload-gb 1]

1. For each length (default 60 s and 10 min), a 640×480 30 fps H.264 synthetic face video (tests.media: the
   public-domain astronaut portrait moving over a background) is sent to ``POST /predict`` of a private full
   stack (Redis + Celery worker + TorchServe + uvicorn, started here on free ports and stopped at the end).
   The figure is the end-to-end time as a ratio to the time PyAV takes to merely decode every frame of the
   same file, measured in the same run — absolute seconds on a shared machine mean little, the ratio travels.
2. A 1 GB multipart upload streamed to the gateway (a valid container header followed by filler, so it is
   received in full and then refused as not a video); the figure is the gateway's peak RSS (VmHWM) before and
   after, i.e. what an upload costs the gateway in memory.

The model is the demo archive when present, else a seeded randomly initialised c3d-small (labelled so).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av
import httpx

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
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--mar", type=Path, default=DEMO_MAR)
    p.add_argument("--seconds", type=float, nargs="+", default=[60, 600], help="video lengths to test")
    p.add_argument("--upload-gb", type=float, default=1.0, help="size of the upload-memory test; 0 skips it")
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
    print(f"model: {model_desc}; work dir {work}")
    videos = {}
    base_s = min(args.seconds)
    base = make_face_video(work / f"face_{int(base_s)}s.mp4", seconds=base_s, size=(640, 480), fps=30)
    for s in args.seconds:
        # longer videos repeat the shortest one (remuxed, not re-encoded: encoding 10 min takes too long here)
        times = max(1, round(s / base_s))
        videos[s] = base if times == 1 else loop_video(base, work / f"face_{int(s)}s.mp4", times)
        print(f"{s:.0f} s 640×480 video: {videos[s].stat().st_size / 1e6:.1f} MB", flush=True)

    upload_bytes = int(args.upload_gb * 1024**3)
    env = {"DJLDML_MAX_UPLOAD_BYTES": str(max(upload_bytes, 2 * 1024**3)), "DJLDML_PREDICT_WAIT_S": "3600",
           "DJLDML_BACKEND_TIMEOUT_S": "600"}
    with LocalStack(store, name, workdir=work / "stack", extra_env=env) as stack:
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

        if upload_bytes:
            pid = stack.gateway.pid
            rss0, hwm0 = vm_rss_kib(pid), vm_hwm_kib(pid)
            t = time.perf_counter()
            r = big_upload(stack.url + "/jobs", upload_bytes)
            dt = time.perf_counter() - t
            hwm1 = vm_hwm_kib(pid)
            print(f"\nGateway memory during a {upload_bytes / 1024**3:.2f} GiB upload "
                  f"(answer {r.status_code} {r.json().get('code', '')}, {upload_bytes / dt / 1e6:.0f} MB/s):")
            print(f"  RSS before {rss0 / 1024:.0f} MiB; peak RSS before {hwm0 / 1024:.0f} MiB, after "
                  f"{hwm1 / 1024:.0f} MiB; growth of the peak {max(0, hwm1 - hwm0) / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
