"""Job-end notifications: the job's document POSTed to its ``callback_url``, signed, with bounded retries.

The scheme is Standard Webhooks (https://www.standardwebhooks.com, signed by the ``standardwebhooks`` package):
each POST carries

- ``webhook-id``: ``msg_<job id>`` — the same on every attempt, so a receiver can drop duplicates;
- ``webhook-timestamp``: Unix seconds of this attempt — a receiver refuses stale ones (replay protection);
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256(secret, "<webhook-id>.<webhook-timestamp>.<body>")>``,

where the secret is the sending API key's (``DJLDML_CALLBACK_SECRETS``, ``whsec_<base64>``). The body is the
event ``{"type": "job.done" | "job.failed", "timestamp", "data": <the job's GET /jobs/{id} document>}``
(schemas.CallbackEvent). docs/api.md has a receiver's verification in Python.

A URL is allowed when its host is on ``DJLDML_CALLBACK_HOSTS`` (exact host, ``host:port``, or ``*.domain``), it
has no user name or password, it uses https (plain http only to a loopback host, for local receivers) and the
key has a signing secret: checked when the job is submitted (422 ``callback_not_allowed``) and again before
each delivery. Redirects are not followed. A POST that fails (no answer within ``CALLBACK_TIMEOUT_S``, or not
2xx) is retried ``CALLBACK_RETRIES`` times, the delay doubling from ``CALLBACK_RETRY_DELAY_S`` up to 60 s —
by tenacity in embedded mode (a small thread pool, apart from the job threads) and by Celery's retry in the
full stack (a separate task, so a slow receiver holds a worker for one timeout at most, never during the
waits). A job deleted before its callback went out is not sent. Logs name the job and the HTTP status only.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from .api.problems import Problem
from .auth import ANONYMOUS, owner_of
from .jobs import Job, JobStore
from .settings import Settings

log = logging.getLogger("service.callbacks")

MAX_URL_CHARS = 2048
MAX_RETRY_DELAY_S = 60.0
USER_AGENT = "djldml-callbacks/1"


class DeliveryFailed(Exception):
    """One POST of a callback did not get a 2xx answer (the reason: an HTTP status or an error class)."""


# ---------------------------------------------------------------------------------------------- what is allowed
def secret_for(owner: str, settings: Settings) -> str | None:
    """The signing secret of the API key filed as ``owner`` (its own entry, else ``*``); None: no secret."""
    for key, secret in settings.callback_secrets.items():
        if key != "*" and owner != ANONYMOUS and owner_of(key) == owner:
            return secret
    return settings.callback_secrets.get("*")


def _host_allowed(host: str, port: int | None, allowed: list[str]) -> bool:
    for entry in allowed:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and host != entry[2:]:
                return True
        elif ":" in entry and not entry.startswith("["):
            h, _, p = entry.rpartition(":")
            if h == host and port is not None and p == str(port):
                return True
        elif entry.strip("[]") == host:
            return True
    return False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, owner: str, settings: Settings) -> str:
    """``url`` if this service may POST ``owner``'s results to it; raises Problem("callback_not_allowed")
    saying why not (see the module docstring for the rules)."""

    def refuse(why: str) -> Problem:
        return Problem("callback_not_allowed", why)

    if len(url) > MAX_URL_CHARS:
        raise refuse(f"callback_url is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        raise refuse("callback_url is not a URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise refuse("callback_url must be an absolute https URL")
    if parts.username or parts.password:
        raise refuse("callback_url must not carry a user name or password")
    if not _host_allowed(host, port, settings.callback_hosts):
        raise refuse(f"the host {host!r} is not on this service's callback allow-list (DJLDML_CALLBACK_HOSTS)")
    if parts.scheme == "http" and not _is_loopback(host):
        raise refuse("callback_url must use https (plain http only to a loopback address)")
    secret = secret_for(owner, settings)
    if not secret:
        raise refuse("no callback signing secret is configured for this API key (DJLDML_CALLBACK_SECRETS)")
    try:
        Webhook(secret)
    except Exception:  # the operator's setting, not the client's request: say so in the log, never the secret
        log.error("the callback signing secret for an API key is not base64 (whsec_...): callbacks refused")
        raise refuse("this API key's callback signing secret is misconfigured") from None
    return url


# ---------------------------------------------------------------------------------------------- what is sent
def event(job: Job) -> dict[str, Any]:
    """The callback body: ``{type, timestamp, data}`` with ``data`` the job's status document."""
    from .api.schemas import job_status

    return {"type": f"job.{job.status}", "timestamp": datetime.fromtimestamp(job.updated_at, UTC).isoformat(),
            "data": job_status(job).model_dump(mode="json")}


