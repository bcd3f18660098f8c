"""Reference metrics are plain (prediction, reference) -> float functions with hand-checked values."""

import pytest

from judges.reference import REFERENCE_METRICS, exact_match, normalize, rouge_l, token_f1


def test_normalisation_drops_case_punctuation_and_articles():
    assert normalize("  The Eiffel   Tower! ") == "eiffel tower"


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("The Eiffel Tower.", "eiffel tower", 1.0),
        ("Paris", "Paris, France", 0.0),
        ("", "", 1.0),
        ("", "Paris", 0.0),
    ],
)
def test_exact_match(prediction, reference, expected):
    assert exact_match(prediction, reference) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("Paris, France", "Paris", 2 / 3),  # P = 1/2, R = 1
        ("the cat sat", "a cat sat down", 0.8),  # P = 1, R = 2/3
        ("dog", "cat", 0.0),
        ("", "", 1.0),
        ("", "cat", 0.0),
        ("b a", "a b", 1.0),  # a bag of words: order does not matter
    ],
)
def test_token_f1(prediction, reference, expected):
    assert token_f1(prediction, reference) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("the cat sat on the mat", "the cat is on the mat", 5 / 6),  # LCS "the cat on the mat"
        ("b a", "a b", 0.5),  # order matters: LCS is one word of two
        ("Москва столица России", "столица России Москва", 2 / 3),  # non-ASCII words count
        ("", "", 1.0),
        ("cat", "", 0.0),
    ],
)
def test_rouge_l(prediction, reference, expected):
    assert rouge_l(prediction, reference) == pytest.approx(expected)


def test_every_metric_is_registered_by_name():
    assert {
        "exact_match": exact_match,
        "token_f1": token_f1,
        "rouge_l": rouge_l,
    } == REFERENCE_METRICS
