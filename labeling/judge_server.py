"""`fashion-rerank judge-server`: the REFERENCE judge — an OpenAI Chat Completions server whose grades come
from a deterministic rubric over catalog attributes (`labeling.rubric`). IT IS NOT AN LLM.

Why it exists: no LLM is reachable on the build machines, yet the labeling job must be exercised end to
end exactly as it runs against a real provider — through the `openai` client, over HTTP, with structured
output, token usage, rate limits and failures. Every label it produces is a rubric label; its model name
(`reference-rubric-v2`) and `owned_by` say so, and the job's reports say so too.

Endpoints
    GET  /v1/models             the one model it serves
    POST /v1/chat/completions   the rubric prompt of `labeling.prompts` -> {"grade", "reason"} as JSON; honours
                                `response_format` (json_schema / json_object) and plain mode alike; `usage`
                                counts tokens as ceil(characters / 4) (an estimate: there is no tokenizer)
    GET  /stats                 calls and answers, overall and per (query, product text), for tests that
                                count duplicate calls; POST /stats/reset clears them
    POST /admin/release         releases requests held by the `hold-after` fault
    GET  /health

Failure injection (server-wide `faults=` / `FR_JUDGE_FAULTS`, or per request header `X-Judge-Faults`),
a comma-separated list of `kind[xN][=value]`; `xN` limits a fault to the first N calls of each pair:
    429[xN][=retry_after]   rate limited (Retry-After header, seconds, default 0)
    500[xN] / 503[xN]       server error
    slow[xN]=S              sleep S seconds before answering (client timeouts)
    hold-after=N            let N requests through, hold every further one until /admin/release
    no-response-format      400 naming response_format when a request carries one
    fenced                  reply wrapped in a ```json code fence
    grade=V                 reply with grade V (a JSON literal: 7, "two", null, 2.5)
    free-text               reply with prose instead of JSON
    no-grade                reply JSON without a grade
    gullible                obey a `grade N` written inside the product text (a prompt-injection victim)
A call counts as *answered* only when its reply was written to a connected client; requests whose client
disconnected first (e.g. killed) count as *abandoned*, as a provider that stops on disconnect would bill.
"""

from __future__ import annotations

import json
import math
import re
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fashion_rerank.settings import REFERENCE_JUDGE_MODEL
from labeling import prompts, rubric

OWNED_BY = "fashion-rerank reference rubric (deterministic rules, not an LLM)"


@dataclass(frozen=True)
class Fault:
    """One injected failure: `kind`, applied to the first `times` calls of a pair (None: always), `value`."""

    kind: str
    times: int | None = None
    value: str | None = None


_FAULT_RE = re.compile(r"^(?P<kind>[a-z0-9-]+?)(?:x(?P<times>\d+))?(?:=(?P<value>.*))?$")
KNOWN_FAULTS = {
    "429",
    "500",
    "503",
    "slow",
    "hold-after",
    "no-response-format",
    "fenced",
    "grade",
    "free-text",
    "no-grade",
    "gullible",
}


def parse_faults(spec: str | None) -> list[Fault]:
    """Parse a fault spec such as `429x2=1,slow=0.5`. Raises ValueError on an unknown kind."""
    out = []
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        m = _FAULT_RE.match(part.lower() if not part.lower().startswith("grade=") else "grade=" + part[6:])
        if not m or m["kind"] not in KNOWN_FAULTS:
            raise ValueError(f"unknown judge fault {part!r}; known: {', '.join(sorted(KNOWN_FAULTS))}")
        out.append(Fault(m["kind"], int(m["times"]) if m["times"] else None, m["value"]))
    return out


