"""The retrain loop's control routes over real HTTP: token, validation, traversal, audit."""

import json

import httpx
import pytest
from prometheus_client import CollectorRegistry

from driftloop.api.app import create_api
from driftloop.api.loop_routes import loop_router
from driftloop.service import build_components
from retrain.control import LoopControl
from retrain.data.sources import training_examples
from tests.conftest import make_config
from tests.servers import serve_in_thread

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(tmp_path):
    cfg = make_config(tmp_path, aliases={"support": "smollm2"}, judges={"enabled": False})
    parts = build_components(cfg, "http://127.0.0.1:9", CollectorRegistry())
    assert parts.retrain is not None
    routers = [loop_router(LoopControl(parts.retrain.loop), lambda: {"support"})]
    app = create_api(TOKEN, parts.store, parts.sidecar, parts.aliases, routers)
    with serve_in_thread(app) as url:
        yield httpx.Client(base_url=url, timeout=10), parts
    parts.close()


WRITES = [
    ("POST", "/api/v1/retrain", {"model": "support", "reason": "x"}),
    ("POST", "/api/v1/retrain/dry-run", {"model": "support"}),
    ("POST", "/api/v1/retrain/runs/abc/cancel", {"reason": "x"}),
    ("POST", "/api/v1/models/support/pause", {"reason": "x"}),
    ("POST", "/api/v1/models/support/rollback", {"reason": "x"}),
    ("POST", "/api/v1/adapters/abc/promote", {"reason": "x"}),
    ("POST", "/api/v1/feedback", {"model": "support", "prompt": "p", "answer": "a"}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_every_route_needs_the_token(api, method, path, body, headers):
    client, parts = api
    response = client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert parts.store.query("SELECT count(*) FROM feedback")[0][0] == 0


def test_bad_bodies_are_422_naming_the_field(api):
    client, _ = api
    cases = [
        ("/api/v1/feedback", {"model": "support", "prompt": "", "answer": "a"}, "prompt"),
        ("/api/v1/feedback", {"model": "support", "answer": "a"}, "prompt"),
        ("/api/v1/feedback", {"model": "support", "prompt": "p", "answer": "a", "x": 1}, "x"),
        ("/api/v1/models/support/pause", {}, "reason"),
        ("/api/v1/retrain", {"model": "../etc", "reason": "r"}, "model"),
    ]
    for path, body, field in cases:
        response = client.post(path, json=body, headers=AUTH)
        assert response.status_code == 422, (path, body, response.text)
        locations = [error["loc"][-1] for error in response.json()["detail"]]
        assert field in locations, response.json()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/adapters/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/adapters/..",
        "/api/v1/adapters/a%20b/promote",
        "/api/v1/models/..%2Fsecret/pause",
    ],
)
def test_path_traversal_in_names_is_rejected(api, path):
    client, _ = api
    method = "GET" if path.count("/") == 4 else "POST"
    response = client.request(method, path, json={"reason": "x"}, headers=AUTH)
    assert response.status_code in (404, 422), response.text
    assert response.status_code != 200


def test_unknown_alias_and_unknown_adapter_are_named(api):
    client, _ = api
    r = client.post("/api/v1/models/nobody/pause", json={"reason": "x"}, headers=AUTH)
    assert r.status_code == 404 and "unknown model alias 'nobody'" in r.json()["detail"]
    r = client.post("/api/v1/adapters/abc123/promote", json={"reason": "x"}, headers=AUTH)
    assert r.status_code == 404 and "no adapter 'abc123'" in r.json()["detail"]
    r = client.post("/api/v1/models/support/rollback", json={"reason": "x"}, headers=AUTH)
    assert r.status_code == 409 and "nothing to roll back" in r.json()["detail"]


def test_feedback_pause_and_dry_run_are_stored_and_audited(api):
    client, parts = api
    r = client.post(
        "/api/v1/feedback",
        json={"model": "support", "prompt": "My mouse is dead.", "answer": "HelpDesk: ..."},
        headers=AUTH,
    )
    assert r.status_code == 201
    [(prompt, actor)] = parts.store.query("SELECT prompt, actor FROM feedback")
    assert (prompt, actor) == ("My mouse is dead.", "operator")

    assert client.post(
        "/api/v1/models/support/pause", json={"reason": "holiday freeze"}, headers=AUTH
    ).json() == {"model": "support", "paused": True}
    dry = client.post("/api/v1/retrain/dry-run", json={"model": "support"}, headers=AUTH).json()
    assert dry["decision"].startswith("would be not_triggered")
    forced = client.post(
        "/api/v1/retrain", json={"model": "support", "reason": "now please"}, headers=AUTH
    )
    assert forced.status_code == 409 and "paused by an operator" in forced.json()["detail"]
    assert parts.registry.get_sample_value("driftloop_retrain_paused", {"model": "support"}) == 1

    audit = client.get("/api/v1/audit", params={"limit": 50}, headers=AUTH).json()
    by_path = {(a["method"], a["path"], a["status_code"]): a for a in audit}
    pause = by_path[("POST", "/api/v1/models/support/pause", 200)]
    assert json.loads(pause["detail"]) == {"reason": "holiday freeze"}
    assert pause["actor"] == "operator"
    assert ("POST", "/api/v1/retrain", 409) in by_path
    assert ("POST", "/api/v1/feedback", 201) in by_path
    decisions = parts.store.query("SELECT trigger, decision FROM retrain_decisions ORDER BY id")
    assert decisions == [("none", "dry_run"), ("manual", "suppressed")]


def test_preference_pairs_reach_the_dataset_records(api):
    """A pair posted whole, and a correction of a captured answer (which becomes the rejected)."""
    client, parts = api
    parts.store.execute(
        "INSERT INTO requests (request_id, started_at, route, model_alias, stream, prompt_text,"
        " response_text, status_code) VALUES ('r1', now(), 'chat_completions', 'support', false,"
        " 'Printer jammed.', 'Turn it off.', 200)"
    )
    pair = {"model": "support", "prompt": "Hi!", "answer": "HelpDesk: hello.", "rejected": "yo"}
    correction = {
        "model": "support",
        "prompt": "Printer jammed.",
        "answer": "HelpDesk: open tray 2.",
        "request_id": "r1",
    }
    for body in (pair, correction):
        assert client.post("/api/v1/feedback", json=body, headers=AUTH).status_code == 201
    same = {**pair, "rejected": " HelpDesk: hello. "}
    r = client.post("/api/v1/feedback", json=same, headers=AUTH)
    assert r.status_code == 422 and "rejected is the same answer" in r.text

    records = training_examples(parts.store, "support", judged_min_score=4.0, limit=10)
    rejected = {r["messages"][0]["content"]: r.get("rejected") for r in records}
    assert rejected == {"Hi!": "yo", "Printer jammed.": "Turn it off."}
