"""Cost governance: when today's token or request budget is spent, judging stops and says so."""

from datetime import UTC, datetime, timedelta

from judges.budget import DailyBudget, spent_in_store
from judges.job import JudgeJob, JudgeSettings
from judges.metrics import JudgeMetrics
from judges.runner import Runner
from tests.judges.conftest import add_requests, rubric_judge, sample

PAIRS = [(f"q{i}?", f"a{i}.") for i in range(6)]  # the scripted judge spends 132 tokens a call


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def make_job(store, registry, judge, budget, clock):
    runner = Runner(store, JudgeMetrics(registry), concurrency=1, clock=clock)
    return JudgeJob(
        runner,
        [judge],
        {judge.name: budget},
        JudgeSettings(sample_rate=1.0),
        aliases=lambda: {"support"},
    )


def test_token_budget_stops_judging_and_the_metric_says_so(store, registry, judge_server, caplog):
    clock = Clock()
    judge = rubric_judge(judge_server.url)
    budget = DailyBudget(300, 1000, clock=clock, spent_on=spent_in_store(store, judge.name))
    job = make_job(store, registry, judge, budget, clock)
    assert sample(registry, "driftloop_judge_budget_exhausted", judge="helpfulness") == 0
    assert sample(registry, "driftloop_judge_budget_remaining_tokens", judge="helpfulness") == 300
    add_requests(store, "support", PAIRS)
    # 0 -> 132 -> 264 -> 396 tokens: the third call starts under the limit, then it is spent.
    assert job.run()["helpfulness"] == {"scored": 3, "budget_exhausted": 3}
    assert judge_server.attempts == 3
    assert sample(registry, "driftloop_judge_budget_exhausted", judge="helpfulness") == 1
    assert sample(registry, "driftloop_judge_budget_remaining_tokens", judge="helpfulness") == 0
    assert "judge helpfulness stopped: today's budget is spent (396/300 tokens" in caplog.text
    assert (
        sample(
            registry,
            "driftloop_judge_evaluations_total",
            judge="helpfulness",
            outcome="budget_exhausted",
        )
        == 3
    )
    stopped = store.query(
        "SELECT count(*) FROM judgments WHERE outcome = 'budget_exhausted' AND score IS NULL"
        " AND reason LIKE 'daily budget spent: 396/300 tokens%'"
    )
    assert stopped == [(3,)]

    # A restart reads today's spending back from the table: still stopped.
    again = DailyBudget(300, 1000, clock=clock, spent_on=spent_in_store(store, judge.name))
    assert again.exhausted() and again.tokens == 396 and again.requests == 3

    # The next UTC day the budget is fresh and new traffic is judged.
    clock.now += timedelta(days=1)
    add_requests(store, "support", [("new?", "new.")], start=clock.now)
    assert job.run()["helpfulness"] == {"scored": 1}
    assert sample(registry, "driftloop_judge_budget_exhausted", judge="helpfulness") == 0
    assert sample(registry, "driftloop_judge_budget_remaining_tokens", judge="helpfulness") == 168


def test_request_budget_counts_retries(store, registry, judge_server):
    from tests.judges.judge_server import Reply, verdict

    clock = Clock()
    judge = rubric_judge(judge_server.url, max_retries=3)
    judge_server.script.extend([Reply(status=429), verdict(4)])
    budget = DailyBudget(10_000, 3, clock=clock)
    job = make_job(store, registry, judge, budget, clock)
    add_requests(store, "support", PAIRS)
    # call 1: 429 then 4 (2 requests), call 2: 1 request -> 3 of 3 spent; the rest are stopped.
    assert job.run()["helpfulness"] == {"scored": 2, "budget_exhausted": 4}
    assert judge_server.attempts == 3 and budget.requests == 3
    assert sample(registry, "driftloop_judge_budget_exhausted", judge="helpfulness") == 1
