"""A flood of calls without the token: 429 past the per-client rate, one audit row with the count."""

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.hardening.api_running import running_api

CALLS = 120


def test_a_flood_is_rate_limited_and_audited_as_one_counted_row(tmp_path):
    api_cfg = {"unauthenticated_rate_per_s": 1.0, "unauthenticated_burst": 5}
    with running_api(tmp_path, api=api_cfg) as api:
        paths = ["/api/v1/status", "/api/v1/requests", "/api/v1/nowhere"]

        def call(i: int) -> httpx.Response:
            return httpx.get(api.url + paths[i % len(paths)], headers={"Authorization": "Bearer x"})

        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(call, range(CALLS)))
        # the operator is not limited by what anonymous clients did
        assert httpx.get(api.url + "/api/v1/status", headers=api.auth).status_code == 200
        statuses = [r.status_code for r in replies]
        assert set(statuses) == {401, 429}
        limited = statuses.count(429)
        assert limited > CALLS // 2  # a burst of 5 plus 1/s cannot cover most of 120 calls
        assert all(r.headers["retry-after"] == "1" for r in replies if r.status_code == 429)
        assert api.metric("driftloop_api_rejected_total", reason="rate_limited") == limited
        assert api.metric("driftloop_api_rejected_total", reason="unauthorized") == CALLS - limited

        rows = api.audit()
        [folded] = [r for r in rows if r["status_code"] == 429]
        assert (folded["actor"], folded["client"], folded["method"]) == (
            "anonymous",
            "127.0.0.1",
            "GET",
        )
        assert folded["path"] == "*"
        assert folded["detail"]["aggregated"] == limited
        assert sum(folded["detail"]["paths"].values()) == limited
        assert set(folded["detail"]["paths"]) <= set(paths)
        assert len([r for r in rows if r["status_code"] == 401]) == CALLS - limited


def test_folded_rows_stay_bounded_by_clients_not_calls(tmp_path):
    api_cfg = {"unauthenticated_rate_per_s": 1.0, "unauthenticated_burst": 1}
    with running_api(tmp_path, api=api_cfg) as api:
        with httpx.Client(base_url=api.url) as client:
            for _ in range(3):  # three flushes in between: each writes at most one folded row
                for _ in range(50):
                    client.get("/api/v1/status")
                api.audit()
        rows = [r for r in api.audit() if r["status_code"] == 429]
        assert len(rows) <= 3
        assert sum(r["detail"]["aggregated"] for r in rows) == api.metric(
            "driftloop_api_rejected_total", reason="rate_limited"
        )
