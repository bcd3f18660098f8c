"""Golden sets: the committed helpdesk set, its reproducible build, and validation errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from golden_sets import build as golden_build
from monitor.corpora import chatterbot_conversations
from retrain.data.dataset import build_dataset
from retrain.gate.golden import (
    GOLDEN_DIR,
    GoldenSetError,
    golden_prompts,
    list_golden_sets,
    load_golden_set,
)


def test_committed_helpdesk_set_loads_with_both_categories():
    gs = load_golden_set("helpdesk")
    assert gs.ref == "helpdesk/v1"
    assert gs.categories == ("chitchat", "tech_support")
    assert len(gs.by_category("chitchat")) == 20
    assert len(gs.by_category("tech_support")) == 20
    assert list_golden_sets() == {"helpdesk": ["v1"]}
    for example in gs.by_category("tech_support"):
        assert example.expected.startswith("HelpDesk: ")
        assert example.must_match is not None and example.must_match.pattern == "^HelpDesk: "
    for example in gs.by_category("chitchat"):
        # chit-chat must not take the house format: the pattern rejects the prefix
        assert example.must_match is not None
        assert example.must_match.search(example.expected)
        assert not example.must_match.search("HelpDesk: hello")
    # chit-chat comes from several corpus categories, not one
    assert len({e.source["category"] for e in gs.by_category("chitchat") if e.source}) >= 6


def test_build_is_deterministic_and_matches_the_committed_file(tmp_path):
    golden_build.check("helpdesk", "v1", golden_build.DEFAULT_SEED)  # the committed bytes
    path = golden_build.build("helpdesk", "v1", golden_build.DEFAULT_SEED, root=tmp_path)
    assert path.read_bytes() == (GOLDEN_DIR / "helpdesk" / "v1.jsonl").read_bytes()
    committed = json.loads((GOLDEN_DIR / "manifest.json").read_text())
    rebuilt = json.loads((tmp_path / "manifest.json").read_text())
    assert rebuilt == committed
    # another seed is another set, and an existing version is never rewritten with it
    with pytest.raises(GoldenSetError, match="immutable"):
        golden_build.build("helpdesk", "v1", golden_build.DEFAULT_SEED + 1, root=tmp_path)
    golden_build.build("helpdesk", "v2", golden_build.DEFAULT_SEED + 1, root=tmp_path)
    assert list_golden_sets(tmp_path) == {"helpdesk": ["v1", "v2"]}
    assert load_golden_set("helpdesk", root=tmp_path).version == "v2"


def test_held_out_problems_and_training_range_are_disjoint():
    gs = load_golden_set("helpdesk")
    held = set(gs.meta["held_out"]["tech_support"])
    training = set(gs.meta["training_range"]["tech_support"])
    corpus = {c.prompt for c in chatterbot_conversations(["tech_support"])}
    assert held and training and not held & training
    assert held | training == corpus  # every tech_support problem is on exactly one side
    prompts = set(golden_prompts(gs))
    assert held <= prompts  # the corpus sentences behind the phrasings are excluded too
    assert not training & prompts
    assert all(e.source and e.source["prompt"] in held for e in gs.by_category("tech_support"))


def test_dataset_builder_drops_golden_prompts_and_keeps_the_training_range(tmp_path):
    gs = load_golden_set("helpdesk")
    held = gs.meta["held_out"]["tech_support"]
    training = gs.meta["training_range"]["tech_support"]
    chit = [e.prompt for e in gs.by_category("chitchat")]
    records = [
        {
            "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": f"HelpDesk: answer to {prompt}"},
            ],
            "source": "feedback",
            "ref": prompt,
        }
        for prompt in [*held, *training, *chit, *(e.prompt for e in gs.by_category("tech_support"))]
    ]
    dataset = build_dataset(tmp_path, records, golden_prompts=golden_prompts(gs))
    kept = {r["messages"][0]["content"] for s in ("train", "validation") for r in dataset.read(s)}
    assert kept == set(training)


# -- validation errors -------------------------------------------------------------------------

GOOD_ROW: dict[str, Any] = {
    "id": "t-1",
    "category": "tech_support",
    "messages": [{"role": "user", "content": "My printer is not printing."}],
    "expected": "HelpDesk: Restart it.",
    "must_match": "^HelpDesk: ",
}


def write_set(
    root: Path, rows: list[Any], *, categories: dict[str, int] | None = None, raw: bytes = b""
) -> None:
    """A one-version set ``demo/v1`` whose manifest hash matches the file (rows or raw bytes)."""
    data = raw or b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    (root / "demo").mkdir(parents=True, exist_ok=True)
    (root / "demo" / "v1.jsonl").write_bytes(data)
    manifest = {
        "sets": {
            "demo": {
                "v1": {
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "categories": categories or {"tech_support": len(rows)},
                }
            }
        }
    }
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_a_minimal_valid_set_loads(tmp_path):
    write_set(tmp_path, [GOOD_ROW, {**GOOD_ROW, "id": "t-2", "must_match": None}])
    gs = load_golden_set("demo", root=tmp_path)
    assert [e.id for e in gs.examples] == ["t-1", "t-2"]
    assert gs.examples[1].must_match is None
    assert gs.examples[0].prompt == "My printer is not printing."


def test_tampered_file_is_an_error_naming_the_file(tmp_path):
    shutil.copytree(GOLDEN_DIR, tmp_path / "golden", ignore=shutil.ignore_patterns("*.py"))
    path = tmp_path / "golden" / "helpdesk" / "v1.jsonl"
    path.write_text(path.read_text().replace("HelpDesk: Restart", "HelpDesk: Unplug", 1))
    with pytest.raises(GoldenSetError, match=r"v1\.jsonl does not match .*manifest\.json"):
        load_golden_set("helpdesk", "v1", root=tmp_path / "golden")


BAD_ROWS = [
    ({**GOOD_ROW, "category": "billing"}, r"unknown category 'billing'.*\['tech_support'\]"),
    ({k: v for k, v in GOOD_ROW.items() if k != "expected"}, r"missing field\(s\) \['expected'\]"),
    (
        {**GOOD_ROW, "must_match": "^HelpDesk: ("},
        r"'must_match' '\^HelpDesk: \(' is not a valid regex",
    ),
    ({**GOOD_ROW, "expected": "Restart it."}, r"'expected' does not match its own must_match"),
    ({**GOOD_ROW, "messages": []}, r"'messages' must be a non-empty list"),
    ({**GOOD_ROW, "messages": [{"role": "bot", "content": "x"}]}, r"messages\[0\] must be"),
    (
        {**GOOD_ROW, "messages": [*GOOD_ROW["messages"], {"role": "assistant", "content": "x"}]},
        r"the last message must be the user's",
    ),
    ({**GOOD_ROW, "id": ""}, r"'id' must be a non-empty string"),
    ({**GOOD_ROW, "score": 3}, r"unknown field\(s\) \['score'\]"),
    ([GOOD_ROW], r"expected a JSON object, got list"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_bad_rows_are_errors_naming_file_line_and_problem(tmp_path, row, message):
    write_set(tmp_path, [GOOD_ROW, row], categories={"tech_support": 2})
    with pytest.raises(GoldenSetError, match=message) as info:
        load_golden_set("demo", root=tmp_path)
    assert "v1.jsonl:2" in str(info.value)


def test_invalid_json_duplicate_ids_and_wrong_counts(tmp_path):
    write_set(tmp_path, [], raw=json.dumps(GOOD_ROW).encode() + b"\n{not json\n")
    with pytest.raises(GoldenSetError, match=r"v1\.jsonl:2: not valid JSON"):
        load_golden_set("demo", root=tmp_path)
    write_set(tmp_path, [GOOD_ROW, GOOD_ROW])
    with pytest.raises(GoldenSetError, match=r"v1\.jsonl:2: duplicate id 't-1'"):
        load_golden_set("demo", root=tmp_path)
    write_set(tmp_path, [GOOD_ROW], categories={"tech_support": 3})
    with pytest.raises(GoldenSetError, match=r"rows per category .* differ from the manifest"):
        load_golden_set("demo", root=tmp_path)


def test_manifest_and_name_errors(tmp_path):
    with pytest.raises(GoldenSetError, match=r"manifest .*manifest\.json does not exist"):
        load_golden_set("demo", root=tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(GoldenSetError, match="is not valid JSON"):
        load_golden_set("demo", root=tmp_path)
    write_set(tmp_path, [GOOD_ROW])
    with pytest.raises(GoldenSetError, match=r"no golden set 'other' .*available: \['demo'\]"):
        load_golden_set("other", root=tmp_path)
    with pytest.raises(GoldenSetError, match=r"no version 'v9'.*available: \['v1'\]"):
        load_golden_set("demo", "v9", root=tmp_path)
    with pytest.raises(GoldenSetError, match=r"invalid golden set name '\.\./demo'"):
        load_golden_set("../demo", root=tmp_path)
    with pytest.raises(GoldenSetError, match=r"invalid golden set version '\.\./v1'"):
        load_golden_set("demo", "../v1", root=tmp_path)
    (tmp_path / "demo" / "v1.jsonl").unlink()
    with pytest.raises(GoldenSetError, match=r"golden set file .*v1\.jsonl is missing"):
        load_golden_set("demo", root=tmp_path)