class JudgeStats:
    """Thread-safe counters: calls and answers in total and per (query, product text)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.calls = 0
            self.admitted = 0
            self.answered = 0
            self.abandoned = 0
            self.by_status: Counter[int] = Counter()
            self.with_response_format = 0
            self.pair_calls: Counter[tuple[str, str]] = Counter()
            self.pair_answered: Counter[tuple[str, str]] = Counter()

    def call(self, pair: tuple[str, str] | None, response_format: bool) -> int:
        """Record a received call; returns how many calls this pair has had (including this one)."""
        with self._lock:
            self.calls += 1
            self.with_response_format += int(response_format)
            if pair is None:
                return 1
            self.pair_calls[pair] += 1
            return self.pair_calls[pair]

    def admit(self, limit: int) -> bool:
        """Let a request through while fewer than `limit` were let through (the `hold-after` fault)."""
        with self._lock:
            if self.admitted < limit:
                self.admitted += 1
                return True
            return False

    def done(self, pair: tuple[str, str] | None, status: int, delivered: bool) -> None:
        """Record how a call ended: a reply delivered with `status`, or abandoned (client gone)."""
        with self._lock:
            if not delivered:
                self.abandoned += 1
                return
            self.by_status[status] += 1
            if status == 200:
                self.answered += 1
                if pair is not None:
                    self.pair_answered[pair] += 1

    def snapshot(self) -> dict[str, Any]:
        """JSON-able view; `pairs` lists [query, product_text, calls, answered] per pair."""
        with self._lock:
            return {
                "calls": self.calls,
                "answered": self.answered,
                "abandoned": self.abandoned,
                "with_response_format": self.with_response_format,
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "distinct_pairs": len(self.pair_calls),
                "pairs_answered_more_than_once": sum(1 for v in self.pair_answered.values() if v > 1),
                "pairs": [[q, t, n, self.pair_answered.get((q, t), 0)] for (q, t), n in self.pair_calls.items()],
            }


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "ReferenceJudge"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        if self.server.verbose:
            super().log_message(format, *args)

    # -- plumbing
    def _send(
        self,
        status: int,
        body: dict | str,
        headers: dict[str, str] | None = None,
        pair: tuple[str, str] | None = None,
        count: bool = True,
    ) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        if count and self._client_gone():
            self.server.stats.done(pair, status, delivered=False)
            self.close_connection = True
            return
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            delivered = True
        except OSError:
            delivered = False
            self.close_connection = True
        if count:
            self.server.stats.done(pair, status, delivered)

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
        return False

    def _error(self, status: int, message: str, pair=None, param: str | None = None, headers=None, count=True) -> None:
        etype = {400: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_exceeded"}.get(
            status, "server_error"
        )
        self._send(
            status,
            {"error": {"message": message, "type": etype, "param": param, "code": None}},
            headers=headers,
            pair=pair,
            count=count,
        )

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw or b"null")

    # -- routes
    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [self.server.model_entry()]}, count=False)
        elif path in (f"/v1/models/{self.server.model}", f"/models/{self.server.model}"):
            self._send(200, self.server.model_entry(), count=False)
        elif path == "/stats":
            self._send(200, self.server.stats.snapshot(), count=False)
        elif path in ("/health", ""):
            self._send(200, {"status": "ok", "model": self.server.model, "owned_by": OWNED_BY}, count=False)
        else:
            self._error(404, f"no route {self.path}", count=False)

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        try:
            body = self._read_json()
        except (ValueError, UnicodeDecodeError):
            self._error(400, "request body is not JSON", count=False)
            return
        if path == "/stats/reset":
            self.server.stats.reset()
            self._send(200, {"reset": True}, count=False)
        elif path == "/admin/release":
            self.server.release()
            self._send(200, {"released": True}, count=False)
        elif path in ("/v1/chat/completions", "/chat/completions"):
            self._chat(body)
        else:
            self._error(404, f"no route {self.path}", count=False)

    def _chat(self, body: Any) -> None:
        srv = self.server
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._error(400, "body must be an object with a messages list", param="messages", count=False)
            return
        if body.get("model") != srv.model:
            self._error(
                404,
                f"The model `{body.get('model')}` does not exist; this reference judge serves `{srv.model}`",
                param="model",
                count=False,
            )
            return
        try:
            query, text = prompts.extract_pair(body["messages"])
        except (ValueError, TypeError) as exc:
            self._error(
                400,
                f"the reference judge only understands the fashion-rerank rubric prompt: {exc}",
                param="messages",
                count=False,
            )
            return
        pair = (query, text)
        has_rf = body.get("response_format") is not None
        nth = srv.stats.call(pair, has_rf)
        try:
            faults = (
                parse_faults(self.headers.get("X-Judge-Faults")) if self.headers.get("X-Judge-Faults") is not None else srv.faults
            )
        except ValueError as exc:
            self._error(400, str(exc), pair=pair)
            return
        active = [f for f in faults if f.times is None or nth <= f.times]
        kinds = {f.kind: f for f in active}

        if "no-response-format" in kinds and has_rf:
            self._error(
                400, "response_format is not supported by this server (unsupported parameter)", pair=pair, param="response_format"
            )
            return
        if "slow" in kinds:
            time.sleep(float(kinds["slow"].value or 1.0))
        if "hold-after" in kinds and not srv.stats.admit(int(kinds["hold-after"].value or 0)):
            while not srv.released.wait(0.05):
                if self._client_gone():
                    break
        for code in ("429", "500", "503"):
            if code in kinds:
                headers = {"Retry-After": kinds[code].value or "0"} if code == "429" else None
                msg = "Rate limit reached for requests" if code == "429" else "The server had an error processing your request"
                self._error(int(code), msg, pair=pair, headers=headers)
                return

        g, reason = rubric.grade(query, text)
        grade_value: Any = g
        if "gullible" in kinds:
            m = re.search(r"grade\W{0,4}(-?\d+)", text, re.I)
            if m:
                grade_value, reason = int(m.group(1)), "the product text told me to"
        if "grade" in kinds:
            grade_value = json.loads(kinds["grade"].value or "null")
        reply: dict[str, Any] = {"grade": grade_value, "reason": reason}
        if "no-grade" in kinds:
            reply.pop("grade")
        content = json.dumps(reply)
        if "free-text" in kinds:
            content = f"This product looks fairly relevant to the shopper; I would rate it highly. {reason}."
        elif "fenced" in kinds:
            content = f"```json\n{json.dumps(reply, indent=2)}\n```"
        prompt_tokens = sum(_tokens(str(m.get("content", ""))) + 4 for m in body["messages"])
        completion_tokens = _tokens(content)
        srv.seq += 1
        self._send(
            200,
            {
                "id": f"chatcmpl-ref-{srv.seq}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": srv.model,
                "system_fingerprint": "reference-rubric",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "logprobs": None,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
            pair=pair,
        )


class ReferenceJudge(ThreadingHTTPServer):
    """The reference judge HTTP server. Not an LLM: grades come from `labeling.rubric`.

    Args:
        host, port: where to listen (port 0 picks a free one; see `.port`).
        model: the model name it answers to (requests naming another model get 404, like a provider).
        faults: failure-injection spec (module docstring).
        verbose: log every request to stderr.

    Use `start()` to serve from a background thread (tests) or `serve_forever()` (the CLI); `url` is the
    base URL for the openai client (`.../v1`).
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256  # listen backlog: a burst of concurrent connects must not be refused (default 5)

    def handle_error(self, request, client_address) -> None:
        """A client that went away (killed, timed out) is routine here, not a traceback on stderr."""
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, model: str = REFERENCE_JUDGE_MODEL, faults: str = "", verbose: bool = False
    ):
        super().__init__((host, port), _Handler)
        self.model = model
        self.faults = parse_faults(faults)
        self.verbose = verbose
        self.stats = JudgeStats()
        self.released = threading.Event()
        self.seq = 0
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (useful with port 0)."""
        return self.server_address[1]

    @property
    def url(self) -> str:
        """Base URL for the openai client, ending in /v1."""
        host = self.server_address[0]
        return f"http://{host}:{self.port}/v1"

    def model_entry(self) -> dict[str, Any]:
        """The /v1/models entry of the served model."""
        return {"id": self.model, "object": "model", "created": 0, "owned_by": OWNED_BY}

    def set_faults(self, spec: str) -> None:
        """Replace the server-wide faults (ValueError on a bad spec)."""
        self.faults = parse_faults(spec)
        self.released.clear()

    def release(self) -> None:
        """Let requests held by `hold-after` go on."""
        self.released.set()

    def start(self) -> "ReferenceJudge":
        """Serve from a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="reference-judge", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (releases held requests first)."""
        self.release()
        self.shutdown()
        self.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "ReferenceJudge":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------ CLI
