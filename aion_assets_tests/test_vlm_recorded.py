"""The recorded describer on real data, and how the describer is chosen."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from aion_assets.vlm.describers import (
    DescribeRequest,
    RecordedDescriber,
    choose_describer,
    describer_code_version,
)


def requests_for(release_dir: Path) -> list[DescribeRequest]:
    catalog = pl.read_csv(release_dir / "catalog.csv", infer_schema_length=0)
    release = json.loads((release_dir / "manifest.json").read_text())["release"]
    return [
        DescribeRequest(release, row["object_id"], hashlib.sha256((release_dir / row["image"]).read_bytes()).hexdigest())
        for row in catalog.iter_rows(named=True)
    ]


def recorded_answers(shared_data: Path) -> dict[tuple[str, str], dict]:
    lines = (shared_data / "descriptions" / "recorded_descriptions.jsonl").read_text().splitlines()
    return {(r["release"], r["object_id"]): r for r in map(json.loads, lines)}


def test_replays_recorded_answers_and_refuses_a_changed_image(copy_release, shared_data: Path) -> None:
    release_dir = copy_release("gz-decals-rings", limit=15)
    answers = recorded_answers(shared_data)
    requests = requests_for(release_dir)
    expected = {r.object_id for r in requests if (r.release, r.object_id) in answers}
    assert 0 < len(expected) < len(requests)

    outcome = RecordedDescriber().describe(requests)
    assert set(outcome.rows["object_id"]) == expected
    for row in outcome.rows.iter_rows(named=True):
        record = answers[(row["release"], row["object_id"])]
        assert (row["description"], row["summary"]) == (record["description"], record["summary"])
        assert row["describer"] == "vlm-recorded" and row["prompt_version"] == "v1"
        assert (row["input_tokens"], row["output_tokens"], row["cost_usd"]) == (0, 0, 0.0)
    assert set(outcome.failures["status"]) == {"missing"}
    assert outcome.failures.height == len(requests) - len(expected)

    # The same object whose image file changed: its answer no longer describes it.
    victim = sorted(expected)[0]
    image = release_dir / "images" / f"{victim}.jpg"
    image.write_bytes(image.read_bytes() + b"\x00")
    outcome = RecordedDescriber().describe(requests_for(release_dir))
    assert victim not in set(outcome.rows["object_id"])
    refused = outcome.failures.filter(pl.col("object_id") == victim)
    assert refused.select("status", "reason").rows() == [("refused", "sha256 mismatch")]
    assert outcome.stats.successes == len(expected) - 1


def test_recorded_keys_are_the_whole_recorded_sample() -> None:
    keys = RecordedDescriber().recorded_keys()
    assert keys.height == 1120
    assert keys.group_by("release").len().sort("release").rows() == [
        ("gz-decals-rings", 71), ("gz1-sdss", 1026), ("spacewarps-cfhtls", 23)]


def test_default_describer_follows_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AION_DESCRIBER", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert choose_describer() == ("recorded", "no ANTHROPIC_API_KEY")
    recorded_version = describer_code_version()

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
    assert choose_describer()[0] == "anthropic"
    live_version = describer_code_version()
    assert live_version != recorded_version and "sk-ant" not in live_version
    assert describer_code_version(model="claude-haiku-4-5") != live_version

    monkeypatch.setenv("AION_DESCRIBER", "recorded")
    assert choose_describer() == ("recorded", "AION_DESCRIBER")
    assert choose_describer("anthropic")[0] == "anthropic"  # explicit config wins
    monkeypatch.setenv("AION_DESCRIBER", "gpt")
    with pytest.raises(ValueError, match="unknown describer"):
        choose_describer()
