"""Calibrating the judge through the control API: started in the background, one at a time,
recorded where the gate reads it, and an unreachable judge reported as an error."""

from __future__ import annotations

import time

from judges.examples import CALIBRATION_SET, load_examples
from tests.hardening.api_running import running_api
from tests.judges.judge_server import verdict

LIMIT = 8


def judges_config(url: str) -> dict[str, object]:
    return {"enabled": False, "base_url": url, "model": "scripted-judge", "max_retries": 0}


def finished(client, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = client.get("/api/v1/judges/calibration").json()
        if not state["running"]:
            return state
        time.sleep(0.1)
    raise AssertionError(f"the calibration still runs after {timeout_s} s: {state}")


def test_a_calibration_runs_in_the_background_once_and_is_recorded(tmp_path, judge_server):
    label_of = {e.response: e.label for e in load_examples(CALIBRATION_SET)[:LIMIT]}

    def respond(messages):
        label = next(lbl for text, lbl in label_of.items() if text in messages[-1]["content"])
        reply = verdict(label)
        reply.delay_s = 0.3  # long enough for the second request to find it running
        return reply

    judge_server.respond = respond
    with (
        running_api(tmp_path, judges=judges_config(judge_server.url)) as api,
        api.client() as client,
    ):
        client.headers.update(api.auth)
        started = client.post("/api/v1/judges/calibrate", json={"limit": LIMIT})
        assert started.status_code == 202, started.text
        assert started.json()["running"] is True
        again = client.post("/api/v1/judges/calibrate", json={"limit": LIMIT})
        assert again.status_code == 409
        assert "already running" in again.json()["detail"]

        state = finished(client)
        assert "error" not in state, state
        assert state["kappa"] == 1.0  # the scripted judge agrees with every label
        [row] = client.get("/api/v1/judges/calibrations").json()
        assert (row["n_items"], row["kappa"], row["flagged"]) == (LIMIT, 1.0, False)
        assert judge_server.attempts == LIMIT
        audited = [r for r in api.audit() if r["path"] == "/api/v1/judges/calibrate"]
        assert [r["status_code"] for r in audited] == [202, 409]


def test_an_unreachable_judge_is_reported_and_recorded_as_flagged(tmp_path):
    with (
        running_api(tmp_path, judges=judges_config("http://127.0.0.1:9/v1")) as api,
        api.client() as client,
    ):
        client.headers.update(api.auth)
        assert client.post("/api/v1/judges/calibrate", json={"limit": 4}).status_code == 202
        state = finished(client)
        # every call failed: nothing parsed, so the judge is flagged and the gate will not use it
        [row] = client.get("/api/v1/judges/calibrations").json()
        assert (row["parsed"], row["flagged"]) == (0.0, True)
        assert state["kappa"] is None and "FLAGGED" in state["summary"], state


def test_the_cli_record_path_follows_the_service_calibration_to_its_recorded_flag(
    tmp_path, judge_server
):
    from driftloop.api.client import ControlClient
    from driftloop.cli.judges import calibrate_in_service

    judge_server.respond = lambda messages: verdict(1)  # every answer 1, as SmolLM2 does
    with running_api(tmp_path, judges=judges_config(judge_server.url)) as api:
        with ControlClient(api.url, api.token) as client:
            state = calibrate_in_service(client, LIMIT, poll_s=0.1, timeout_s=30)
        assert state["flagged"] is True and state["kappa"] == 0.0, state
        assert "weighted kappa 0.000" in state["summary"] and "FLAGGED" in state["summary"]
        [(n_items, flagged)] = api.rows("SELECT n_items, flagged FROM judge_calibrations")
        assert (n_items, flagged) == (LIMIT, True)