def signed_headers(secret: str, msg_id: str, body: str, now: float | None = None) -> dict[str, str]:
    """Standard Webhooks headers for ``body`` sent at ``now`` (Unix seconds; default: the current time)."""
    at = datetime.fromtimestamp(int(time.time() if now is None else now), UTC)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, at, body),
            "content-type": "application/json", "user-agent": USER_AGENT}


def post_once(job_id: str, store: JobStore, settings: Settings) -> int | None:
    """One attempt: POST the finished job's event to its callback_url; returns the HTTP status, or None when
    there is nothing to send (job gone or not finished, no callback_url, the URL no longer allowed).

    Raises DeliveryFailed (no 2xx answer within ``CALLBACK_TIMEOUT_S``) and StoreUnavailable."""
    job = store.get(job_id)
    if job is None or not job.finished or not job.callback_url:
        return None
    try:
        check_url(job.callback_url, job.owner, settings)
    except Problem as exc:
        log.warning("job %s: callback dropped: %s", job_id, exc.code)
        return None
    body = json.dumps(event(job), separators=(",", ":"))
    headers = signed_headers(secret_for(job.owner, settings) or "", f"msg_{job.id}", body)
    try:
        r = httpx.post(job.callback_url, content=body.encode(), headers=headers,
                       timeout=settings.callback_timeout_s, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(exc.__class__.__name__) from None
    if not 200 <= r.status_code < 300:
        raise DeliveryFailed(f"HTTP {r.status_code}")
    log.info("job %s: callback delivered (HTTP %d)", job_id, r.status_code)
    return r.status_code


def retry_delay_s(settings: Settings, retries_done: int) -> float:
    """Seconds before retry number ``retries_done + 1``: CALLBACK_RETRY_DELAY_S doubled each time, ≤ 60 s."""
    return min(MAX_RETRY_DELAY_S, settings.callback_retry_delay_s * 2**retries_done)


# ---------------------------------------------------------------------------------------------- embedded mode
class CallbackSender:
    """Embedded mode: delivers callbacks in its own small thread pool, so the job threads never wait on a
    receiver; each delivery retries with tenacity (bounded, exponential)."""

    def __init__(self, store: JobStore, settings: Settings, threads: int = 2):
        self.store, self.settings = store, settings
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="djldml-callback")

    def job_finished(self, job: Job) -> None:
        """Hook for :func:`service.processing.run_job`: queue the delivery of ``job``'s callback, if any."""
        if job.callback_url:
            self._pool.submit(self.deliver, job.id)

    def deliver(self, job_id: str) -> bool:
        """Deliver with retries; True when a receiver answered 2xx."""
        s = self.settings

        def note(state: RetryCallState) -> None:
            log.warning("job %s: callback attempt %d failed (%s); retrying", job_id, state.attempt_number,
                        state.outcome.exception() if state.outcome else "?")

        try:
            for attempt in Retrying(stop=stop_after_attempt(s.callback_retries + 1),
                                    wait=wait_exponential(multiplier=s.callback_retry_delay_s, max=MAX_RETRY_DELAY_S),
                                    retry=retry_if_exception_type(DeliveryFailed), before_sleep=note, reraise=True):
                with attempt:
                    return post_once(job_id, self.store, s) is not None
        except DeliveryFailed as exc:
            log.warning("job %s: callback not delivered after %d attempts (%s)", job_id, s.callback_retries + 1, exc)
        except Exception as exc:  # the store went away, a bug: never take the pool down
            log.warning("job %s: callback not delivered: %s", job_id, exc.__class__.__name__)
        return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
