"""Staged drift through the sidecar: real prompts -> DuckDB -> real embeddings -> drift_runs + gauges.

Traffic is chatterbot-corpus prompts sent with the openai SDK through the sidecar (the upstream is
the fast stub: drift here is in the prompts, which is what is staged). ``support`` switches from
chit-chat categories to tech_support; ``steady`` keeps drawing from the same categories.
"""

from __future__ import annotations

import html
import json
import random

import httpx
import openai
import pytest

from benchmarks.upstream_stub import running_stub
from monitor.corpora import chatterbot_conversations
from monitor.drift_report import latest_runs, write_report

pytestmark = pytest.mark.slow

WINDOW = 250
CHAT = ["ai", "botprofile", "emotion", "food", "greetings", "humor", "movies", "psychology"]


@pytest.fixture(scope="module")
def prompts():
    rng = random.Random(7)
    chat = [c.prompt for c in chatterbot_conversations(CHAT)]
    tech = [c.prompt for c in chatterbot_conversations(["tech_support"])]
    rng.shuffle(chat)
    rng.shuffle(tech)
    return {"chat": chat, "tech": tech}


def test_topic_shift_trips_embedding_drift_and_a_steady_alias_does_not(
    start_sidecar, prompts, tmp_path
):
    with running_stub() as port:
        sidecar = start_sidecar(
            f"http://127.0.0.1:{port}",
            aliases={"support": "stub", "steady": "stub"},
            drift={
                "reference_size": WINDOW,
                "window_size": WINDOW,
                "min_samples": 200,
                "embed_batch": 4 * WINDOW,
            },
        )
        client = openai.OpenAI(base_url=sidecar.url + "/v1", api_key="x", max_retries=0)

        def send(model: str, texts: list[str]) -> None:
            for text in texts:
                client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": text}]
                )

        chat = prompts["chat"]
        send("support", chat[:WINDOW])  # reference window
        send("steady", chat[WINDOW : 2 * WINDOW])
        send("support", prompts["tech"][:WINDOW])  # the shift
        send("steady", chat[2 * WINDOW : 3 * WINDOW])
        sidecar.flush()

        jobs = sidecar.parts.jobs
        while jobs.run_now("embed"):
            pass
        results = jobs.run_now("drift")
        metrics = httpx.get(sidecar.url + "/metrics").text

    by_signal = {alias: {r.signal: r for r in rows} for alias, rows in results.items()}
    shifted = by_signal["support"]["prompt_embedding_psi"]
    assert shifted.drifted, shifted.reason
    assert shifted.p_value < 0.01 and shifted.n_reference == shifted.n_current == WINDOW
    tech = set(prompts["tech"][:WINDOW])
    grew = shifted.details["grew"][0]  # the cluster that gained most share: tech support
    assert grew["current_share"] - grew["reference_share"] > 0.3
    assert grew["examples"] and all(example in tech for example in grew["examples"])

    for signal in ("prompt_embedding_psi", "prompt_embedding_js", "prompt_embedding_mean_shift"):
        assert by_signal["support"][signal].drifted
        assert not by_signal["steady"][signal].drifted, by_signal["steady"][signal].reason

    assert 'driftloop_drift_detected{model="support",signal="prompt_embedding_psi"} 1.0' in metrics
    assert 'driftloop_drift_detected{model="steady",signal="prompt_embedding_psi"} 0.0' in metrics
    assert (
        'driftloop_drift_window_samples{model="support",signal="prompt_embedding_psi",window="current"} 250.0'
        in metrics
    )

    rows = sidecar.rows(
        "SELECT signal, drifted, reason, details FROM drift_runs"
        " WHERE model_alias = 'support' AND signal = 'prompt_embedding_psi'"
    )
    [(signal, drifted, reason, details)] = rows
    assert drifted and reason.startswith("tripped")
    assert json.loads(details)["k"] >= 2

    runs = latest_runs(sidecar.parts.store)
    write_report(runs, tmp_path / "r.html", tmp_path / "r.png")
    page = (tmp_path / "r.html").read_text()
    assert "support — prompt_embedding_psi: clusters that grew" in page
    assert html.escape(grew["examples"][0]) in page
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
