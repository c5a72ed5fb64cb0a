"""A Python client of the service's asynchronous API, and its command line: ``python -m service.client VIDEO``.

::

    from service.client import Client, ServiceError
    with Client("http://127.0.0.1:8000", api_key="…") as c:
        job = c.submit("interview.mp4")                  # POST /jobs (202), with an Idempotency-Key
        result = c.wait(job["id"], on_progress=print)    # polls GET /jobs/{id} until done; the result document
        # or in one call: result = c.predict("interview.mp4")

Submitting is safe to retry: every submission carries an ``Idempotency-Key`` (a new UUID unless given), and a
connection that fails mid-upload, a 503 (queue or backend unavailable), a 429 (too many jobs) or a 409 (the first
attempt still arriving) are retried with that same key — bounded, waiting ``Retry-After`` when the service
gives one, else 0.5 s doubling to 10 s — so a flaky phone network never starts a second job. Every error the
service answers is raised as :class:`ServiceError` with its stable ``code`` (docs/api.md, "Errors").

Command line (exit status 0: done; 1: the service answered an error, or the job failed — the message says
which, with its code; 2: bad arguments or an unreadable file; 3: the service could not be reached)::

    python -m service.client interview.mp4 --url http://127.0.0.1:8000 --api-key KEY --out result.json
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

DEFAULT_URL = os.environ.get("DJLDML_URL", "http://127.0.0.1:8000")
RETRYABLE_CODES = frozenset({"queue_unavailable", "backend_unavailable", "not_ready", "too_many_jobs",
                             "idempotency_key_in_use"})


class ServiceError(Exception):
    """An error answer of the service (application/problem+json), or a job that failed.

    ``code`` is the stable problem code (``not_a_video``, ``no_face``, ``unauthorised``, …); ``status`` the HTTP
    status it maps to; ``title`` and ``detail`` say it in words; ``job_id`` is set for a failed job."""

    def __init__(self, code: str, status: int, title: str, detail: str | None = None, job_id: str | None = None,
                 retry_after_s: float | None = None):
        self.code, self.status, self.title, self.detail = code, status, title, detail
        self.job_id, self.retry_after_s = job_id, retry_after_s
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.code} (HTTP {self.status}): {self.title}" + (f" — {self.detail}" if self.detail else "")

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES

    @classmethod
    def from_response(cls, r: httpx.Response) -> ServiceError:
        try:
            body = r.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict) or "code" not in body:
            return cls("http_error", r.status_code, f"the service answered HTTP {r.status_code}", r.text[:200] or None)
        retry_after = r.headers.get("retry-after")
        return cls(body["code"], int(body.get("status", r.status_code)), body.get("title", ""), body.get("detail"),
                   body.get("job_id"), float(retry_after) if retry_after and retry_after.isdigit() else None)

    @classmethod
    def from_job(cls, job: dict[str, Any]) -> ServiceError:
        e = job.get("error") or {}
        return cls(e.get("code", "internal_error"), int(e.get("status", 500)), e.get("title", "the job failed"),
                   e.get("detail"), job.get("id"))


class _CountingFile:
    """A read-only file that reports how many bytes have been read (httpx reads the upload through it)."""

    def __init__(self, f: BinaryIO, on_read: Callable[[int], None] | None):
        self._f, self._on_read, self._done = f, on_read, 0

    def read(self, n: int = -1) -> bytes:
        chunk = self._f.read(n)
        self._done += len(chunk)
        if self._on_read and chunk:
            self._on_read(self._done)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        pos = self._f.seek(offset, whence)
        self._done = pos
        return pos

    def tell(self) -> int:
        return self._f.tell()

    def fileno(self) -> int:
        return self._f.fileno()


class Client:
    """The service's HTTP API from Python (httpx). ``retries``: further attempts of a request that failed to
    connect, or was answered with a retryable code (503, 429, 409 ``idempotency_key_in_use``)."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 120.0, retries: int = 4,
                 transport: httpx.BaseTransport | None = None):
        headers = {"X-API-Key": api_key} if api_key else {}
        self.retries = retries
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------------------------------ requests
    def _retrying(self) -> Retrying:
        def should_retry(exc: BaseException) -> bool:
            return isinstance(exc, httpx.TransportError) or (isinstance(exc, ServiceError) and exc.retryable)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, ServiceError) and exc.retry_after_s:
                return min(exc.retry_after_s, 30.0)
            return min(10.0, 0.5 * 2 ** (state.attempt_number - 1))

        return Retrying(stop=stop_after_attempt(self.retries + 1), retry=retry_if_exception(should_retry), wait=wait,
                        reraise=True)

    def _request(self, method: str, path: str, ok: tuple[int, ...], **kwargs) -> httpx.Response:
        for attempt in self._retrying():
            with attempt:
                r = self.http.request(method, path, **kwargs)
                if r.status_code not in ok:
                    raise ServiceError.from_response(r)
        return r

    def submit(self, video: str | os.PathLike, *, idempotency_key: str | None = None, callback_url: str | None = None,
               faces_preview: bool = False, on_upload: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """POST /jobs: upload ``video``; returns the job document (``id``, ``status``, …).

        ``on_upload(bytes_sent, total)`` follows the upload. A retry of this call (or of the whole program) with
        the same ``idempotency_key`` returns the same job. Raises ServiceError, httpx.TransportError (after
        the retries), OSError (the file)."""
        path = Path(video)
        total = path.stat().st_size
        key = idempotency_key or str(uuid.uuid4())
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = {"faces_preview": "true"} if faces_preview else {}
        if callback_url:
            data["callback_url"] = callback_url
        with path.open("rb") as f:
            counting = _CountingFile(f, (lambda done: on_upload(done, total)) if on_upload else None)
            r = self._request("POST", "/jobs", (202,), headers={"Idempotency-Key": key},
                              files={"video": (path.name, counting, ctype)}, data=data)
        return r.json()

    def job(self, job_id: str) -> dict[str, Any]:
        """GET /jobs/{id}: the job's status document."""
        return self._request("GET", f"/jobs/{job_id}", (200,)).json()

    def wait(self, job_id: str, *, timeout: float = 1800.0, poll_s: float = 0.5,
             on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll the job until it ends; returns its result (the /predict document). ``on_progress(job)`` sees
        every status document. Raises ServiceError (the job failed: its code; or an error answer) and
        TimeoutError (still unfinished after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_progress:
                on_progress(job)
            if job["status"] == "done":
                return job["result"]
            if job["status"] == "failed":
                raise ServiceError.from_job(job)
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:g} s")
            time.sleep(poll_s)

    def predict(self, video: str | os.PathLike, **kwargs) -> dict[str, Any]:
        """Submit and wait: the result document. Keyword arguments go to :meth:`submit`."""
        return self.wait(self.submit(video, **kwargs)["id"])

    def faces(self, job_id: str) -> bytes:
        """GET /jobs/{id}/faces: the job's contact sheet (JPEG), when asked for with ``faces_preview``."""
        return self._request("GET", f"/jobs/{job_id}/faces", (200,)).content

    def delete(self, job_id: str) -> None:
        """DELETE /jobs/{id}: forget the job and its result now."""
        self._request("DELETE", f"/jobs/{job_id}", (204,))


# ---------------------------------------------------------------------------------------------- command line
def _summary(result: dict[str, Any]) -> str:
    iv, m = result["interval"], result["model"]
    line = (f"BDI-II {result['bdi_score']:.1f} ({iv['mass']:.0%} interval {iv['low']}–{iv['high']}), "
            f"{result['severity']}; {result['quality']['clips_used']} face clips; model {m['name']} {m['version']}")
    return line + (" — SYNTHETIC demo model: the score means nothing clinically" if m.get("synthetic_demo") else "")


class _Progress:
    """Progress lines on stderr: the upload in 10 % steps, then each stage with the job's progress."""

    def __init__(self, quiet: bool):
        self.quiet, self._upload, self._last = quiet, -1, None

    def upload(self, done: int, total: int) -> None:
        step = int(10 * done / max(total, 1))
        if not self.quiet and step != self._upload:
            self._upload = step
            print(f"upload {100 * done / max(total, 1):5.1f} % of {total / 1e6:.1f} MB", file=sys.stderr)

    def job(self, job: dict[str, Any]) -> None:
        now = (job["status"], round(job["progress"] * 10))
        if not self.quiet and now != self._last:
            self._last = now
            print(f"job {job['id'][:8]} {job['status']:<13} {job['progress']:5.0%}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.client", description=__doc__.split("\n\n")[0])
    p.add_argument("video", help="the video file to score")
    p.add_argument("--url", default=DEFAULT_URL, help=f"the service (default {DEFAULT_URL}; env DJLDML_URL)")
    p.add_argument("--api-key", default=os.environ.get("DJLDML_API_KEY"), help="X-API-Key (env DJLDML_API_KEY)")
    p.add_argument("--out", help="write the result JSON here (default: print it)")
    p.add_argument("--idempotency-key", help="reuse this key to retry a submission safely (default: a new UUID)")
    p.add_argument("--callback-url", help="the service POSTs the job's end here (allow-listed hosts only)")
    p.add_argument("--faces", metavar="JPEG", help="also save the contact sheet of the faces the model saw")
    p.add_argument("--timeout", type=float, default=1800.0, help="give up waiting after this many seconds")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    if not Path(args.video).is_file():
        print(f"error: no such file: {args.video}", file=sys.stderr)
        return 2
    progress = _Progress(args.quiet)
    try:
        with Client(args.url, api_key=args.api_key) as c:
            job = c.submit(args.video, idempotency_key=args.idempotency_key, callback_url=args.callback_url,
                           faces_preview=bool(args.faces), on_upload=progress.upload)
            result = c.wait(job["id"], timeout=args.timeout, on_progress=progress.job)
            if args.faces:
                Path(args.faces).write_bytes(c.faces(job["id"]))
    except ServiceError as exc:
        print(f"error: {exc}" + (f" (job {exc.job_id})" if exc.job_id else ""), file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        print(f"error: cannot reach {args.url}: {exc.__class__.__name__}", file=sys.stderr)
        return 3
    except (TimeoutError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, OSError) else 1
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(_summary(result), file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
