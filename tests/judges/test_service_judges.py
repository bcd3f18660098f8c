"""The judge job wired into the service: it judges captured traffic, and a dead judge endpoint
is counted while the sidecar keeps serving."""

import itertools
import time

import httpx
import openai

from benchmarks.upstream_stub import running_stub
from driftloop.api.app import create_api
from driftloop.vllm_process import free_port
from tests.judges.judge_server import verdict
from tests.servers import serve_in_thread

TOKEN = "t" * 32

COUNTER = itertools.count()


def send(url, n, model="support"):
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    for _, i in zip(range(n), COUNTER, strict=False):
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"How do I reset my password {i}?"}]
        )
        assert answer.choices[0].message.content


def test_the_service_judges_captured_traffic(start_sidecar, judge_server):
    judge_server.respond = lambda messages: verdict(4, "fine")
    with running_stub() as port:
        sidecar = start_sidecar(
            f"http://127.0.0.1:{port}",
            aliases={"support": "stub"},
            drift={"enabled": False},
            judges={"base_url": judge_server.url, "model": "judge-x", "sample_rate": 1.0},
        )
        send(sidecar.url, 5)
        sidecar.flush()
        report = sidecar.parts.jobs.run_now("judge")
        assert report == {
            "helpfulness": {"scored": 5},
            "refusal": {"scored": 5},
            "empty": {"scored": 5},
        }
        assert judge_server.attempts == 5
        assert {r["model"] for r in judge_server.requests} == {"judge-x"}
        rows = sidecar.rows(
            "SELECT j.model_alias, j.score, r.response_text IS NOT NULL FROM judgments j"
            " JOIN requests r USING (request_id) WHERE j.judge = 'helpfulness'"
        )
        assert rows == [("support", 4.0, True)] * 5
        exposition = httpx.get(sidecar.url + "/metrics").text
        api = create_api(TOKEN, sidecar.parts.store, sidecar.parts.sidecar, sidecar.parts.aliases)
        with serve_in_thread(api) as api_url:
            listed = httpx.get(
                api_url + "/api/v1/judgments",
                params={"judge": "helpfulness", "model": "support", "limit": 3},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ).json()
    assert 'driftloop_judge_score_mean{judge="helpfulness",model="support"} 4.0' in exposition
    assert 'driftloop_judge_window_samples{judge="helpfulness",model="support"} 5.0' in exposition
    assert [(j["judge"], j["score"], j["reason"], j["outcome"]) for j in listed] == [
        ("helpfulness", 4.0, "fine", "scored")
    ] * 3


def test_a_dead_judge_endpoint_is_counted_and_traffic_still_flows(start_sidecar):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with running_stub() as port:
        sidecar = start_sidecar(
            f"http://127.0.0.1:{port}",
            aliases={"support": "stub"},
            drift={"enabled": False},
            judges={
                "base_url": dead,
                "sample_rate": 1.0,
                "interval_s": 0.2,
                "max_retries": 1,
                "backoff_s": 0.01,
            },
        )
        sidecar.parts.jobs.start()  # the real schedule, in its background thread
        errors, sent = 0.0, 0
        deadline = time.monotonic() + 30
        while errors < 10 and time.monotonic() < deadline:
            send(sidecar.url, 2)  # every request succeeds while the judge keeps failing
            sent += 2
            errors = sidecar.metric(
                "driftloop_judge_evaluations_total", judge="helpfulness", outcome="error"
            )
        assert errors >= 10
        send(sidecar.url, 3)
        sent += 3
        assert httpx.get(sidecar.url + "/healthz").json()["status"] == "ok"
    reasons = sidecar.rows(
        "SELECT DISTINCT outcome, attempts, cached, reason LIKE 'cannot reach%' FROM judgments"
        " WHERE judge = 'helpfulness'"
    )
    assert reasons == [("error", 2, False, True)]  # every prompt differs: no cache hits
    assert sidecar.metric("driftloop_judge_tokens_total", judge="helpfulness") == 0
    ok = sidecar.metric(
        "driftloop_proxy_requests_total", route="chat_completions", status_class="2xx"
    )
    assert ok == sent
