"""The FastAPI application factory: settings → components (service.wiring) → routes, errors, metrics.

``create_app()`` reads settings from the environment; tests pass a :class:`Settings`. The model (in-process
backend) is loaded at start-up; if that fails the gateway still starts and /readyz says why.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from . import wiring
from .api import schemas
from .api.problems import PROBLEMS, install_handlers
from .gateway import Gateway
from .metrics import Metrics, RequestMetricsMiddleware
from .routes import STATIC, router
from .settings import Settings
from .sweeper import Sweeper

log = logging.getLogger("service")

DESCRIPTION = """Estimates depression severity on the BDI-II scale (0–63) from an interview video: the score, its
full probability distribution over the 64 scores, uncertainty, severity band, a per-clip timeline, a quality
report and the model that produced it.

Errors are `application/problem+json` documents with a stable `code`:

| code | HTTP | meaning |
|---|---|---|
""" + "\n".join(f"| `{c}` | {p.status} | {p.title} |" for c, p in PROBLEMS.items()) + """

503 answers carry `Retry-After`. Authentication: `X-API-Key` when the service is configured with keys.
`POST /jobs` and `POST /predict` take an `Idempotency-Key` header (safe retries) and an optional
`callback_url` form field (a signed POST when the job ends: see the callback `jobEnded`). A results page for
people is served at `/`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not settings.api_keys:
            log.warning("no API keys configured (DJLDML_API_KEYS): the API is open to anyone who can reach it")
        store = wiring.build_store(settings)
        storage = wiring.build_storage(settings)
        backend = wiring.build_backend_or_unavailable(settings)
        runner = wiring.build_runner(settings, store, backend, storage)
        app.state.gateway = Gateway(settings, store, storage, backend, runner, metrics)
        app.state.gateway.warn_about_preprocessing()
        sweeper = Sweeper(store, storage, runner, settings).start()
        log.info("gateway ready: %s mode, backend %s%s", "embedded" if settings.embedded else "stack",
                 type(backend).__name__, app.state.gateway.engine_summary())
        try:
            yield
        finally:
            sweeper.stop()
            runner.close()
            backend.close()

    # FastAPIOffline: FastAPI whose /docs and /redoc serve Swagger UI and ReDoc from the package, not a CDN (the
    # service makes no outside requests, and clinics' networks often allow none)
    app = FastAPIOffline(title="DJ-LDML depression severity service", version="0.1.0", description=DESCRIPTION,
                         lifespan=lifespan)
    app.state.settings = settings
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")  # the results page's JS and CSS
    install_handlers(app, settings.retry_after_s, on_problem=metrics.problem)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)

    def openapi():
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
                schemas.ProblemDoc.model_json_schema(ref_template="#/components/schemas/{model}"))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app
