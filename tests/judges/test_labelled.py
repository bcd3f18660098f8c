"""The shipped calibration and anchor sets are what the builder makes from chatterbot-corpus."""

from collections import Counter

from judges.examples import ANCHOR_SET, CALIBRATION_SET, load_examples
from judges.labelled import anchor_examples, calibration_examples, render


def test_shipped_sets_match_the_builder():
    assert CALIBRATION_SET.read_text(encoding="utf-8") == render(calibration_examples())
    assert ANCHOR_SET.read_text(encoding="utf-8") == render(anchor_examples())


def test_labels_are_balanced_and_questions_disjoint():
    calibration = load_examples(CALIBRATION_SET)
    anchors = load_examples(ANCHOR_SET)
    assert Counter(e.label for e in calibration) == {5: 40, 1: 40}
    assert Counter(e.label for e in anchors) == {5: 10, 1: 10}
    assert not {e.prompt for e in calibration} & {e.prompt for e in anchors}
    for examples in (calibration, anchors):
        by_prompt = {e.prompt: e for e in examples if e.label == 5}
        for wrong in (e for e in examples if e.label == 1):
            assert wrong.response != by_prompt[wrong.prompt].response
