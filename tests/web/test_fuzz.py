"""The API fuzzed from its own OpenAPI schema (schemathesis): whatever the parameters,
no 500, on SQLite and PostgreSQL. Bounded (a few dozen examples per operation) so it
runs in well under a minute."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from contract.settings import Settings
from tests.web.conftest import Filled
from web.app import create_app

EXAMPLES = 30


def test_no_request_makes_a_server_error(filled: Filled) -> None:
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(Settings(database_url=filled.url))
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 8
    seen: dict[str, set[int]] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def call(case) -> None:
            response = case.call()
            seen.setdefault(case.path, set()).add(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} {case.query}: {response.text[:300]}"
            )

        call()
    # the fuzzing reached both sides: answers, and refusals of what is not allowed
    statuses = set().union(*seen.values())
    assert 200 in statuses and statuses & {400, 404, 422}
