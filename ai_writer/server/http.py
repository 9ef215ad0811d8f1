"""The HTTP side of `ai-writer serve`: routes, limits, access token, CORS and static files.

A standard-library threaded HTTP server. Every request is answered by `Handler`; generation
requests are handed to the `InferenceWorker` and their events streamed back as server-sent
events (or collected into one JSON answer). Every error, from a bad path to a full queue,
is the same JSON shape (`ApiError.body`).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import mimetypes
import queue
import select
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from ai_writer.generation.sampler import SamplerSettings
from ai_writer.server.requests import ApiError, JobSpec, completions_spec, continue_spec, parse_json
from ai_writer.server.worker import InferenceWorker, Job

FLUSH_INTERVAL = 0.04  # seconds: streamed text goes out at most this often per request (25 updates/s)
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".json": "application/json", ".svg": "image/svg+xml",
                 ".png": "image/png", ".ico": "image/x-icon", ".txt": "text/plain; charset=utf-8"}


@dataclass
class ServerSettings:
    """Everything the server needs besides the worker; built by the CLI from its options."""

    static_root: Path
    model_id: str
    info: dict[str, Any]  # shown by GET /api/info
    defaults: SamplerSettings = field(default_factory=SamplerSettings)
    default_chars: int = 200
    token: str | None = None  # required as "Authorization: Bearer TOKEN" on every API route when set
    cors_origin: str | None = None  # the one origin (or "*") allowed to call the API from a browser
    max_body: int = 2**20
    read_timeout: float = 30.0  # seconds a client may stay silent while sending, or not reading
    max_connections: int = 64
    log: Callable[[str], None] | None = None


# -- the routes: one table from (method, path) to its handler ----------------------------------
# Other paths are static files (GET, HEAD). HEAD is answered as GET, OPTIONS is the CORS
# preflight; 405 and its Allow header list the methods of a path in this table.


def get_healthz(request: Handler) -> None:
    request._send_json(200, {"status": "ok"})


def get_info(request: Handler) -> None:
    settings = request.server.settings
    request._send_json(200, {**settings.info, "defaults": {"length": settings.default_chars,
                                                             **settings.defaults.as_dict()}})


def get_models(request: Handler) -> None:
    request._send_json(200, {"object": "list", "data": [
        {"id": request.server.settings.model_id, "object": "model", "created": 0, "owned_by": "ai-writer"}]})


def post_continue(request: Handler) -> None:
    settings = request.server.settings
    request._continue(continue_spec(request._json_body(), settings.defaults, settings.default_chars))


def post_completions(request: Handler) -> None:
    settings = request.server.settings
    request._completions(completions_spec(request._json_body(), settings.defaults, settings.model_id))


@dataclass(frozen=True)
class Route:
    handler: Callable[[Handler], None]
    token: bool = True  # the access token is required (when the server has one)


ROUTES = {
    ("GET", "/healthz"): Route(get_healthz, token=False),
    ("GET", "/api/info"): Route(get_info),
    ("POST", "/api/continue"): Route(post_continue),
    ("GET", "/v1/models"): Route(get_models),
    ("POST", "/v1/completions"): Route(post_completions),
}
METHODS = {path: tuple(m for m, p in ROUTES if p == path) for _, path in ROUTES}  # path -> its methods


class AiWriterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: the default 5 makes a burst of clients wait 1 s for a SYN retry

    def __init__(self, address: tuple[str, int], settings: ServerSettings, worker: InferenceWorker):
        self.settings, self.worker = settings, worker
        self._connections = threading.BoundedSemaphore(settings.max_connections)
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        if not self._connections.acquire(blocking=False):  # too many open connections: answer at once
            _reject_busy(request)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def _reject_busy(request: socket.socket) -> None:
    body = json.dumps(ApiError(503, "too many open connections; try again shortly").body()).encode()
    try:
        request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 2\r\n"
                        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    except OSError:
        pass


class Handler(BaseHTTPRequestHandler):
    server: AiWriterHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "ai-writer"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.settings.read_timeout
        super().setup()

    # -- dispatch ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        self._body_read = False
        try:
            path = urlsplit(self.path).path
            if path in METHODS:
                self._route(method, path)
            elif method in ("GET", "HEAD"):
                self._static(path, head=method == "HEAD")
            else:
                raise ApiError(404, f"no such endpoint: {path}")
        except ApiError as error:
            self._close_if_body_unread()
            self._send_error(error)
        except (ConnectionError, socket.timeout):
            self.close_connection = True
        except Exception as exc:  # a bug: answer cleanly, never a traceback page
            print(f"ai-writer: internal error on {method} {self.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._close_if_body_unread()
            self._send_error(ApiError(500, "internal server error"))

    def _close_if_body_unread(self) -> None:
        """A request refused before its body was read (a wrong token, a wrong path) leaves that body on the
        connection, where it would be taken for the next request: such a connection is closed instead."""
        has_body = self.headers.get("Content-Length", "0").strip() != "0" or "Transfer-Encoding" in self.headers
        if has_body and not self._body_read:
            self.close_connection = True

    def _route(self, method: str, path: str) -> None:
        allowed = METHODS[path]
        if method == "OPTIONS" and self._cors_origin():
            self._send(204, b"", "text/plain", {"Access-Control-Allow-Methods": ", ".join((*allowed, "OPTIONS")),
                                                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                                                "Access-Control-Max-Age": "600"})
            return
        if method == "HEAD" and "GET" in allowed:
            method = "GET"
        route = ROUTES.get((method, path))
        if route is None:
            raise ApiError(405, f"{path} accepts {', '.join(allowed)}, not {method}",
                           headers={"Allow": ", ".join(allowed)})
        if route.token:
            self._check_token()
        route.handler(self)

    # -- requests ----------------------------------------------------------------------------

    def _check_token(self) -> None:
        token = self.server.settings.token
        if token is None:
            return
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise ApiError(401, "missing or wrong access token: send 'Authorization: Bearer TOKEN'",
                           headers={"WWW-Authenticate": "Bearer"})

    def _json_body(self) -> dict[str, Any]:
        """The JSON body; on any error before it is fully read, _dispatch closes the connection."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ApiError(411, "send the body with a Content-Length, not chunked")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise ApiError(411, "a Content-Length header is required")
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            raise ApiError(400, f"bad Content-Length: {length_text[:40]!r}") from None
        if length > self.server.settings.max_body:
            raise ApiError(413, f"the request body is {length} bytes; the limit is {self.server.settings.max_body}")
        try:
            raw = self.rfile.read(length)
        except socket.timeout:
            raise ApiError(408, "the request body came too slowly") from None
        if len(raw) < length:
            raise ApiError(400, "the request body is shorter than its Content-Length")
        self._body_read = True
        return parse_json(raw)

    def _continue(self, spec: JobSpec) -> None:
        job = self.server.worker.submit(spec)
        with _cancelled_if_failing(job):
            self._continue_job(spec, job)

    def _continue_job(self, spec: JobSpec, job: Job) -> None:
        if not spec.stream:
            summary = self._collect(job)
            self._send_json(200, {"variants": summary["choices"], **_totals(summary)})
            return
        self._start_stream()
        for event in self._events(job):
            if event[0] == "chunk":
                self._sse({"variant": event[1], "text": event[2]}, "chunk")
            elif event[0] == "finish":
                self._sse({"variant": event[1], "finish_reason": event[2]}, "finish")
            elif event[0] == "done":
                self._sse({"variants": event[1]["choices"], **_totals(event[1])}, "done")
            else:
                self._sse(event[1].body(), "error")

    def _completions(self, spec: JobSpec) -> None:
        job = self.server.worker.submit(spec)
        with _cancelled_if_failing(job):
            self._completions_job(spec, job)

    def _completions_job(self, spec: JobSpec, job: Job) -> None:
        base = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": spec.extras["model"]}
        if not spec.stream:
            summary = self._collect(job)
            choices = [{"text": c["text"], "index": c["index"], "logprobs": None,
                        "finish_reason": c["finish_reason"]} for c in summary["choices"]]
            self._send_json(200, {**base, "choices": choices, "usage": _usage(summary)})
            return
        self._start_stream()
        for event in self._events(job):
            if event[0] in ("chunk", "finish"):
                text, reason = (event[2], None) if event[0] == "chunk" else ("", event[2])
                self._sse({**base, "choices": [{"text": text, "index": event[1], "logprobs": None,
                                                "finish_reason": reason}]})
            elif event[0] == "error":
                self._sse(event[1].body())
        self._write_raw(b"data: [DONE]\n\n")

    def _events(self, job: Job):
        """The job's events as they come; cancels the job when the client goes away."""
        last_write = 0.0
        while True:
            try:
                events = [job.events.get(timeout=0.25)]
            except queue.Empty:
                if self._client_gone():
                    job.cancel()
                    return
                continue
            if events[-1][0] == "chunk":  # gather what arrives within the flush interval: fewer, larger writes
                time.sleep(max(0.0, last_write + FLUSH_INTERVAL - time.monotonic()))
            while events[-1][0] == "chunk":
                try:
                    events.append(job.events.get_nowait())
                except queue.Empty:
                    break
            last_write = time.monotonic()
            for event in _merged(events):
                yield event
                if event[0] in ("done", "error"):
                    return

    def _collect(self, job: Job) -> dict[str, Any]:
        for event in self._events(job):
            if event[0] == "done":
                return event[1]
            if event[0] == "error":
                raise event[1]
        raise ConnectionAbortedError("client gone")

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    # -- static files ------------------------------------------------------------------------

    def _static(self, path: str, head: bool) -> None:
        root = self.server.settings.static_root.resolve()
        relative = unquote(path).lstrip("/") or "index.html"
        if "\x00" in relative or "\\" in relative or any(part in ("", ".", "..") for part in relative.split("/")):
            raise ApiError(404, f"no such file: {path}")
        target = (root / relative).resolve()
        if root not in target.parents or not target.is_file():
            raise ApiError(404, f"no such file: {path}")
        data = target.read_bytes()
        kind = CONTENT_TYPES.get(target.suffix.lower()) or mimetypes.guess_type(target.name)[0] or \
            "application/octet-stream"
        self._send(200, b"" if head else data, kind, {"Cache-Control": "no-cache",
                                                       "X-Content-Type-Options": "nosniff"},
                   length=len(data))

    # -- writing -----------------------------------------------------------------------------

    def _cors_origin(self) -> str | None:
        headers = getattr(self, "headers", None)  # absent when the request line itself was bad
        allowed, origin = self.server.settings.cors_origin, headers.get("Origin") if headers else None
        if allowed and origin and (allowed == "*" or origin == allowed):
            return allowed if allowed == "*" else origin
        return None

    def _common_headers(self) -> None:
        origin = self._cors_origin()
        if origin:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None,
              length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self._common_headers()
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self._send(status, data, "application/json; charset=utf-8", headers)

    def _send_error(self, error: ApiError) -> None:
        try:
            self._send_json(error.status, error.body(), error.headers)
        except OSError:
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own errors (bad request line, oversized headers) in our JSON shape."""
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.1"  # always answer with headers and a JSON body
        self._send_error(ApiError(code, message or self.responses.get(code, ("error",))[0]))

    def _start_stream(self) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("Connection", "close")
        self._common_headers()
        self.end_headers()
        self.wfile.flush()

    def _sse(self, data: dict[str, Any], event: str | None = None) -> None:
        line = (f"event: {event}\n" if event else "") + f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
        self._write_raw(line.encode("utf-8"))

    def _write_raw(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        log = self.server.settings.log
        if log is not None:
            log(f"{self.address_string()} {format % args}")


def _merged(events: list[tuple]) -> list[tuple]:
    """Consecutive chunks of the same continuation joined into one."""
    merged: list[tuple] = []
    for event in events:
        if event[0] == "chunk" and merged and merged[-1][0] == "chunk" and merged[-1][1] == event[1]:
            merged[-1] = ("chunk", event[1], merged[-1][2] + event[2])
        else:
            merged.append(event)
    return merged


@contextlib.contextmanager
def _cancelled_if_failing(job: Job):
    """Whatever ends a request early (the client went away, a write failed) stops its generation."""
    try:
        yield
    except BaseException:
        job.cancel()
        raise


def _totals(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: summary[key] for key in ("seed", "prompt_tokens", "reused_tokens", "completion_tokens", "seconds")}


def _usage(summary: dict[str, Any]) -> dict[str, int]:
    prompt, completion = summary["prompt_tokens"], summary["completion_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
