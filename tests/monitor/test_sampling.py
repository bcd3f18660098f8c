import pytest

from monitor.aliases import OTHER, AliasTable
from monitor.redaction import PatternRedactor
from monitor.sampling import SampleDecision, Sampler


@pytest.mark.parametrize(
    ("rate", "roll", "expected"),
    [
        (0.0, 0.0, SampleDecision.SAMPLED_OUT),
        (1.0, 0.99, SampleDecision.SAMPLED_IN),
        (0.1, 0.05, SampleDecision.SAMPLED_IN),
        (0.1, 0.5, SampleDecision.SAMPLED_OUT),
    ],
)
def test_rate_decides(rate, roll, expected):
    assert Sampler(rate, rng=lambda: roll).decide("m", None) is expected


def test_header_beats_rates_and_per_model_rates_beat_default():
    sampler = Sampler(0.0, {"hot": 1.0})
    assert sampler.decide("cold", "force") is SampleDecision.FORCED
    assert sampler.decide("hot", " SKIP ") is SampleDecision.SKIPPED
    assert sampler.decide("hot", None) is SampleDecision.SAMPLED_IN
    assert sampler.decide("cold", None) is SampleDecision.SAMPLED_OUT


def test_alias_swap_and_bounded_labels():
    table = AliasTable({"support": "base"}, known_models={"base"})
    assert table.resolve("support") == "base"
    table.set("support", "support-v2")
    assert table.resolve("support") == "support-v2"
    assert table.resolve("unknown") == "unknown"
    assert table.label("support") == "support"
    assert table.label("base") == "base"
    assert table.label("client-made-this-up") == OTHER


def test_redactor_rejects_bad_regex_by_name():
    with pytest.raises(ValueError, match=r"redaction pattern '\(' is not a valid regex"):
        PatternRedactor(["("])
    assert PatternRedactor([r"\d{4}", "secret"])("1234 secret x") == "[REDACTED] [REDACTED] x"
