"""The recorded describer on real data, and how the describer is chosen."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import datetime, timezone
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


def recorded_lines(shared_data: Path) -> list[dict]:
    """The recorded file read directly, line by line: the independent count of what the describer must hold."""
    text = (shared_data / "descriptions" / "recorded_descriptions.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def recorded_answers(shared_data: Path) -> dict[tuple[str, str], dict]:
    return {(r["release"], r["object_id"]): r for r in recorded_lines(shared_data)}


def day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


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
        assert row["created_at"] == day(record["recorded_on"])  # when the answer was made, not replayed
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


def test_recorded_keys_are_the_whole_recorded_sample(shared_data: Path, sample_releases: Path) -> None:
    lines = recorded_lines(shared_data)
    keys = RecordedDescriber().recorded_keys()
    # Every line is one object (the passes do not overlap), every pass and every release of them is there.
    assert keys.height == len(lines) == len({(r["release"], r["object_id"]) for r in lines})
    assert sorted(keys.select("release", "object_id", "image_sha256").rows()) == sorted(
        (r["release"], r["object_id"], r["image_sha256"]) for r in lines)
    per_pass = Counter((day(r["recorded_on"]), r["release"]) for r in lines)
    assert dict(Counter(keys.select("recorded_on", "release").rows())) == per_pass
    assert len({d for d, _ in per_pass}) >= 2  # more than one recorded sample
    # Each answer names an object of a release in the watched folder, made from that very image file.
    releases = {json.loads((folder / "manifest.json").read_text())["release"]: folder
                for folder in sample_releases.iterdir() if (folder / "manifest.json").is_file()}
    assert set(keys["release"]) <= set(releases)
    for release, group in keys.group_by("release"):
        folder = releases[release[0]]
        catalog = dict(pl.read_csv(folder / "catalog.csv", infer_schema_length=0).select("object_id", "image").rows())
        for object_id, sha in group.select("object_id", "image_sha256").rows():
            assert hashlib.sha256((folder / catalog[object_id]).read_bytes()).hexdigest() == sha, object_id


def test_an_object_answered_in_two_passes_replays_the_later_answer(shared_data: Path, tmp_path: Path) -> None:
    first, second = recorded_lines(shared_data)[:2]
    later = {**first, "description": "the later answer", "recorded_on": "2027-01-15"}
    undated = {**second}
    undated.pop("recorded_on")
    path = tmp_path / "recorded.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (later, first, undated)), encoding="utf-8")
    describer = RecordedDescriber(path)
    assert describer.recorded_keys().height == 2
    requests = [DescribeRequest(r["release"], r["object_id"], r["image_sha256"]) for r in (first, second)]
    before = datetime.now(timezone.utc)
    rows = {row["object_id"]: row for row in describer.describe(requests).rows.iter_rows(named=True)}
    assert rows[first["object_id"]]["description"] == "the later answer"
    assert rows[first["object_id"]]["created_at"] == day("2027-01-15")
    assert rows[second["object_id"]]["created_at"] >= before  # an undated answer: the replay time


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
    with pytest.raises(ValueError, match="AION_DESCRIBER='gpt'"):  # a SettingsError naming the variable
        choose_describer()
