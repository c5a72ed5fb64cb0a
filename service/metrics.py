"""Prometheus metrics of the gateway (``GET /metrics``).

The gateway is the one scrape target for the whole service: job stage durations and job failures happen in the
workers, which push small finished-job events into the job store; the gateway drains them at scrape time
(``collect_job_events``). Each app instance has its own registry, so tests can run several in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("djldml_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.failures = Counter("djldml_failures", "Failures by problem code; where = gateway (HTTP answer) or job",
                                ["code", "where"], registry=self.registry)
        self.jobs_finished = Counter("djldml_jobs_finished", "Jobs finished by final status", ["status"],
                                     registry=self.registry)
        self.stage_seconds = Histogram("djldml_job_stage_seconds", "Job duration by stage", ["stage"],
                                       buckets=STAGE_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("djldml_queue_depth", "Jobs waiting in the queue (embedded: waiting or running)",
                                 registry=self.registry)
        self.upload_bytes = Counter("djldml_upload_bytes", "Bytes of accepted uploads", registry=self.registry)

    def problem(self, code: str) -> None:
        self.failures.labels(code=code, where="gateway").inc()

    def collect_job_events(self, events: list[dict]) -> None:
        for e in events:
            self.jobs_finished.labels(status=e.get("status", "unknown")).inc()
            if e.get("code"):
                self.failures.labels(code=e["code"], where="job").inc()
            for stage, seconds in (e.get("timings") or {}).items():
                self.stage_seconds.labels(stage=stage).observe(float(seconds))

    def render(self, queue_depth: int) -> bytes:
        self.queue_depth.set(queue_depth)
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Pure ASGI middleware (it does not buffer the request body, unlike BaseHTTPMiddleware)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def _send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"  # the template, never the concrete id
            self.metrics.requests.labels(method=scope["method"], route=path, status=str(status["code"])).inc()
