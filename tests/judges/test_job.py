"""A judging pass over captured traffic in a real DuckDB file: sampling, cache, rows, gauges."""

import json

from judges.job import JudgeJob, JudgeSettings
from judges.plugins import build_rule_judge
from judges.sampling import in_sample, sample_unjudged
from tests.judges.conftest import add_requests, rubric_judge, sample
from tests.judges.judge_server import Reply

PAIRS = [(f"question {i}?", f"answer {i}.") for i in range(40)]


def score_by_answer(messages):
    """The scripted judge gives 5 to even answers, 1 to odd ones, garbage to answer 7."""
    text = messages[-1]["content"]
    number = int(text.split("Assistant answer:\nanswer ")[1].split(".")[0])
    if number == 7:
        return Reply("no idea")
    return Reply(json.dumps({"score": 5 if number % 2 == 0 else 1, "reason": "scripted"}))


def make_job(runner, judges, aliases=("support",), **settings):
    return JudgeJob(
        runner, judges, {}, JudgeSettings(**settings), aliases=lambda: frozenset(aliases)
    )


def test_a_pass_judges_the_sample_and_records_every_column(store, runner, registry, judge_server):
    judge_server.respond = score_by_answer
    ids = add_requests(store, "support", PAIRS[:10])
    llm = rubric_judge(judge_server.url)
    job = make_job(runner, [llm, build_rule_judge("empty", {})], sample_rate=1.0)
    report = job.run()
    assert report["helpfulness"] == {"scored": 9, "unparseable": 1}
    assert report["empty"] == {"scored": 10}
    assert judge_server.attempts == 10
    rows = store.query(
        "SELECT request_id, model_alias, judge_model, rubric_version, outcome, score, reason,"
        " prompt_tokens, completion_tokens, attempts, cached, source"
        " FROM judgments WHERE judge = 'helpfulness' ORDER BY request_id"
    )
    assert sorted(r[0] for r in rows) == sorted(ids)
    for _, alias, model, version, outcome, score, reason, pt, ct, attempts, cached, src in rows:
        assert (alias, model, version, src) == ("support", "scripted-judge", llm.version, "traffic")
        assert (pt, ct, attempts, cached) == (120, 12, 1, False)
        assert (outcome == "scored") == (score is not None)
        if outcome == "unparseable":
            assert reason == "no score found in verdict"
    # 9 scored: answers 0,2,4,6,8 -> 5 and 1,3,5,9 -> 1: mean (25 + 4) / 9
    assert sample(registry, "driftloop_judge_score_mean", model="support", judge="helpfulness") == (
        29 / 9
    )
    assert (
        sample(registry, "driftloop_judge_window_samples", model="support", judge="helpfulness")
        == 9
    )
    assert sample(registry, "driftloop_judge_tokens_total", judge="helpfulness") == 10 * 132
    assert (
        sample(
            registry,
            "driftloop_judge_evaluations_total",
            judge="helpfulness",
            outcome="unparseable",
        )
        == 1
    )
    assert sample(registry, "driftloop_judge_score_mean", model="support", judge="empty") == 5.0

    assert job.run() == {"helpfulness": {}, "empty": {}}  # nothing new: nothing judged twice
    assert judge_server.attempts == 10


def test_identical_pairs_are_judged_once(store, runner, registry, judge_server):
    add_requests(store, "support", [("same?", "same.")] * 3)
    job = make_job(runner, [rubric_judge(judge_server.url)], sample_rate=1.0)
    assert job.run()["helpfulness"] == {"scored": 1, "cached": 2}
    add_requests(store, "support", [("same?", "same.")])
    assert job.run()["helpfulness"] == {"cached": 1}  # from the table, in a later pass
    assert judge_server.attempts == 1
    cached = store.query(
        "SELECT count(*), sum(prompt_tokens) FROM judgments WHERE cached AND score = 3"
    )
    assert cached == [(3, 0)]
    assert (
        sample(registry, "driftloop_judge_evaluations_total", judge="helpfulness", outcome="cached")
        == 3
    )


def test_sampling_is_deterministic_and_stratified_per_alias(store, runner, judge_server):
    loud = add_requests(store, "loud", [(f"l{i}", f"a{i}") for i in range(400)])
    quiet = add_requests(store, "quiet", [(f"q{i}", f"a{i}") for i in range(40)])
    add_requests(store, "unknown", [("u", "a")] * 5)  # not a configured alias: never judged
    rates = {"loud": 0.1, "quiet": 1.0}
    picked = sample_unjudged(store, "j", ["loud", "quiet"], rates, 0.0, per_alias=1000)
    by_alias = {a: {e.request_id for e in picked if e.model_alias == a} for a in ("loud", "quiet")}
    assert by_alias["quiet"] == set(quiet)
    assert by_alias["loud"] == {i for i in loud if in_sample(i, 0.1)}  # same rule as the SQL
    assert 20 <= len(by_alias["loud"]) <= 60
    capped = sample_unjudged(store, "j", ["loud", "quiet"], rates, 0.0, per_alias=5)
    assert sorted(e.model_alias for e in capped) == ["loud"] * 5 + ["quiet"] * 5
    assert [e.request_id for e in capped if e.model_alias == "quiet"] == quiet[::-1][:5]  # newest
    job = make_job(
        runner,
        [build_rule_judge("empty", {})],
        aliases=("loud", "quiet"),
        sample_rates=rates,
        sample_rate=0.0,
        per_alias=5,
    )
    assert sum(job.run()["empty"].values()) == 10
