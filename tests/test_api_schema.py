"""Property-based tests of the whole admin API from its own OpenAPI schema (schemathesis).

Every operation in ``/openapi.json`` is called with generated requests (valid and invalid),
with an admin token, against the real daemon over TCP. Whatever arrives, the daemon must not
answer 5xx, and each answer must be one the schema documents, in the documented shape. The
examples per operation are bounded so the module stays well under a minute on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from api_daemon import ApiDaemon, make_daemon
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from mqtt_broker import Broker
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
           module_broker: Broker) -> Iterator[ApiDaemon]:
    daemon = make_daemon(tmp_path_factory.mktemp("fuzzed"), models_dir, module_broker,
                         EDGE_FACE_API__AUTH_FAILURES_PER_MINUTE="100000",
                         EDGE_FACE_API__QUEUE="64")
    daemon.start(wait_ready=True)
    yield daemon
    daemon.stop()


def call_every_operation(daemon: ApiDaemon, mode: GenerationMode) -> list[str]:
    """Run bounded generated cases for each operation; the failures, one line each."""
    schema = schemathesis.openapi.from_url(f"{daemon.base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {daemon.token('fuzzer')}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 19, [op.label for op in operations]  # the whole surface
    for operation in operations:

        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=daemon.base_url, headers=headers, checks=CHECKS,
                                   timeout=60)

        try:
            check()
        except Unsatisfiable:
            continue  # nothing invalid can be said to an operation without inputs
        except Exception as exc:
            failures.append(f"{operation.label}: {str(exc).strip().splitlines()[0]}")
    return failures


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
def test_every_operation_answers_as_documented(fuzzed: ApiDaemon, mode: GenerationMode) -> None:
    failures = call_every_operation(fuzzed, mode)
    assert not failures, "\n".join(failures)
    assert fuzzed.process is not None and fuzzed.process.poll() is None
