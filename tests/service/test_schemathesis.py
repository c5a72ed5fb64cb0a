"""Schemathesis (property-based, from the OpenAPI schema) against the running embedded service: no input may
produce a 500. Schema conformance of the answers is checked too, except the one check the schema cannot
satisfy: a schema-valid upload (any bytes in the ``video`` field) is rightly rejected when it is not a video."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.conftest import KEY

pytestmark = pytest.mark.integration


def test_schemathesis_finds_no_server_error(embedded_service, tmp_path):
    st = Path(sys.executable).parent / "schemathesis"
    cmd = [str(st), "run", f"{embedded_service.url}/openapi.json", "-H", f"X-API-Key: {KEY}",
           "--checks", "all", "--exclude-checks", "positive_data_acceptance",
           "--max-examples", "15", "--generation-deterministic", "--no-color"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "passed" in r.stdout
