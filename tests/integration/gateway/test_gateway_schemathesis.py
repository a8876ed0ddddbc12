"""Schemathesis against the aggregated OpenAPI document, through the running gateway, with
the real services behind it. A bounded run: no server error, no status, content type or body that the document
does not allow (every error must be an RFC 9457 problem)."""
from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from openapi_spec_validator import validate

from tests.integration.gateway.gateway_kit import ROOMY_LOGIN_LIMITS, call, missing_services, suite_behind_gateway

NEEDED = ("membership", "catalog", "stock", "orders", "settlement", "notifications")
_missing = missing_services(NEEDED)
pytestmark = [pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(bool(_missing), reason=f"service packages not in the tree yet: {_missing}")]

MAX_EXAMPLES = 4
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(mongo_url, bus_namespace):
    # One fuzzer from one address sends thousands of requests: the limits are not under test here.
    async with suite_behind_gateway(mongo_url, bus_namespace, NEEDED, publish_openapi=True, rate_ip_burst=100_000,
                                    rate_ip_per_s=10_000, rate_principal_burst=100_000, rate_principal_per_s=10_000,
                                    **ROOMY_LOGIN_LIMITS,
                                    rate_order_burst=100_000, rate_order_per_s=10_000) as running:
        yield running


async def run_schemathesis(suite, token: str, report_dir: Path, *filters: str) -> tuple[int, str]:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    process = await asyncio.create_subprocess_exec(
        str(schemathesis), "run", suite.gateway + "/api/docs/openapi.json", "--url", suite.gateway,
        "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES), "--seed", "8",
        "--phases", "examples,coverage,fuzzing", "--generation-database", "none",
        # One worker: hypothesis inspects filter lambdas with `ast`, which is not thread-safe on CPython 3.11.
        "--workers", "1",
        # Rotating membership's signing key twice retires the key of the token this run uses.
        "--exclude-path-regex", "/auth/keys/rotate$",
        *filters,
        "--request-timeout", "20", "--no-color", "--max-failures", "25",
        "--header", f"Authorization: Bearer {token}",
        "--report", "junit", "--report-dir", str(report_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    (report_dir / "schemathesis.txt").write_text(text)
    return process.returncode, text


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(suite, tmp_path: Path):
    async with aiohttp.ClientSession() as http:
        status, token, _ = await call(http, "POST", suite.api + "/auth/staff/token",
                                      json={"username": "hq.admin", "password": "hq-admin-pass"})
        assert status == 200, token
        status, document, _ = await call(http, "GET", suite.gateway + "/api/docs/openapi.json")
    assert status == 200
    validate(document)  # the real services' documents, merged, are a valid OpenAPI 3.1 document
    assert document["x-o2o-missing-services"] == []
    assert not [path for path in document["paths"] if "/internal" in path]
    assert len(document["paths"]) > 40  # every service's public routes are in the aggregated document

    # As HQ admin: every route an admin may call.
    code, text = await run_schemathesis(suite, token["access_token"], tmp_path)
    assert code == 0, text[-12000:]


async def test_schemathesis_as_a_member_on_member_routes(suite, tmp_path: Path):
    """The routes only a customer may call (their own profile, preferences, placing orders)."""
    async with aiohttp.ClientSession() as http:
        status, otp, _ = await call(http, "POST", suite.api + "/auth/member/otp", json={"phone": "+8613800000001"})
        assert status == 202, otp
        status, token, _ = await call(http, "POST", suite.api + "/auth/member/token",
                                      json={"phone": "+8613800000001", "code": otp["dev_code"]})
        assert status == 200, token
    code, text = await run_schemathesis(suite, token["access_token"], tmp_path,
                                        "--include-path-regex", "/me(/|$)|/api/v1/orders$")
    assert code == 0, text[-12000:]
    selected = re.search(r"Selected: (\d+)/", text)
    assert selected and int(selected.group(1)) >= 8, text[-3000:]  # the filter did pick the member routes
