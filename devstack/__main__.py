"""``python -m devstack --port 8000`` (``make stack``): the local full stack until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from .stack import DEFAULT_MODEL_NAME, LocalStack


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    p.add_argument("--port", type=int, default=8000, help="gateway port on 127.0.0.1")
    p.add_argument("--model-store", default="model_store")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    p.add_argument("--workdir", default=None, help="logs, uploads, TorchServe temp dir (default: a new temp dir)")
    p.add_argument("--workers", type=int, default=1, help="Celery workers")
    p.add_argument("--no-token-auth", action="store_true",
                   help="turn TorchServe token authorisation off (any local process could then manage the model)")
    p.add_argument("--no-persist", action="store_true", help="Redis keeps nothing on disk (jobs lost on restart)")
    p.add_argument("--no-torchserve", action="store_true", help="workers use the in-process backend")
    p.add_argument("--s3", action="store_true",
                   help="uploads go through an S3-compatible store (rclone serve s3 on 127.0.0.1), as across hosts")
    p.add_argument("--concurrency", type=int, default=2,
                   help="jobs each Celery worker runs at once (default 2: one job's face clips overlap another's "
                        "inference; docs/deploy.md, 'Throughput under load')")
    args = p.parse_args(argv)

    stack = LocalStack(args.model_store, args.model_name, port=args.port, workdir=args.workdir,
                       torchserve=not args.no_torchserve, token_auth=not args.no_token_auth, workers=args.workers,
                       persist=not args.no_persist, object_store=args.s3, concurrency=args.concurrency)
    stopping = False

    def _stop(signum, frame):  # SIGTERM behaves like Ctrl-C
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        print(f"starting the local stack in {stack.workdir} ...", flush=True)
        stack.start()
        print(f"gateway     {stack.url}  (docs: {stack.url}/docs)")
        if stack.redis:
            print(f"redis       {stack.redis.url}")
        if stack.s3:
            print(f"s3          {stack.s3.endpoint_url} ({stack.s3.store_url()})")
        if stack.torchserve:
            print(f"torchserve  {stack.torchserve.inference_url} (management {stack.torchserve.management_url})")
        print(f"logs        {stack.workdir}\nCtrl-C stops everything.", flush=True)
        while True:
            for h in [stack.gateway, *stack.workers, stack.redis, stack.s3]:
                if h is not None and not h.alive():
                    print(f"{h.name} exited; see {h.log_path}", file=sys.stderr)
                    return 1
            if stack.torchserve is not None and not stack.torchserve.alive():
                print(f"torchserve exited; see {stack.torchserve.log_path}", file=sys.stderr)
                return 1
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping ...", flush=True)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
