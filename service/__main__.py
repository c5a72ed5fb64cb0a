"""``python -m service --host 127.0.0.1 --port 8000``: the gateway under uvicorn (what ``make serve`` runs).

With no DJLDML_BROKER_URL this is the whole service (embedded mode); in the full stack it is the gateway.
"""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m service", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # h11: the protocol implementation the early-413 test (tests/service/test_api.py) runs against.
    uvicorn.run("service.app:create_app", factory=True, host=args.host, port=args.port, log_level=args.log_level,
                http="h11", timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
