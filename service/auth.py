"""API-key authentication: ``X-API-Key`` against the keys in settings, compared in constant time.

With no keys configured the API is open (the gateway warns at start-up). Each key maps to an owner id (a hash
prefix of the key) that jobs are filed under: the per-key concurrency limit counts by it, and a job is visible
only to the key that created it. The key itself is never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from .api.problems import Problem

ANONYMOUS = "anonymous"
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="API key (required when the service is configured with keys)")


def owner_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def check_key(presented: str | None, keys: list[str]) -> str:
    """The owner id for ``presented``; raises Problem("unauthorised") unless it matches one of ``keys``."""
    if not keys:
        return ANONYMOUS
    if not presented:
        raise Problem("unauthorised", "missing X-API-Key header")
    given = presented.encode()
    match = False
    for k in keys:  # compare against every key, so the time does not tell which one nearly matched
        match |= hmac.compare_digest(given, k.encode())
    if not match:
        raise Problem("unauthorised", "invalid API key")
    return owner_of(presented)


def require_key(request: Request, key: str | None = Security(api_key_header)) -> str:
    """FastAPI dependency: the caller's owner id."""
    return check_key(key, request.app.state.settings.api_keys)
