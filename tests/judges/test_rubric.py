"""Rubric files: anchored 1-5 descriptions, a content-hash version, errors naming file and field."""

import pytest

from judges.rubric import RubricError, load_rubric, rubric_names

GOOD = """
name = "support"
task = "a support answer"
[anchors]
1 = "useless"
2 = "poor"
3 = "partial"
4 = "good"
5 = "perfect"
"""


def test_shipped_rubric_has_every_anchor_in_its_prompt():
    assert "helpfulness" in rubric_names()
    rubric = load_rubric("helpfulness")
    prompt = rubric.system_prompt()
    for point, description in rubric.anchors.items():
        assert f"{point}: {description}" in prompt
    assert '"score"' in prompt


def test_version_is_the_content_hash(tmp_path):
    path = tmp_path / "support.toml"
    path.write_text(GOOD)
    first = load_rubric(path)
    assert first.name == "support" and first.anchors[3] == "partial"
    path.write_text(GOOD.replace("perfect", "flawless"))
    assert load_rubric(path).version != first.version


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace('5 = "perfect"\n', ""), "anchors must be exactly"),
        (GOOD.replace('3 = "partial"', '3 = ""'), "anchor 3 must be a non-empty"),
        (GOOD.replace('name = "support"', 'name = "../etc"'), "name '../etc' must match"),
        (GOOD.replace('task = "a support answer"\n', ""), "has no 'task'"),
        ("name = ", "not valid TOML"),
    ],
)
def test_bad_rubrics_are_rejected_with_the_reason(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RubricError) as info:
        load_rubric(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_unknown_names_and_other_formats_are_rejected(tmp_path):
    with pytest.raises(RubricError, match="no rubric named 'nosuch'"):
        load_rubric("nosuch")
    (tmp_path / "r.md").write_text("# rubric")
    with pytest.raises(RubricError, match=r"must be a \.toml file"):
        load_rubric(tmp_path / "r.md")
