"""The Anthropic client as this package uses it: key handling, pricing, structured answers.

The API key is ``ANTHROPIC_API_KEY``, held by the settings as a ``SecretStr`` (platform/settings.py), unwrapped
only here, handed to the SDK client and nowhere else: it is never a resource field, stored on our objects, logged,
or written to metadata or tables. Retries on 429 / 5xx / 529 / timeouts are the SDK's
(``max_retries``; exponential backoff with jitter, honouring ``retry-after`` and ``retry-after-ms``); what the SDK
does not retry — an answer that does not parse — is handled by the callers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aion_assets.platform.settings import get_settings

API_KEY_ENV = "ANTHROPIC_API_KEY"


class MissingApiKey(RuntimeError):
    """No ``ANTHROPIC_API_KEY`` in the environment: a live VLM call cannot be made."""

    def __init__(self, what: str = "this command") -> None:
        super().__init__(f"{what} needs a live VLM: set {API_KEY_ENV} (no key found in the environment)")


class Unparseable(ValueError):
    """The model answered, but not with the structured output asked for."""


def has_api_key() -> bool:
    key = get_settings().anthropic_api_key
    return key is not None and bool(key.get_secret_value().strip())


def make_client(base_url: str | None = None, timeout_s: float = 120.0, max_retries: int = 4,
                what: str = "the live describer") -> Any:
    """An ``anthropic.Anthropic`` client; raises MissingApiKey without a key. ``base_url`` points it at a proxy or
    the local fake server (empty: ANTHROPIC_BASE_URL from the settings, else the SDK's default)."""
    settings = get_settings()
    if not has_api_key():
        raise MissingApiKey(what)
    import anthropic

    return anthropic.Anthropic(
        api_key=settings.anthropic_api_key.get_secret_value().strip(),
        base_url=base_url or settings.anthropic_base_url or None, timeout=timeout_s, max_retries=max_retries,
    )


@dataclass(frozen=True)
class Pricing:
    """USD per million tokens; the Message Batches API bills ``batch_discount`` of the standard price."""

    input_per_mtok: float = 3.0
    output_per_mtok: float = 15.0
    batch_discount: float = 0.5

    def cost(self, input_tokens: int, output_tokens: int, batch: bool = False) -> float:
        usd = (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1_000_000
        return usd * (self.batch_discount if batch else 1.0)


def _field(obj: Any, key: str) -> Any:
    """Attribute or mapping access: the SDK builds loose models from unexpected payloads, which may hold dicts."""
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def usage_tokens(message: Any) -> tuple[int, int]:
    usage = _field(message, "usage")
    try:
        return int(_field(usage, "input_tokens") or 0), int(_field(usage, "output_tokens") or 0)
    except (TypeError, ValueError):
        return 0, 0


def tool_schema(name: str, description: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "input_schema": {
            "type": "object", "properties": dict(properties), "required": list(properties),
            "additionalProperties": False,
        },
    }


def tool_input(message: Any, tool_name: str) -> dict[str, Any]:
    """The input of the forced tool call, or Unparseable with the reason."""
    if _field(message, "stop_reason") == "max_tokens":
        raise Unparseable("answer cut off at max_tokens")
    content = _field(message, "content")
    if not isinstance(content, list):
        raise Unparseable("response has no content blocks")
    for block in content:
        if _field(block, "type") == "tool_use" and _field(block, "name") == tool_name:
            value = _field(block, "input")
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError as error:
                    raise Unparseable(f"tool input is not JSON: {error}") from None
            if not isinstance(value, Mapping):
                raise Unparseable(f"tool input is {type(value).__name__}, not an object")
            return dict(value)
    raise Unparseable(f"no {tool_name!r} tool call in the response")


def require_text(answer: Mapping[str, Any], key: str) -> str:
    value = answer.get(key)
    if not isinstance(value, str) or not value.strip():
        raise Unparseable(f"field {key!r} missing or empty")
    return value.strip()


def api_error_reason(error: Exception) -> tuple[str, str]:
    """(status, reason) for an SDK exception after its retries: the HTTP status and the API's error type/message,
    never the request (which carries the key in its headers)."""
    import anthropic

    if isinstance(error, anthropic.APITimeoutError):
        return "timeout", "request timed out (after the SDK's retries)"
    if isinstance(error, anthropic.APIConnectionError):
        return "connection_error", f"connection failed (after the SDK's retries): {type(error.__cause__).__name__}"
    if isinstance(error, anthropic.APIStatusError):
        body = error.body if isinstance(error.body, Mapping) else {}
        detail = body.get("error") if isinstance(body.get("error"), Mapping) else {}
        kind = detail.get("type") or "error"
        message = str(detail.get("message") or "")[:200]
        return "api_error", f"HTTP {error.status_code} {kind}: {message}".rstrip(": ")
    return "error", f"{type(error).__name__}: {str(error)[:200]}"
