"""Tests for retrain.data.dataset: PII scrub, dedupe, golden overlap, replay, ids, atomic writes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.fs import remove_stale_temp_dirs
from retrain.data.dataset import DatasetError, DatasetSettings, build_dataset, load_dataset
from retrain.data.dedupe import NearDuplicateIndex, jaccard, normalise, shingles, text_key
from retrain.data.files import validate_dataset_id, write_dataset
from retrain.data.pii import luhn_valid, scrub_text

# fmt: off
WORDS = ["invoice", "printer", "router", "laptop", "refund", "battery", "account", "password", "server", "backup", "cable", "monitor", "keyboard", "license", "update", "driver", "network", "firewall", "email", "calendar", "meeting", "budget", "report", "payroll", "vacation", "contract", "shipment", "warehouse", "pallet", "forklift", "supplier", "order", "customer", "ticket", "escalation", "outage", "latency", "database", "index", "query", "cache", "token", "session", "browser", "mobile", "tablet", "camera", "speaker", "microphone", "headset", "charger", "adapter", "screen", "window", "folder", "archive", "upload", "download", "sync", "share", "permission", "group", "policy", "audit", "compliance"]
# fmt: on


def sentence(rng: random.Random, words: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "?"


def example(prompt: str, answer: str, source: str = "judged", ref: Any = None) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        "source": source,
        "ref": ref,
    }


def examples(n: int, seed: int = 0, source: str = "judged") -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        example(sentence(rng), sentence(rng, 20), source, f"{source}-{seed}-{i}") for i in range(n)
    ]


FIXED_NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def build(root: Path, items: list[dict[str, Any]], **kwargs: Any) -> Any:
    return build_dataset(root, items, now=lambda: FIXED_NOW, **kwargs)


def nonzero(counts: Mapping[str, int]) -> dict[str, int]:
    return {key: value for key, value in counts.items() if value}


def all_records(ds: Any) -> list[dict[str, Any]]:
    return ds.read("train") + ds.read("validation")


# --- PII -----------------------------------------------------------------------------------

PII_CASES = [
    ("write to bob.smith+tag@mail.example.co.uk today", "write to [EMAIL] today", {"email": 1}),
    ("Call (415) 555-2671 or +44 20 7946 0958.", "Call [PHONE] or [PHONE].", {"phone": 2}),
    ("Ruf an: +49 30 901820", "Ruf an: [PHONE]", {"phone": 1}),
    ("card 4111 1111 1111 1111 ok", "card [CARD] ok", {"card": 1}),
    ("card 4012-8888-8888-1881", "card [CARD]", {"card": 1}),
    ("amex 378282246310005", "amex [CARD]", {"card": 1}),
    # Fails the Luhn check: an order number, left alone.
    ("order 4111 1111 1111 1112 shipped", "order 4111 1111 1111 1112 shipped", {}),
    ("key sk-proj-abcDEF1234567890abcdef1234567890XYZ", "key [SECRET]", {"secret": 1}),
    ("AKIAIOSFODNN7EXAMPLE", "[SECRET]", {"secret": 1}),
    ("token ghp_1234567890abcdefghijABCDEFGHIJ123456 set", "token [SECRET] set", {"secret": 1}),
    ("api_key = 9f8e7d6c5b4a3928171615", "api_key = [SECRET]", {"secret": 1}),
    (
        "Authorization: Bearer abcdef1234567890abcdef",
        "Authorization: Bearer [SECRET]",
        {"secret": 1},
    ),
    ("password: hunter2isgreat", "password: [SECRET]", {"secret": 1}),
    # Ordinary text with numbers, dates and the words "password"/"secret" stays as is.
    ("At 10:45 AM on 12 May 2024 order 123456 failed with error 502.", None, {}),
    ("Version 1.2.3.4 released 2024-05-12; price $1234.56", None, {}),
    ("Reset your password in settings. The secret is patience.", None, {}),
    ("x = [i ** 2 for i in range(10)]  # 34567", None, {}),
]


@pytest.mark.parametrize(("text", "expected", "counts"), PII_CASES)
def test_scrub_text_known_answers(text: str, expected: str | None, counts: dict[str, int]) -> None:
    result = scrub_text(text)
    assert result.text == (text if expected is None else expected)
    assert dict(result.counts) == counts


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("4111-1111")


def test_build_scrubs_every_message_and_counts_per_kind(tmp_path: Path) -> None:
    items = examples(8)
    items[0]["messages"][0]["content"] = "Mail me at ann@example.org about my refund"
    items[1]["messages"][1]["content"] = "Use card 4111111111111111 and call (415) 555-2671"
    ds = build(tmp_path, items)
    text = json.dumps(all_records(ds))
    assert "ann@example.org" not in text and "4111111111111111" not in text
    assert "555-2671" not in text
    assert "[EMAIL]" in text and "[CARD]" in text and "[PHONE]" in text
    assert ds.manifest["pii_replaced"] == {"secret": 0, "email": 1, "card": 1, "phone": 1}


# --- dedupe --------------------------------------------------------------------------------


def test_normalise_and_text_key_ignore_case_punctuation_and_spacing() -> None:
    assert normalise("  Hello,   WORLD!! ") == "hello world"
    assert text_key("Hello, world") == text_key("hello   WORLD!")
    assert text_key("hello world") != text_key("hello word")


def test_near_duplicate_index_uses_the_threshold() -> None:
    a = "How do I reset the password of my account on the billing portal?"
    b = "How do I reset the password of my account on the billing portal, please?"
    c = "Which forklift should the warehouse order for the new pallets?"
    similarity = jaccard(shingles(a), shingles(b))
    assert 0.7 < similarity < 0.95
    loose = NearDuplicateIndex(threshold=0.7)
    loose.add("a", a)
    assert loose.find(b) == "a"
    assert loose.find(c) is None
    strict = NearDuplicateIndex(threshold=0.95)
    strict.add("a", a)
    assert strict.find(b) is None


def test_exact_and_near_duplicates_are_removed_and_counted(tmp_path: Path) -> None:
    items = examples(10)
    prompt, answer = (m["content"] for m in items[0]["messages"])
    items.append(example(prompt.upper() + "!!", "  " + answer, ref="exact-copy"))
    items.append(example(prompt + " please", answer + " Thanks.", ref="near-copy"))
    ds = build(tmp_path, items)
    assert ds.manifest["removed"]["exact_duplicate"] == 1
    assert ds.manifest["removed"]["near_duplicate"] == 1
    refs = {r["ref"] for r in all_records(ds)}
    assert len(refs) == 10
    assert len(refs & {items[0]["ref"], "exact-copy", "near-copy"}) == 1


def test_near_duplicate_threshold_is_configurable(tmp_path: Path) -> None:
    items = examples(10)
    prompt, answer = (m["content"] for m in items[0]["messages"])
    items.append(example(prompt + " please", answer + " Thanks.", ref="near-copy"))
    strict = DatasetSettings(near_duplicate_threshold=0.99)
    ds = build(tmp_path, items, settings=strict)
    assert ds.manifest["removed"]["near_duplicate"] == 0
    assert "near-copy" in {r["ref"] for r in all_records(ds)}


def test_feedback_wins_over_judged_duplicate(tmp_path: Path) -> None:
    items = examples(6)
    copy = json.loads(json.dumps(items[0]))
    copy.update(source="feedback", ref="fb-1")
    ds = build(tmp_path, [*items, copy])
    sources = {r["ref"]: r["source"] for r in all_records(ds)}
    assert sources.get("fb-1") == "feedback"
    assert items[0]["ref"] not in sources
    assert nonzero(ds.manifest["counts"]["kept"]) == {"feedback": 1, "judged": 5}


# --- golden overlap ------------------------------------------------------------------------


def test_golden_overlap_exact_near_and_contained_is_removed(tmp_path: Path) -> None:
    rng = random.Random(42)
    golden = [sentence(rng) for _ in range(3)]
    items = examples(10)
    items.append(example(golden[0].lower(), "x " * 5, ref="exact"))
    items.append(example(golden[1] + " Thanks", "an answer here", ref="near"))
    items.append(example(f"Please answer briefly: {golden[2]} Be concise.", "ok", ref="wrapped"))
    ds = build(tmp_path, items, golden_prompts=golden)
    assert ds.manifest["removed"]["golden_overlap"] == 3
    assert ds.manifest["golden_prompts"]["count"] == 3
    refs = {r["ref"] for r in all_records(ds)}
    assert refs.isdisjoint({"exact", "near", "wrapped"}) and len(refs) == 10


def test_golden_set_change_changes_the_dataset_id(tmp_path: Path) -> None:
    items = examples(10)
    a = build(tmp_path, items, golden_prompts=["What is the capital of France?"])
    b = build(tmp_path, items, golden_prompts=["What is the capital of Spain?"])
    assert a.id != b.id


# --- replay --------------------------------------------------------------------------------


def test_replay_buffer_reaches_the_requested_share(tmp_path: Path) -> None:
    parent = build(tmp_path, examples(60, seed=1))
    child = build(tmp_path, examples(40, seed=2), replay_from=[parent.id])
    train = child.read("train")
    replayed = [r for r in train if r["replay_from"] == parent.id]
    share = len(replayed) / len(train)
    assert share >= 0.2
    assert child.manifest["replay"]["share"] == round(share, 4)
    assert child.manifest["replay"]["examples"] == len(replayed)
    assert child.manifest["counts"]["train"]["replay"] == len(replayed)
    assert child.manifest["parents"] == [parent.id]
    # Replay only feeds training; validation measures the new data.
    assert all(r["replay_from"] is None for r in child.read("validation"))
    parent_refs = {r["ref"] for r in parent.read("train")}
    assert {r["ref"] for r in replayed} <= parent_refs


def test_replay_share_is_recorded_when_history_is_short(tmp_path: Path) -> None:
    parent = build(tmp_path, examples(3, seed=1))
    child = build(tmp_path, examples(40, seed=2), replay_from=[parent.id])
    replay = child.manifest["replay"]
    assert replay["examples"] == replay["pool"] == len(parent.read("train"))
    assert 0 < replay["share"] < 0.2
    assert replay["wanted"] > replay["pool"]


def test_replay_skips_examples_that_duplicate_new_ones(tmp_path: Path) -> None:
    old = examples(30, seed=1)
    parent = build(tmp_path, old)
    new = examples(20, seed=2) + [
        dict(r, source="feedback", ref=f"again-{i}") for i, r in enumerate(old)
    ]
    child = build(tmp_path, new, replay_from=[parent.id])
    texts = [json.dumps(r["messages"]) for r in all_records(child)]
    assert len(texts) == len(set(texts))
    assert child.manifest["replay"]["pool_removed"]["exact_duplicate"] == len(parent.read("train"))
    assert child.manifest["replay"]["examples"] == 0


def test_replay_is_seeded(tmp_path: Path) -> None:
    parent = build(tmp_path, examples(80, seed=1))
    new = examples(30, seed=2)
    a = build(tmp_path / "a", new, replay_from=[], settings=DatasetSettings(seed=1))
    assert a.manifest["replay"]["examples"] == 0
    one = build(tmp_path, new, replay_from=[parent.id], settings=DatasetSettings(seed=1))
    two = build(tmp_path, new, replay_from=[parent.id], settings=DatasetSettings(seed=2))
    refs = [{r["ref"] for r in d.read("train") if r["replay_from"]} for d in (one, two)]
    assert refs[0] != refs[1]
    assert one.id != two.id


# --- split, ids, immutability ---------------------------------------------------------------


def test_split_is_seeded_with_at_least_one_validation_example(tmp_path: Path) -> None:
    ds = build(tmp_path, examples(50))
    assert len(ds.read("validation")) == 5 and len(ds.read("train")) == 45
    tiny = build(tmp_path, examples(2, seed=9))
    assert len(tiny.read("validation")) == 1 and len(tiny.read("train")) == 1
    counts = ds.manifest["files"]
    assert counts["train.jsonl"]["examples"] == 45 and counts["validation.jsonl"]["examples"] == 5


def test_same_inputs_in_any_order_give_the_same_id_and_bytes(tmp_path: Path) -> None:
    items = examples(30)
    shuffled = list(items)
    random.Random(5).shuffle(shuffled)
    a = build(tmp_path / "a", items)
    b = build_dataset(tmp_path / "b", shuffled, now=lambda: datetime(2030, 1, 1, tzinfo=UTC))
    assert a.id == b.id
    assert a.train_path.read_bytes() == b.train_path.read_bytes()
    c = build(tmp_path / "c", items, settings=DatasetSettings(seed=3))
    assert c.id != a.id


def test_existing_dataset_is_reused_not_rewritten(tmp_path: Path) -> None:
    items = examples(12)
    first = build(tmp_path, items)
    inode = first.train_path.stat().st_ino
    second = build_dataset(tmp_path, items, now=lambda: datetime(2031, 1, 1, tzinfo=UTC))
    assert second.id == first.id
    assert second.manifest["created_at"] == FIXED_NOW.isoformat()
    assert second.train_path.stat().st_ino == inode
    assert not os.access(first.train_path, os.W_OK) or os.geteuid() == 0
    assert first.train_path.stat().st_mode & 0o222 == 0


def test_manifest_records_counts_hashes_and_lineage(tmp_path: Path) -> None:
    items = examples(6, source="feedback") + examples(6, seed=1, source="teacher")
    ds = build(tmp_path, items, golden_prompts=[])
    m = ds.manifest
    assert m["id"] == ds.id and ds.path == tmp_path / ds.id
    assert m["created_at"] == FIXED_NOW.isoformat()
    assert m["counts"]["input"]["judged"] == 0
    assert nonzero(m["counts"]["input"]) == {"feedback": 6, "teacher": 6}
    assert m["removed"] == {
        "empty": 0,
        "golden_overlap": 0,
        "exact_duplicate": 0,
        "near_duplicate": 0,
    }
    assert m["seed"] == 0 and m["parents"] == []
    import hashlib

    for name in ("train.jsonl", "validation.jsonl"):
        assert (
            m["files"][name]["sha256"] == hashlib.sha256((ds.path / name).read_bytes()).hexdigest()
        )
    assert load_dataset(tmp_path, ds.id).manifest == m


def test_tampered_dataset_fails_to_load(tmp_path: Path) -> None:
    ds = build(tmp_path, examples(10))
    ds.train_path.chmod(0o644)
    with ds.train_path.open("ab") as handle:
        handle.write(b'{"messages": []}\n')
    with pytest.raises(DatasetError, match=r"train\.jsonl does not match its manifest sha256"):
        load_dataset(tmp_path, ds.id)
    with pytest.raises(DatasetError, match="does not match"):
        build(tmp_path, examples(5, seed=3), replay_from=[ds.id])


@pytest.mark.parametrize("bad", ["../etc", "ABCDEF0123456789", "0123", "0123456789abcdef/..", ""])
def test_dataset_ids_in_paths_are_validated(tmp_path: Path, bad: str) -> None:
    with pytest.raises(DatasetError, match="invalid dataset id"):
        validate_dataset_id(bad)
    with pytest.raises(DatasetError, match="invalid dataset id"):
        load_dataset(tmp_path, bad)
    with pytest.raises(DatasetError, match="invalid dataset id"):
        build(tmp_path, examples(4), replay_from=[bad])


def test_unknown_parent_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset 0123456789abcdef not found"):
        build(tmp_path, examples(4), replay_from=["0123456789abcdef"])


# --- atomic writes -------------------------------------------------------------------------


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftover_temp_dirs_of_dead_writers_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f".tmp-{dead_pid()}-0badc0de"
    (dead / "half").mkdir(parents=True)
    alive = tmp_path / f".tmp-{os.getppid()}-0badc0de"
    alive.mkdir()
    ds = build(tmp_path, examples(5))
    assert not dead.exists()
    assert alive.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ds.id, alive.name])
    assert remove_stale_temp_dirs(tmp_path) == []


def test_a_failed_write_leaves_no_dataset_folder(tmp_path: Path) -> None:
    manifest = {"id": "0123456789abcdef", "files": {}}
    files: dict[str, Any] = {"train.jsonl": b"{}\n", "validation.jsonl": "not bytes"}
    with pytest.raises(TypeError):
        write_dataset(tmp_path, "0123456789abcdef", files, manifest)
    assert list(tmp_path.iterdir()) == []


# --- errors --------------------------------------------------------------------------------


def test_nothing_left_names_the_counts_per_reason(tmp_path: Path) -> None:
    items = examples(1)
    prompt = items[0]["messages"][0]["content"]
    items += [json.loads(json.dumps(items[0])) for _ in range(2)]
    items.append(example("Hello?", "   ", ref="blank"))
    items.append(example("What is the capital of France?", "Paris.", ref="golden"))
    with pytest.raises(DatasetError) as info:
        build(tmp_path, items, golden_prompts=["what is the capital of france", prompt])
    message = str(info.value)
    assert "0 of 5 examples left" in message
    assert "empty: 1" in message and "golden_overlap: 4" in message
    assert "exact_duplicate: 0" in message
    assert list(tmp_path.iterdir()) == []


def test_one_example_left_is_an_error(tmp_path: Path) -> None:
    items = examples(1) * 3
    with pytest.raises(DatasetError, match=r"1 of 3 examples left .*exact_duplicate: 2"):
        build(tmp_path, items)


BAD_RECORDS = [
    ("not a dict", "expected a dict"),
    ({"messages": [], "source": "judged"}, "messages must be a non-empty list"),
    ({**example("q", "a"), "source": "web"}, "source must be one of"),
    ({**example("q", "a"), "ref": 1.5}, "ref must be a string or an integer"),
    (
        {"messages": [{"role": "user", "content": "q"}], "source": "judged", "ref": "r9"},
        r"\(ref 'r9'\): the last message must be the assistant's answer",
    ),
    (
        {"messages": [{"role": "tool", "content": "q"}], "source": "judged"},
        "message 0 has role 'tool'",
    ),
    (
        {"messages": [{"role": "user", "content": 3}], "source": "judged"},
        "message 0 content must be a string",
    ),
    (
        {"messages": [{"role": "assistant", "content": "a"}], "source": "judged"},
        "there is no user message",
    ),
]


@pytest.mark.parametrize(("record", "message"), BAD_RECORDS)
def test_malformed_records_are_named(tmp_path: Path, record: Any, message: str) -> None:
    with pytest.raises(DatasetError, match=rf"example 2\b.*{message}"):
        build(tmp_path, [*examples(2), record])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"validation_share": 0.0},
        {"replay_share": 1.0},
        {"near_duplicate_threshold": 0.0},
        {"golden_threshold": 1.5},
        {"num_perm": 4},
        {"phone_regions": ("XX",)},
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=f"DatasetSettings.{next(iter(kwargs))}"):
        DatasetSettings(**kwargs)


def test_counts_per_source_add_up(tmp_path: Path) -> None:
    items = (
        examples(5, source="feedback") + examples(7, seed=1) + examples(3, seed=2, source="teacher")
    )
    ds = build(tmp_path, items)
    counts = ds.manifest["counts"]
    merged = Counter(counts["train"]) + Counter(counts["validation"])
    merged.pop("replay", None)
    assert nonzero(merged) == nonzero(counts["kept"]) == {"feedback": 5, "teacher": 3, "judged": 7}
