"""The rubric judge against a scripted OpenAI-compatible server: verdicts, retries, timeouts, outages."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from driftloop.vllm_process import free_port
from judges.client import ChatCallError, ChatClient
from judges.llm import RubricJudge
from judges.rubric import load_rubric
from tests.judges.conftest import endpoint, rubric_judge
from tests.judges.judge_server import COMPLETION_TOKENS, PROMPT_TOKENS, Reply, verdict


def judge_once(judge, prompt="What is the capital of France?", response="Paris."):
    return asyncio.run(judge.evaluate(prompt, response))


@pytest.mark.parametrize(
    ("reply", "outcome", "score"),
    [
        (verdict(5, "exactly right"), "scored", 5.0),
        (Reply('```json\n{"score": 2, "reason": "vague"}\n```'), "scored", 2.0),
        (Reply("Score: 4\nMostly right."), "scored", 4.0),
        (verdict(6), "unparseable", None),
        (verdict(4.5), "unparseable", None),
        (Reply("I'm sorry, but I can't evaluate that."), "unparseable", None),
        (Reply("banana banana"), "unparseable", None),
        (Reply(None), "unparseable", None),
    ],
)
def test_verdicts_become_scores_or_unparseable(judge_server, reply, outcome, score):
    judge_server.script.append(reply)
    v = judge_once(rubric_judge(judge_server.url))
    assert (v.outcome, v.score) == (outcome, score)
    assert (v.prompt_tokens, v.completion_tokens, v.attempts) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
        1,
    )
    assert v.judge_model == "scripted-judge"
    assert v.raw == (reply.content or "")


def test_the_judge_is_asked_with_the_rubric_and_the_exchange(judge_server):
    judge = RubricJudge(
        load_rubric("helpfulness"), endpoint(judge_server.url), structured_output=True
    )
    judge_once(judge, "Who wrote Vineland?", "Thomas Pynchon.")
    body = judge_server.requests[0]
    assert body["model"] == "scripted-judge" and body["temperature"] == 0
    system, user = body["messages"]
    assert "5: Answers exactly what was asked" in system["content"]
    assert "Who wrote Vineland?" in user["content"] and "Thomas Pynchon." in user["content"]
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_transient_statuses_are_retried_with_backoff(judge_server, status):
    judge_server.script.extend([Reply(status=status), Reply(status=status), verdict(4)])
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    async def run():
        client = ChatClient(
            endpoint(judge_server.url, max_retries=3, backoff_s=0.5),
            sleep=record,
            jitter=lambda: 1.0,
        )
        async with client:
            return await client.chat([{"role": "user", "content": "hi"}], max_tokens=10)

    result = asyncio.run(run())
    assert judge_server.attempts == 3 and result.attempts == 3
    assert delays == [0.5, 1.0] == result.delays  # backoff_s * 2^(n-1), jitter pinned to 1
    assert json.loads(result.text or "")["score"] == 4


def test_retry_after_from_the_server_is_honoured(judge_server):
    judge_server.script.extend([Reply(status=429, headers={"retry-after-ms": "30"}), verdict(3)])
    result = asyncio.run(_chat(judge_server.url, backoff_s=5.0))
    assert result.delays == [pytest.approx(0.03)] and judge_server.attempts == 2


def test_retries_stop_after_max_retries_and_the_error_is_recorded(judge_server):
    judge_server.script.extend([Reply(status=503)] * 5)
    v = judge_once(rubric_judge(judge_server.url, max_retries=2))
    assert v.outcome == "error" and v.score is None
    assert v.attempts == 3 == judge_server.attempts
    assert "HTTP 503" in v.reason and "after 3 attempts" in v.reason


def test_client_errors_are_not_retried(judge_server):
    judge_server.script.append(Reply(status=400))
    v = judge_once(rubric_judge(judge_server.url, max_retries=3))
    assert v.outcome == "error" and "HTTP 400" in v.reason
    assert judge_server.attempts == 1


def test_a_slow_judge_times_out_and_is_retried(judge_server):
    judge_server.script.extend([Reply(delay_s=1.0), Reply(delay_s=1.0)])
    v = judge_once(rubric_judge(judge_server.url, timeout_s=0.2, max_retries=1))
    assert v.outcome == "error" and "no answer within 0.2 s" in v.reason
    assert v.attempts == 2 == judge_server.attempts


def test_a_malformed_completion_is_an_error_not_a_score(judge_server):
    judge_server.script.append(Reply(raw_body=b'{"id": "x", "choices": []}'))
    v = judge_once(rubric_judge(judge_server.url))
    assert v.outcome == "error" and "no choices" in v.reason


def test_an_unreachable_judge_is_an_error_after_retries():
    url = f"http://127.0.0.1:{free_port()}/v1"
    v = judge_once(rubric_judge(url, max_retries=1))
    assert v.outcome == "error" and "cannot reach" in v.reason and v.attempts == 2
    with pytest.raises(ChatCallError) as info:
        asyncio.run(_chat(url, max_retries=0))
    assert info.value.kind == "unreachable"


async def _chat(url, **overrides):
    async with ChatClient(endpoint(url, **overrides)) as client:
        return await client.chat([{"role": "user", "content": "hi"}], max_tokens=10)


def test_one_judge_serves_two_threads_at_once(judge_server):
    """The traffic job and the anchor job share the judge, each from its own thread and loop."""
    judge_server.respond = lambda messages: Reply(verdict(4).content, delay_s=0.05)
    judge = rubric_judge(judge_server.url)

    async def batch(tag):
        async with judge.session():
            return await asyncio.gather(*(judge.evaluate(f"{tag}{i}?", "a.") for i in range(5)))

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda tag: asyncio.run(batch(tag)), ["x", "y"]))
    assert [v.outcome for r in results for v in r] == ["scored"] * 10
    assert judge_server.attempts == 10
