"""Who the control API says called it: the token check and the audit agree, secrets stay out."""

import httpx
import pytest

from tests.hardening.api_running import running_api

ROUTES = [
    ("GET", "/api/v1/status", None),
    ("GET", "/api/v1/openapi.json", None),
    ("POST", "/api/v1/feedback", {"model": "support", "prompt": "p", "answer": "a"}),
    ("POST", "/api/v1/models/support/pause", {"reason": "x"}),
]


@pytest.fixture
def api(tmp_path):
    with running_api(tmp_path) as running:
        yield running


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize(
    "authorization",
    ["Bearer é-not-ascii".encode(), b"Bearer \xff\xfe", "Bearer ключ".encode() * 8],
)
def test_a_non_ascii_token_is_401_and_audited(api, method, path, body, authorization):
    with api.client() as client:
        reply = client.request(method, path, json=body, headers={"Authorization": authorization})
    assert reply.status_code == 401, reply.text
    assert reply.json() == {"detail": "missing or wrong bearer token"}
    assert reply.headers["www-authenticate"] == "Bearer"
    [row] = [r for r in api.audit() if r["path"] == path]
    assert (row["actor"], row["method"], row["status_code"]) == ("anonymous", method, 401)
    assert api.rows("SELECT count(*) FROM feedback")[0][0] == 0


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
def test_any_case_of_the_bearer_scheme_is_the_operator(api, scheme):
    reply = httpx.get(
        api.url + "/api/v1/status", headers={"Authorization": f"{scheme} {api.token}"}
    )
    assert reply.status_code == 200, reply.text
    [row] = [r for r in api.audit() if r["path"] == "/api/v1/status"]
    assert (row["actor"], row["status_code"]) == ("operator", 200)


def test_the_token_in_the_query_string_is_never_stored(api):
    secret_params = [
        {"token": api.token},
        {"access_token": api.token, "limit": "3"},
        {"api_key": "sk-someone-elses", "limit": "3"},
        {"limit": "3", "q": f"x{api.token}y"},
    ]
    with api.client() as client:
        for params in secret_params:
            client.get("/api/v1/requests", params=params)  # anonymous: 401
            client.get("/api/v1/requests", params=params, headers=api.auth)
    rows = [r for r in api.audit() if r["path"] == "/api/v1/requests"]
    assert [r["status_code"] for r in rows] == [401, 200] * len(secret_params)
    served = httpx.get(api.url + "/api/v1/audit", headers=api.auth).text
    stored = api.rows("SELECT string_agg(coalesce(detail, ''), ' ') FROM audit_log")
    for text in (served, stored[0][0]):
        assert api.token not in text
        assert "sk-someone-elses" not in text
    assert rows[1]["detail"] == {"token": "[redacted]"}
    assert rows[3]["detail"] == {"access_token": "[redacted]", "limit": "3"}
    assert rows[7]["detail"] == {"limit": "3", "q": "[redacted]"}


@pytest.mark.parametrize("authorized", [True, False])
def test_forwarded_headers_do_not_change_the_audited_client(api, authorized):
    forged = {
        "X-Forwarded-For": "203.0.113.7",
        "X-Real-IP": "203.0.113.8",
        "Forwarded": "for=203.0.113.9",
        **(api.auth if authorized else {}),
    }
    reply = httpx.get(api.url + "/api/v1/status", headers=forged)
    assert reply.status_code == (200 if authorized else 401)
    [row] = [r for r in api.audit() if r["path"] == "/api/v1/status"]
    assert row["client"] == "127.0.0.1"
