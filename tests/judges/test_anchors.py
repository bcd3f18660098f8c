"""Judge drift: the anchor set is re-judged (never cached) and a shift of its mean is reported."""

from judges.anchors import AnchorJob
from judges.examples import ANCHOR_SET, Example, load_examples, set_version
from tests.judges.conftest import rubric_judge, sample
from tests.judges.judge_server import Reply, verdict

ANCHORS = [Example(f"a{i}", f"question {i}?", f"answer {i}.", 5 if i % 2 else 1) for i in range(4)]


def test_a_judge_that_changes_its_mind_is_reported(runner, store, registry, judge_server, caplog):
    judge_server.respond = lambda messages: verdict(4)
    job = AnchorJob(runner, rubric_judge(judge_server.url), ANCHORS, "set-1", max_shift=0.5)
    first = job.run()
    assert first is not None and (first.mean_score, first.shift, first.drifted) == (4.0, 0.0, False)
    assert "baseline set" in first.reason

    judge_server.respond = lambda messages: verdict(4)  # same judge: no shift
    assert job.run().drifted is False
    assert judge_server.attempts == 8  # re-judged, not served from the cache

    # The endpoint now serves a harsher model: two anchors drop to 2 and one becomes garbage.
    judge_server.script.extend([verdict(2), verdict(2), Reply("??"), verdict(4)])
    third = job.run()
    assert third.n_scored == 3 and third.mean_score == (2 + 2 + 4) / 3
    assert third.drifted and third.shift == (8 / 3 - 4)
    assert "|shift| 1.333 >= 0.5" in third.reason
    assert sample(registry, "driftloop_judge_anchor_shift", judge="helpfulness") == (8 / 3 - 4)
    assert any("drifted on its anchor set" in r.message for r in caplog.records)
    rows = store.query("SELECT drifted, baseline FROM judge_anchor_runs ORDER BY id")
    assert rows == [(False, 4.0), (False, 4.0), (True, 4.0)]
    assert store.query("SELECT count(*) FROM judgments WHERE source = 'anchor'") == [(12,)]


def test_too_few_scored_anchors_is_insufficient_not_drift(runner, judge_server):
    judge_server.respond = lambda messages: Reply("no verdict")
    run = AnchorJob(runner, rubric_judge(judge_server.url), ANCHORS, "set-2").run()
    assert run is not None and not run.drifted and run.reason == "insufficient: 0/4 anchors scored"


def test_the_shipped_anchor_set_loads():
    anchors = load_examples(ANCHOR_SET, labelled=False)
    assert len(anchors) == 20 and len(set_version(ANCHOR_SET)) == 12
