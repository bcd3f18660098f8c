"""The whole observability path for real: sidecar -> Prometheus -> rules -> Alertmanager -> webhook.

Prometheus (/usr/bin/prometheus) scrapes the running driftloop sidecar every second and evaluates
a copy of alerts/driftloop.rules.yml whose ``for:`` durations and group intervals are divided by
60 (10m -> 10s; expressions untouched), so alerts fire within a test. Alertmanager
(/usr/bin/prometheus-alertmanager) runs alerts/alertmanager.yml as committed (group_wait
included) with its two webhook URLs pointed at a real HTTP receiver in this test.

The staged regression: the upstream (benchmarks/upstream_stub.py, wrapped so the test can make its
answers regress) starts refusing. The service's real judge job scores the captured answers with the
refusal rule judge, driftloop_judge_score_mean falls, DriftloopQualityRegression fires and
Alertmanager pages the receiver. The time from the first refused answer to the page is printed.
Then every dashboard panel query is run against this Prometheus and every dashboard is rendered.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from benchmarks import upstream_stub
from dashboards.build import build_dashboards, executable, panel_queries
from dashboards.prometheus import PrometheusClient
from dashboards.render import render_dashboard
from driftloop.cli.main import cli
from driftloop.service import build_components
from monitor.corpora import chatterbot_conversations
from tests.conftest import make_config
from tests.observability.stack import (
    REPO,
    alertmanager,
    fast_rules,
    prometheus,
    wait_for_scrape,
    webhook_receiver,
)
from tests.polling import wait_until
from tests.servers import serve_in_thread

pytestmark = pytest.mark.slow

REFUSAL = "I'm sorry, but I can't help with that request."
PAGE_PATH, TICKET_PATH = "/page", "/ticket"
# Queries that can only return data after an event this test does not stage, and why. The test
# asserts they are empty here, so an entry must go once its data appears.
NEEDS_EVENT = {
    "vllm:": "vLLM's own metrics need a vLLM scrape target: test_vllm_panels.py checks them",
    "driftloop_retrain_": "needs the retrain loop; a run trains a LoRA for minutes, not run here",
    "driftloop_training_": (
        "set during a retrain run's train stage (retrain is off here): tests/retrain/test_cancel.py"
    ),
    "driftloop_gate_decisions_total": "needs a retrain run reaching the golden-set gate",
    "driftloop_deployed_adapter_info": "needs the retrain loop's deployer (retrain is off here)",
    "driftloop_rollbacks_total": "needs a deployed adapter to roll back",
    "driftloop_canary_": (
        "needs a canary release (retrain is off here): tests/retrain/test_canary_e2e.py runs them"
    ),
    "driftloop_adapter_agent_": (
        "only fleet sidecars run an adapter agent (serve loads adapters itself):"
        " tests/fleet/test_rollout.py"
    ),
    "driftloop_judge_anchor_shift": "needs an anchor-set pass (hourly) with parseable verdicts",
    "driftloop_drift_min_detectable_shift_ratio": (
        "set only when the windows are large enough that some shift would be caught with 90%"
        " power (monitor/drift/power.py); this test's windows are too small"
    ),
}


class RegressingUpstream:
    """The upstream stub; after ``regress()`` its non-streamed chat answers are refusals."""

    def __init__(self) -> None:
        self.regressed = False

    def regress(self) -> None:
        self.regressed = True

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = json.loads(body) if body else {}
        if self.regressed and scope["path"] == "/v1/chat/completions" and not request.get("stream"):
            model = str(request.get("model") or upstream_stub.DEFAULT_MODEL)
            answer = upstream_stub.completion_body(model).replace(
                upstream_stub.ANSWER.encode(), REFUSAL.encode()
            )
            await upstream_stub.respond(send, 200, answer)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await upstream_stub.app(scope, replay, send)


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 120) -> Any:
    return wait_until(check, what=what, timeout_s=timeout_s, interval_s=0.25)


def value(prom: PrometheusClient, expr: str) -> float | None:
    result = prom.query(expr, time.time())
    return result[0].points[-1][1] if result else None


@contextlib.contextmanager
def running(app: Any) -> Iterator[str]:
    with serve_in_thread(app) as url:
        yield url


def test_a_staged_quality_regression_pages_through_prometheus_and_alertmanager(tmp_path):
    rng = random.Random(11)
    chat = [c.prompt for c in chatterbot_conversations(["ai", "food", "greetings", "humor"])]
    tech = [c.prompt for c in chatterbot_conversations(["tech_support"])]
    rng.shuffle(chat)
    rng.shuffle(tech)
    upstream = RegressingUpstream()
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        hook = stack.enter_context(webhook_receiver())
        am = stack.enter_context(
            alertmanager(tmp_path / "am", hook.url + PAGE_PATH, hook.url + TICKET_PATH)
        )
        upstream_stack = contextlib.ExitStack()
        stack.callback(upstream_stack.close)
        upstream_url = upstream_stack.enter_context(running(upstream))
        cfg = make_config(
            tmp_path,
            aliases={"support": "stub-model"},
            capture={"flush_interval_s": 0.2, "max_body_bytes": 4096},
            drift={
                "reference_size": 30,
                "window_size": 30,
                "min_samples": 20,
                "interval_s": 2,
                "embed_interval_s": 1,
            },
            judges={
                "sample_rate": 1.0,
                "per_alias": 100,
                "window_size": 30,
                "interval_s": 1,
                "daily_request_budget": 40,
                "max_retries": 0,
            },
            retrain={"enabled": False},
        )
        parts = build_components(cfg, upstream_url, CollectorRegistry())
        stack.callback(parts.close)
        sidecar_url = stack.enter_context(serve_in_thread(parts.sidecar))
        rules = fast_rules((REPO / "alerts" / "driftloop.rules.yml").read_text())
        prom_server = stack.enter_context(
            prometheus(
                tmp_path / "prom",
                {"driftloop": sidecar_url.removeprefix("http://")},
                am.url,
                rules,
            )
        )
        http = stack.enter_context(httpx.Client(timeout=30))
        prom = PrometheusClient(prom_server.url, http)
        assert parts.jobs is not None
        parts.jobs.start()
        client = openai.OpenAI(base_url=sidecar_url + "/v1", api_key="x", max_retries=0)
        started = time.time()

        def send(prompts: list[str], stream_every: int = 0) -> None:
            for i, prompt in enumerate(prompts):
                messages = [{"role": "user", "content": prompt}]
                if stream_every and i % stream_every == 0:
                    for _ in client.chat.completions.create(
                        model="support", messages=messages, stream=True
                    ):
                        pass
                else:
                    client.chat.completions.create(model="support", messages=messages)

        # Healthy traffic: the reference window and a current window of the same topics.
        send(chat[:60], stream_every=5)
        wait_for(
            "a healthy judged window in Prometheus",
            lambda: (
                (value(prom, 'driftloop_judge_window_samples{judge="refusal"}') or 0) >= 20
                and value(prom, 'driftloop_judge_score_mean{judge="refusal"}') == 5
            ),
        )
        wait_for(
            "two drift evaluations",
            lambda: (value(prom, "sum(driftloop_drift_runs_total)") or 0) >= 2,
        )
        assert not hook.firing(PAGE_PATH, "DriftloopQualityRegression")

        # The regression: from now on the model refuses (and the topics shift to tech support).
        regressed_at = time.time()
        upstream.regress()
        send(tech[:40])
        page = wait_for(
            "the quality page at the webhook",
            lambda: hook.firing(PAGE_PATH, "DriftloopQualityRegression"),
            timeout_s=180,
        )[0]
        alert = next(
            a
            for a in page.body["alerts"]
            if a["labels"]["alertname"] == "DriftloopQualityRegression"
        )
        assert alert["labels"]["severity"] == "page"
        assert alert["labels"]["model"] == "support" and alert["labels"]["judge"] == "refusal"
        assert alert["annotations"]["runbook_url"] == (
            "alerts/runbooks/DriftloopQualityRegression.md"
        )
        assert page.body["receiver"] == "pager"
        results["regression_to_page_s"] = page.at - regressed_at
        results["score_below_3_s"] = None
        low = prom.query_range(
            'driftloop_judge_score_mean{judge="refusal"} < 3', regressed_at, page.at, 0.5
        )
        if low:
            results["score_below_3_s"] = low[0].points[0][0] - regressed_at
        active = [
            a for a in prom.alerts() if a["labels"]["alertname"] == "DriftloopQualityRegression"
        ]
        results["prometheus_active_at"] = active[0]["activeAt"] if active else None

        # Events the Traffic panels show: clients that leave mid-stream, an oversized request,
        # then an upstream that is gone (502s). Spread over scrapes: the first event of a fresh
        # counter series is invisible to rate(), later ones are not.
        for _ in range(2):
            with http.stream(
                "POST",
                sidecar_url + "/v1/chat/completions",
                json={
                    "model": "support",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                },
                headers={"x-stub-chunk-delay-ms": "200"},
            ) as response:
                next(response.iter_bytes())
            wait_for_scrape(prom, "driftloop", time.time())
        send(["x" * 5000])
        upstream_stack.close()
        for _ in range(6):
            with pytest.raises(openai.APIStatusError):
                client.chat.completions.create(
                    model="support", messages=[{"role": "user", "content": "still there?"}]
                )
            wait_for_scrape(prom, "driftloop", time.time())
        wait_for(
            "upstream errors and disconnects in Prometheus",
            lambda: (
                value(prom, "sum(rate(driftloop_proxy_upstream_errors_total[30s])) > 0")
                and value(prom, "sum(rate(driftloop_proxy_client_disconnects_total[30s])) > 0")
            ),
            timeout_s=30,
        )
        warnings = wait_for(
            "a warning at the ticket webhook",
            lambda: [r for r in hook.received if r.path == TICKET_PATH],
            timeout_s=90,
        )
        results["warnings_received"] = sorted(
            {a["labels"]["alertname"] for r in warnings for a in r.body["alerts"]}
        )
        # a few more scrapes after the last event
        ended = wait_for_scrape(prom, "driftloop", time.time() + 2)

        empty = check_every_panel_query(prom, started, ended)
        out = Path(os.environ.get("DRIFTLOOP_DASHBOARD_PNG_DIR") or tmp_path / "png")
        for name, model in build_dashboards().items():
            report = render_dashboard(
                model,
                prom,
                out / name.replace(".json", ".png"),
                start=started,
                end=ended,
                rate_interval="30s",
            )
            assert report.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert set(report.empty) <= empty, (name, report.empty)
        results["pngs"] = str(out)
        span = f"{ended - started:.0f}s"
        args = ["--prometheus", prom_server.url, "--out", str(tmp_path / "cli"), "--range", span]
        args += ["--end", str(ended), "--rate-interval", "30s"]
        rendered = CliRunner().invoke(cli, ["dashboards", "render", *args])
        assert rendered.exit_code == 0, rendered.output
        assert rendered.output.count("wrote ") == 4 and (tmp_path / "cli" / "drift.png").exists()

    print("\nobservability stack:", json.dumps(results, indent=2))
    assert results["regression_to_page_s"] > 0


def check_every_panel_query(prom: PrometheusClient, start: float, end: float) -> set[str]:
    """Every panel query returns finite data over the run, or is listed in NEEDS_EVENT (and empty).

    Returns the titles of panels all of whose queries need an event.
    """
    silent = []
    needs: dict[str, list[bool]] = {}
    for model in build_dashboards().values():
        for query in panel_queries(model):
            expr = executable(query.expr, "30s")
            data = prom.query_range(expr, start, end, 1)
            reason = next((why for key, why in NEEDS_EVENT.items() if key in expr), None)
            needs.setdefault(query.panel, []).append(reason is not None)
            if reason is None and not data:
                silent.append(f"{query.dashboard} / {query.panel}: {expr}")
            if reason is not None:
                assert not data, f"{expr} has data now: drop it from NEEDS_EVENT ({reason})"
    assert not silent, "panel queries without data:\n" + "\n".join(silent)
    return {panel for panel, flags in needs.items() if all(flags)}
