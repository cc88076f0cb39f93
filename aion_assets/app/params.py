"""Request parameters, declared once: each is parsed and checked from this declaration, and the OpenAPI
description is written from the same one, so the documented contract and the enforced one cannot drift apart."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_ID_LENGTH = 256


class BadRequest(ValueError):
    """A request the API refuses as written (HTTP 400); the message is one line for the client."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # str, int, float or bool
    description: str
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    max_length: int | None = None
    location: str = "query"  # or "path"

    def parse(self, raw: str | None) -> Any:
        if raw is None or (raw == "" and not self.required):  # an empty optional field is an absent one
            if self.required:
                raise BadRequest(f"{self.name} is required")
            return self.default
        if self.kind is str:
            return self._check_text(raw)
        if self.kind is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise BadRequest(f"{self.name} must be true or false, not {raw[:40]!r}")
            return raw.lower() in ("true", "1")
        try:
            value = self.kind(raw)
        except ValueError:
            raise BadRequest(f"{self.name} must be a{'n integer' if self.kind is int else ' number'}, "
                             f"not {raw[:40]!r}") from None
        if not math.isfinite(value):
            raise BadRequest(f"{self.name} must be a finite number")
        self._check_range(value)
        return value

    def _check_text(self, raw: str) -> str:
        if self.required and not raw.strip():
            raise BadRequest(f"{self.name} must not be empty")
        if self.max_length is not None and len(raw) > self.max_length:
            raise BadRequest(f"{self.name} is {len(raw)} characters long; the limit is {self.max_length}")
        return raw.strip() if self.required else raw

    def _check_range(self, value: float) -> None:
        low_fails = self.minimum is not None and (value <= self.minimum if self.exclusive_minimum
                                                  else value < self.minimum)
        high_fails = self.maximum is not None and (value >= self.maximum if self.exclusive_maximum
                                                   else value > self.maximum)
        if low_fails or high_fails:
            low = "(" if self.exclusive_minimum else "["
            high = ")" if self.exclusive_maximum else "]"
            raise BadRequest(f"{self.name} must be in {low}{_shown(self.minimum)}, {_shown(self.maximum)}{high}, "
                             f"not {_shown(value)}")

    def openapi(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": {str: "string", int: "integer", float: "number", bool: "boolean"}[self.kind]}
        for key, value in (("default", self.default), ("maxLength", self.max_length)):
            if value is not None:
                schema[key] = value
        if self.minimum is not None:
            schema["exclusiveMinimum" if self.exclusive_minimum else "minimum"] = self.minimum
        if self.maximum is not None:
            schema["exclusiveMaximum" if self.exclusive_maximum else "maximum"] = self.maximum
        return {"name": self.name, "in": self.location, "required": self.required or self.location == "path",
                "description": self.description, "schema": schema}


def parse_query(query: Mapping[str, str], params: Sequence[Param]) -> dict[str, Any]:
    """Every declared query parameter, parsed; an undeclared one is an error (a misspelt ``model`` for
    ``model_version`` would otherwise be silently ignored)."""
    known = {p.name for p in params}
    unknown = sorted(set(query) - known)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}; this endpoint takes: {', '.join(sorted(known)) or 'none'}")
    return {p.name: p.parse(query.get(p.name)) for p in params}


def object_id_param(description: str = "The object's id in its release catalogue.") -> Param:
    return Param("object_id", str, description, required=True, max_length=MAX_ID_LENGTH, location="path")


def check_object_id(object_id: str) -> str:
    """An id, not a path: a request that tries to name a file (``..``, a slash, a NUL) is refused outright."""
    if not object_id or len(object_id) > MAX_ID_LENGTH:
        raise BadRequest(f"object id must be 1-{MAX_ID_LENGTH} characters")
    if "/" in object_id or "\\" in object_id or ".." in object_id or any(ord(c) < 32 for c in object_id):
        raise BadRequest("object id must not contain '/', '\\\\', '..' or control characters: objects are named "
                         "by id, never by a path")
    return object_id


def _shown(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
