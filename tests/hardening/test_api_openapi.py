"""The control API's OpenAPI document: served behind the token, and schemathesis finds no 5xx."""

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Ok

from driftloop.api.app import OPENAPI_URL
from tests.hardening.api_running import running_api

EXAMPLES = 25  # per operation and mode: bounded so it fits in `make test`
# ignored_auth replays each case without the token and requires a 401.
CHECKS = [checks.not_a_server_error, checks.ignored_auth]
# A data floor no test reaches: a forced retrain is refused (409) instead of training.
QUIET_LOOP = {"min_examples": 1_000_000}
WIDE_OPEN = {"unauthenticated_rate_per_s": 10_000.0, "unauthenticated_burst": 10_000}


def described(exc: BaseException) -> str:
    """The error and, for hypothesis' flaky-failure group, what each attempt raised."""
    inner = getattr(exc, "exceptions", ())
    return "; ".join([str(exc), *(f"{type(e).__name__}: {e}" for e in inner)])


def test_the_openapi_document_needs_the_token(tmp_path):
    with running_api(tmp_path) as api:
        assert httpx.get(api.url + OPENAPI_URL).status_code == 401
        reply = httpx.get(api.url + OPENAPI_URL, headers=api.auth)
        assert reply.status_code == 200
        document = reply.json()
        assert {"/api/v1/status", "/api/v1/audit", "/api/v1/retrain", "/api/v1/feedback"} <= set(
            document["paths"]
        )
        assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        [row] = [r for r in api.audit() if r["path"] == OPENAPI_URL and r["actor"] == "anonymous"]
        assert row["status_code"] == 401


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_finds_no_server_error(tmp_path, mode):
    with running_api(tmp_path, retrain=QUIET_LOOP, api=WIDE_OPEN) as api:
        schema = schemathesis.openapi.from_url(api.url + OPENAPI_URL, headers=api.auth)
        failures = []
        tested = []
        for result in schema.get_all_operations():
            if not isinstance(result, Ok):
                failures.append(f"the document has an invalid operation: {result.err()}")
                continue
            operation = result.ok()
            tested.append(operation.label)

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def exercise(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=api.url, headers=api.auth, checks=CHECKS)

            try:
                exercise()
            except Exception as exc:  # collect every operation's failure, then report them all
                failures.append(f"{operation.label}: {described(exc)}")
        assert len(tested) >= 15, tested  # the retrain loop's routes are mounted too
        assert not failures, "\n\n".join(failures)
        api.audit()  # flushes
        by_status = dict(api.rows("SELECT status_code, count(*) FROM audit_log GROUP BY ALL"))
        assert sum(by_status.values()) > 5 * len(tested), by_status  # it really called them
        assert not {s for s in by_status if s >= 500}, by_status
