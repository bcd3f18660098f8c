"""Staged drift through the sidecar: real prompts -> DuckDB -> real embeddings -> drift_runs + gauges.

Traffic is chatterbot-corpus conversations sent with the openai SDK through the sidecar as
multi-turn chats (each turn resends the history, as chat clients do; the upstream is the fast
stub: drift here is in the prompts, which is what is staged). ``support`` switches from chit-chat
conversations to tech_support; ``steady`` keeps drawing conversations from the same categories.
The sidecar keys each row by its conversation, and every null permutes whole conversations.
"""

from __future__ import annotations

import html
import json
import random

import httpx
import openai
import pytest

from benchmarks.drift_corpus import chatterbot_sessions
from benchmarks.upstream_stub import running_stub
from monitor.drift_report import latest_runs, write_report

pytestmark = pytest.mark.slow

WINDOW = 250
# every English category but tech_support (the shift) and coding (close to it); several are
# multi-turn (emotion, conversations, trivia, sports, computers, health)
CHAT = [
    "ai", "botprofile", "computers", "conversations", "emotion", "food", "gossip", "greetings",
    "health", "history", "humor", "literature", "money", "movies", "politics", "psychology",
    "science", "sports", "trivia",
]  # fmt: skip


def stream(sessions: list[list[str]], start: int, rows: int) -> tuple[list[list[str]], int]:
    """Whole sessions from ``start`` until they hold ``rows`` turns; and where the next starts."""
    out, count = [], 0
    while count < rows:
        session = sessions[start][: rows - count]
        out.append(session)
        count += len(session)
        start += 1
    return out, start


@pytest.fixture(scope="module")
def sessions():
    rng = random.Random(7)
    chat = chatterbot_sessions(["english"], CHAT)
    tech = chatterbot_sessions(["english"], ["tech_support"])
    rng.shuffle(chat)
    rng.shuffle(tech)
    return {"chat": chat, "tech": tech}


def test_topic_shift_trips_embedding_drift_and_a_steady_alias_does_not(
    start_sidecar, sessions, tmp_path
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

        def send(model: str, conversations: list[list[str]]) -> None:
            for turns in conversations:
                history: list[dict[str, str]] = []
                for text in turns:
                    history.append({"role": "user", "content": text})
                    reply = client.chat.completions.create(model=model, messages=history)
                    history.append(
                        {"role": "assistant", "content": reply.choices[0].message.content or ""}
                    )

        chat_ref, start = stream(sessions["chat"], 0, WINDOW)
        steady_ref, start = stream(sessions["chat"], start, WINDOW)
        steady_cur, _ = stream(sessions["chat"], start, WINDOW)
        tech, _ = stream(sessions["tech"], 0, WINDOW)
        send("support", chat_ref)  # reference window
        send("steady", steady_ref)
        send("support", tech)  # the shift
        send("steady", steady_cur)  # more conversations of the same kinds: no drift
        sidecar.flush()

        jobs = sidecar.parts.jobs
        while jobs.run_now("embed"):
            pass
        results = jobs.run_now("drift")
        metrics = httpx.get(sidecar.url + "/metrics").text

    keys = sidecar.rows(
        "SELECT count(*), count(DISTINCT session_key) FROM requests WHERE model_alias = 'steady'"
    )
    [(rows_steady, sessions_steady)] = keys
    assert rows_steady == 2 * WINDOW and sessions_steady < rows_steady  # multi-turn sessions

    by_signal = {alias: {r.signal: r for r in rows} for alias, rows in results.items()}
    decision = by_signal["support"]["combined"]
    assert decision.drifted, decision.reason
    assert "prompt_embedding" in decision.details["tripped"]
    steady = by_signal["steady"]["combined"]
    assert not steady.drifted, steady.reason
    # sessions make the steady windows count for fewer independent rows than they hold
    assert steady.n_effective_ref is not None and steady.n_effective_ref < WINDOW
    assert steady.min_detectable_shift is not None and 0 < steady.min_detectable_shift <= 1

    # PSI over clusters is the weakest of the three embedding tests at 250 rows: its p-value
    # measured 0.006 alone and 0.013 once inside the full suite (the embeddings' float noise moves
    # the clusters), against alpha 0.01. So PSI must point the right way clearly (p < 0.05, the
    # tech-support cluster grew); JS and the mean shift must trip.
    shifted = by_signal["support"]["prompt_embedding_psi"]
    assert shifted.p_value < 0.05, shifted.reason
    assert shifted.n_ref == shifted.n_cur == WINDOW
    tech_texts = {turn for session in tech for turn in session}
    grew = shifted.details["grew"][0]  # the cluster that gained most share: tech support
    assert grew["current_share"] - grew["reference_share"] > 0.3
    assert grew["examples"] and all(example in tech_texts for example in grew["examples"])

    for signal in ("prompt_embedding_psi", "prompt_embedding_js", "prompt_embedding_mean_shift"):
        if signal != "prompt_embedding_psi":
            assert by_signal["support"][signal].drifted, by_signal["support"][signal].reason
        assert not by_signal["steady"][signal].drifted, by_signal["steady"][signal].reason

    assert 'driftloop_drift_detected{model="support",signal="combined"} 1.0' in metrics
    assert 'driftloop_drift_detected{model="steady",signal="combined"} 0.0' in metrics
    assert 'driftloop_drift_min_detectable_shift_ratio{model="steady",signal="combined"}' in metrics
    assert (
        'driftloop_drift_effective_samples{model="steady",signal="combined",window="current"}'
        in metrics
    )
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
    assert "at this window size you will catch" in page and "effective n" in page
    assert "support — prompt_embedding_psi: clusters that grew" in page
    assert html.escape(grew["examples"][0]) in page
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
