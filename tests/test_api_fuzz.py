"""Schema-driven fuzzing (schemathesis) of the running server: whatever the OpenAPI schema allows, or nearly
allows, the server must answer without a 5xx and with the JSON error shape.

Bounded: a few examples per operation, no shrinking past a short deadline, small answers from the small model.
Destructive operations (delete) run against the fuzz server's own corpus only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.api_server import ApiServer, server_env, wait_job

MAX_EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "12"))  # raise it for a longer local hunt


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    base = tmp_path_factory.mktemp("fuzz")
    docs = base / "root" / "docs"
    docs.mkdir(parents=True)
    (docs / "a.txt").write_text("Lighthouses guide ships along rocky coasts with rotating beams of light.")
    (docs / "b.txt").write_text("Sourdough bread rises thanks to wild yeast and lactic acid bacteria.")
    models = tmp_path_factory.getbasetemp() / "shared-models"
    env = server_env(models, allowed_roots=[str(base / "root")], max_request_kb=64, max_upload_mb=0.1)
    with ApiServer(base / "data", env) as srv:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            job = wait_job(c, c.post("/v1/ingest", json={"paths": [str(docs)]}).json()["job_id"])
            assert job["state"] == "done"
        yield srv


def test_no_server_errors(fuzz_server: ApiServer) -> None:
    """Every operation of the served /openapi.json, MAX_EXAMPLES generated cases each (positive and negative)."""
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, fuzz_server.url)
            except Unsatisfiable:  # e.g. no negative case exists for an operation without parameters
                continue
            except AssertionError as exc:
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:800]}")
    assert not failures, "\n".join(failures)


def _fuzz(operation, mode, base_url: str) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        response = case.call(base_url=base_url, timeout=120)
        where = f"{case.method} {case.formatted_path} -> {response.status_code}"
        assert response.status_code < 500, f"{where}: {response.text[:500]}"
        if response.status_code >= 400:
            body = response.json()
            assert isinstance(body.get("error"), dict) and body["error"].get("message"), f"{where}: {response.text[:300]}"

    run()
