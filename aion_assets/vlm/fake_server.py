"""A local Anthropic-compatible HTTP server for tests and `aion bench vlm` (no key, no network).

It speaks the wire format the ``anthropic`` SDK parses: ``POST /v1/messages`` (a forced tool call answered with
``tool_use`` content and ``usage``), and the Message Batches endpoints ``POST /v1/messages/batches``,
``GET /v1/messages/batches/{id}`` and ``GET /v1/messages/batches/{id}/results`` (JSONL). Point the real SDK at it
with ``anthropic.Anthropic(base_url=server.base_url, api_key="dummy")``.

Scriptable per request: ``server.script(Reply...)`` queues the replies the next ``/v1/messages`` calls get, in
order (success, 429 with retry-after, 500, 529 overloaded, a hung response, malformed JSON, an unparseable tool
input); once the queue is empty every call succeeds. Batches stay ``in_progress`` for ``batch_polls_in_progress``
retrieves, then end, with the custom ids ``batch_errored`` selects as errored items (and those
``batch_unparseable`` selects answered with an unparseable tool input). Every request is counted in
``server.hits``.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer to a ``/v1/messages`` call."""

    kind: str = "success"  # success | error | hang | malformed | bad_tool_input
    status: int = 200
    error_type: str = ""
    retry_after_s: float | None = None
    hang_s: float = 0.0
    tool_input: dict[str, Any] | None = None  # overrides the generated answer

    @staticmethod
    def success(**tool_input: Any) -> "Reply":
        return Reply("success", tool_input=tool_input or None)

    @staticmethod
    def rate_limited(retry_after_s: float = 0.05) -> "Reply":
        return Reply("error", 429, "rate_limit_error", retry_after_s)

    @staticmethod
    def server_error(retry_after_s: float | None = 0.01) -> "Reply":
        return Reply("error", 500, "api_error", retry_after_s)

    @staticmethod
    def overloaded(retry_after_s: float | None = 0.01) -> "Reply":
        return Reply("error", 529, "overloaded_error", retry_after_s)

    @staticmethod
    def hang(seconds: float = 3.0) -> "Reply":
        return Reply("hang", hang_s=seconds)

    @staticmethod
    def malformed() -> "Reply":
        return Reply("malformed")

    @staticmethod
    def bad_tool_input() -> "Reply":
        return Reply("bad_tool_input")


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    status: int
    at: float


def _png_of(body: dict[str, Any]) -> bytes:
    for message in body.get("messages", []):
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "image":
                return base64.b64decode(block["source"]["data"])
    return b""




def brightness_score(png: bytes) -> int:
    """A deterministic 'judgement' for re-ranking tests: brighter image, higher score (1-10)."""
    import numpy as np
    from PIL import Image

    if not png:
        return 1
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return int(1 + round(9 * pixels.mean() / 255.0))


def default_answer(body: dict[str, Any], tool_name: str) -> dict[str, Any]:
    """A well-formed tool input for the tools this package uses."""
    if tool_name == "judge_match":
        score = brightness_score(_png_of(body))
        return {"answer": "yes" if score >= 6 else "no", "score": score}
    png = _png_of(body)
    tag = f"{len(png)} bytes" if png else "no image"
    return {
        "description": (f"A smooth elliptical galaxy with a bright nucleus and an extended envelope ({tag}); "
                        "no spiral arms, bars or tidal features are visible, and a faint neighbour lies nearby."),
        "summary": "Smooth elliptical galaxy with a bright nucleus and an extended envelope.",
    }


