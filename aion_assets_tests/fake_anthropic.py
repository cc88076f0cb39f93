"""A reusable local Anthropic-compatible server for tests: the real SDK is pointed at it with ``base_url``.

The server itself lives in ``aion_assets.vlm.fake_server`` (``aion bench vlm`` runs against it too); this module
adds the pytest fixtures. Use it from any test module::

    from aion_assets_tests.fake_anthropic import FakeAnthropic, Reply, dummy_api_key, fake_anthropic  # noqa: F401

    def test_x(fake_anthropic, dummy_api_key):
        fake_anthropic.script(Reply.rate_limited(0.1), Reply.overloaded())
        ...  # AnthropicConfig(base_url=fake_anthropic.base_url, ...)
        assert fake_anthropic.count("POST", "/v1/messages") == 3
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from aion_assets.vlm.fake_server import FakeAnthropic, Hit, Reply, brightness_score, default_answer

__all__ = ["FakeAnthropic", "Hit", "Reply", "brightness_score", "default_answer", "dummy_api_key", "fake_anthropic"]


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A started server on 127.0.0.1 (free port), stopped after the test."""
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def dummy_api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A unique fake ANTHROPIC_API_KEY, so a test can search logs and tables for it."""
    key = f"sk-ant-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.delenv("AION_DESCRIBER", raising=False)
    return key
