"""``python -m service --host 127.0.0.1 --port 8000``: the gateway under uvicorn (what ``make serve`` runs).

With no DJLDML_BROKER_URL this is the whole service (embedded mode); in the full stack it is the gateway.
Without API keys it serves on loopback only, unless DJLDML_ALLOW_OPEN_API=true (see :func:`open_api_refusal`).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

import uvicorn

from .settings import Settings


def open_api_refusal(settings: Settings, host: str) -> str | None:
    """Why the gateway must not start (None: it may). An API without keys is refused on any address but
    loopback unless DJLDML_ALLOW_OPEN_API=true: openness must be a choice, never what an empty setting gives."""
    if settings.api_keys or settings.allow_open_api:
        return None
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        loopback = False
    if loopback:
        return None
    return (f"no API keys (DJLDML_API_KEYS) and listening on {host}: refusing to serve an open API. Set "
            "DJLDML_API_KEYS, or DJLDML_ALLOW_OPEN_API=true if anyone who can reach this port may use it.")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m service", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    refusal = open_api_refusal(Settings(), args.host)
    if refusal:
        logging.getLogger("service").error(refusal)
        sys.exit(2)
    # h11: the protocol implementation the early-413 test (tests/service/test_api.py) runs against.
    uvicorn.run("service.app:create_app", factory=True, host=args.host, port=args.port, log_level=args.log_level,
                http="h11", timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