class FakeAnthropic:
    def __init__(
        self,
        latency_s: float = 0.0,
        input_tokens: int = 420,
        output_tokens: int = 110,
        batch_polls_in_progress: int = 1,
        batch_errored: Callable[[str], bool] | None = None,
        batch_unparseable: Callable[[str], bool] | None = None,
        answer: Callable[[dict[str, Any], str], dict[str, Any]] = default_answer,
    ) -> None:
        self.latency_s = latency_s
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.batch_polls_in_progress = batch_polls_in_progress
        self.batch_errored = batch_errored or (lambda custom_id: False)
        self.batch_unparseable = batch_unparseable or (lambda custom_id: False)  # succeeded, bad tool input
        self.answer = answer
        self.hits: list[Hit] = []  # responses, in the order they were sent
        self.received: list[tuple[str, str]] = []  # (method, path) of every request, as it arrives
        self.request_headers: list[dict[str, str]] = []
        self.batches: dict[str, dict[str, Any]] = {}
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------------------------
    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def next_reply(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else Reply()

    def count(self, method: str, path: str) -> int:
        """Requests received with this method and exactly this path (``/v1/messages``, ``/v1/messages/batches``),
        answered or not (a hung one counts when it arrives)."""
        with self._lock:
            return sum(1 for m, p in self.received if m == method and p == path)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeAnthropic":
        handler = type("Handler", (_Handler,), {"fake": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        server.block_on_close = False  # a hung handler must not hold up stop()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeAnthropic":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- payloads --------------------------------------------------------------------------------------------
    def message_payload(self, body: dict[str, Any], fields: dict[str, Any] | None = None) -> dict[str, Any]:
        tool = (body.get("tool_choice") or {}).get("name") or "record_description"
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": body.get("model", "claude-fake"),
            "content": [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": tool,
                         "input": fields if fields is not None else self.answer(body, tool)}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
        }

    def batch_payload(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        ended = batch["polls"] > self.batch_polls_in_progress
        n = len(batch["requests"])
        errored = sum(1 for r in batch["requests"] if self.batch_errored(r["custom_id"])) if ended else 0
        created: datetime = batch["created_at"]
        return {
            "id": batch_id, "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {"processing": 0 if ended else n, "succeeded": n - errored if ended else 0,
                               "errored": errored, "canceled": 0, "expired": 0},
            "created_at": created.isoformat(), "expires_at": (created + timedelta(hours=24)).isoformat(),
            "ended_at": datetime.now(timezone.utc).isoformat() if ended else None,
            "archived_at": None, "cancel_initiated_at": None,
            "results_url": f"{self.base_url}/v1/messages/batches/{batch_id}/results" if ended else None,
        }

    def batch_results(self, batch_id: str) -> bytes:
        lines = []
        for request in self.batches[batch_id]["requests"]:
            custom_id = request["custom_id"]
            if self.batch_errored(custom_id):
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "api_error", "message": "Internal server error while processing this request"}}}
            else:
                bad = {"summary": 42} if self.batch_unparseable(custom_id) else None
                result = {"type": "succeeded", "message": self.message_payload(request["params"], bad)}
            lines.append(json.dumps({"custom_id": custom_id, "result": result}))
        return ("\n".join(lines) + "\n").encode()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAnthropic
    protocol_version = "HTTP/1.1"  # keep-alive, as against the real API
    disable_nagle_algorithm = True  # headers and body go in two writes: Nagle + delayed ACK would add ~40 ms

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests capture logs
        pass

    def _send(self, status: int, payload: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        with self.fake._lock:
            self.fake.hits.append(Hit(self.command, self.path.split("?")[0], status, time.monotonic()))
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(payload)))
            self.send_header("request-id", f"req_{uuid.uuid4().hex[:16]}")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            pass

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers=headers)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?")[0]
        body = self._body()
        with self.fake._lock:
            self.fake.received.append(("POST", path))
            self.fake.request_headers.append({k.lower(): v for k, v in self.headers.items()})
        if path == "/v1/messages":
            self._messages(body)
        elif path == "/v1/messages/batches":
            batch_id = f"msgbatch_{uuid.uuid4().hex[:24]}"
            with self.fake._lock:
                self.fake.batches[batch_id] = {"requests": body["requests"], "polls": 0,
                                               "created_at": datetime.now(timezone.utc)}
            self._json(200, self.fake.batch_payload(batch_id))
        else:
            self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        with self.fake._lock:
            self.fake.received.append(("GET", path))
        parts = path.strip("/").split("/")
        if len(parts) >= 4 and parts[:3] == ["v1", "messages", "batches"] and parts[3] in self.fake.batches:
            batch_id = parts[3]
            if len(parts) == 5 and parts[4] == "results":
                self._send(200, self.fake.batch_results(batch_id), "application/binary")
                return
            with self.fake._lock:
                self.fake.batches[batch_id]["polls"] += 1
            self._json(200, self.fake.batch_payload(batch_id))
            return
        self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})

    def _messages(self, body: dict[str, Any]) -> None:
        reply = self.fake.next_reply()
        if self.fake.latency_s:
            time.sleep(self.fake.latency_s)
        if reply.kind == "hang":
            time.sleep(reply.hang_s)
            self._json(200, self.fake.message_payload(body))
        elif reply.kind == "error":
            headers = {"retry-after": f"{reply.retry_after_s:g}"} if reply.retry_after_s is not None else {}
            self._json(reply.status, {"type": "error", "error": {"type": reply.error_type,
                                                                 "message": f"fake {reply.error_type}"}}, headers)
        elif reply.kind == "malformed":
            self._send(200, b'{"id": "msg_broken", "type": "message", "content": [{"type": "tool_u')
        elif reply.kind == "bad_tool_input":
            self._json(200, self.fake.message_payload(body, {"summary": 42}))
        else:
            self._json(200, self.fake.message_payload(body, reply.tool_input))
