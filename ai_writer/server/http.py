"""The HTTP side of `ai-writer serve`: routes, limits, access token, CORS and static files.

A standard-library threaded HTTP server. Every request is answered by `Handler`; generation
requests are handed to the `InferenceWorker` and their events streamed back as server-sent
events (or collected into one JSON answer). Every error, from a bad path to a full queue,
is the same JSON shape (`ApiError.body`).

What it defends against, before any route runs: a Host header that is not one of this server's
names (DNS rebinding), a request that trickles in (one deadline for its whole head and body; a
new client displaces the one that has waited longest for its request when all connections are
taken), bodies that are not `application/json` or whose Content-Length is not one plain number.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import mimetypes
import queue
import re
import selectors
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

from ai_writer.generation import presets
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.server.requests import (MAX_STOP_CHARS, MAX_STOPS, ApiError, JobSpec, completions_spec, continue_spec,
                                       limits, parse_json, setting_ranges)
from ai_writer.server.worker import InferenceWorker, Job

FLUSH_INTERVAL = 0.04  # seconds: streamed text goes out at most this often per request (25 updates/s)
DISCONNECT_CHECK = 0.25  # seconds: how often a request being written looks whether its client is still there
STUCK_AFTER = 1.0  # seconds waiting for a request after which a connection may be displaced by a new client
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[^:\[\]]+)(?::[0-9]{1,5})?")  # a Host header: name and optional port
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
    allowed_hosts: frozenset[str] | None = LOOPBACK_NAMES  # Host names answered (lower case); None: any
    max_body: int = 2**20
    read_timeout: float = 30.0  # seconds a client may stay silent while sending, or not reading
    request_timeout: float = 20.0  # seconds for a whole request (head and body) to arrive, from when it is awaited
    max_connections: int = 64
    modern_punctuation: bool = False  # the model writes modern punctuation: openings are modernized (text/punctuation.py)
    log: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        if self.token is not None and not valid_token(self.token):
            raise ValueError("the access token must be printable ASCII characters, without spaces around it")


def valid_token(token: str) -> bool:
    """A token a client can send in an Authorization header and that compares as typed."""
    return bool(token) and token.isascii() and token.isprintable() and token == token.strip()


# -- the routes: one table from (method, path) to its handler ----------------------------------
# Other paths are static files (GET, HEAD). HEAD is answered as GET, OPTIONS is the CORS
# preflight; 405 and its Allow header list the methods of a path in this table.


def get_healthz(request: Handler) -> None:
    request._send_json(200, {"status": "ok"})


def get_info(request: Handler) -> None:
    settings = request.server.settings
    request._send_json(200, {**settings.info, "defaults": {"length": settings.default_chars,
                                                             **settings.defaults.as_dict()},
                             "ranges": setting_ranges(request.server.worker.max_batch),
                             "stop": {"strings": MAX_STOPS, "chars": MAX_STOP_CHARS},
                             "presets": presets.as_json(),
                             "steering": limits()})


def get_models(request: Handler) -> None:
    request._send_json(200, {"object": "list", "data": [
        {"id": request.server.settings.model_id, "object": "model", "created": 0, "owned_by": "ai-writer"}]})


def post_continue(request: Handler) -> None:
    settings = request.server.settings
    request._continue(continue_spec(request._json_body(), settings.defaults, settings.default_chars,
                                    max_rows=request.server.worker.max_batch,
                                    modern_punctuation=settings.modern_punctuation))


def post_completions(request: Handler) -> None:
    settings = request.server.settings
    request._completions(completions_spec(request._json_body(), settings.defaults, settings.model_id,
                                          max_rows=request.server.worker.max_batch))


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
        self._awaiting: dict[socket.socket, float] = {}  # connections waiting for a request: since when
        self._awaiting_lock = threading.Lock()
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        if not self._connections.acquire(blocking=False) and not (
                self._displace_stuck() and self._connections.acquire(timeout=2.0)):
            _reject_busy(request)  # too many open connections, none of them stuck: answer at once
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.awaiting(request, None)
            self._connections.release()

    def awaiting(self, connection: socket.socket, since: float | None) -> None:
        """Note that `connection` waits for a request to arrive (since then), or no longer does (None)."""
        with self._awaiting_lock:
            if since is None:
                self._awaiting.pop(connection, None)
            else:
                self._awaiting[connection] = since

    def _displace_stuck(self) -> bool:
        """Close the connection that has waited longest for its request, if that is over STUCK_AFTER
        seconds: a client trickling its request (or idle between requests) makes way for a new one."""
        with self._awaiting_lock:
            if not self._awaiting:
                return False
            connection, since = min(self._awaiting.items(), key=lambda item: item[1])
            if time.monotonic() - since < STUCK_AFTER:
                return False
            del self._awaiting[connection]
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)  # its thread's read ends at once; it closes and frees its slot
        return True

    def handle_error(self, request, client_address) -> None:
        """A client that went away mid-request is no error; anything else is one line, never a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            return
        print(f"ai-writer: internal error serving {client_address[0]}: {type(error).__name__}: {error}",
              file=sys.stderr)

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


class _DeadlineReader(io.RawIOBase):
    """A connection's reading side with two limits: each read waits at most `read_timeout`, and all
    reads of one request end by the handler's deadline, so a client trickling a byte at a time still
    runs out of time. Running out raises TimeoutError, which ends the connection."""

    def __init__(self, connection: socket.socket, handler: "Handler"):
        self.connection, self.handler = connection, handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        timeout = self.handler.server.settings.read_timeout
        if self.handler.deadline is not None:
            left = self.handler.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request came too slowly")
            timeout = min(timeout, left)
        self.connection.settimeout(timeout)
        return self.connection.recv_into(buffer)


class Handler(BaseHTTPRequestHandler):
    server: AiWriterHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "ai-writer"
    sys_version = ""
    deadline: float | None = None  # when the request being read must have arrived in full

    def setup(self) -> None:
        self.timeout = self.server.settings.read_timeout
        super().setup()
        self.rfile.close()  # the plain socket file: replaced by one that keeps the request's deadline
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))

    def handle_one_request(self) -> None:
        now = time.monotonic()
        self.deadline = now + self.server.settings.request_timeout
        self.server.awaiting(self.connection, now)
        try:
            super().handle_one_request()
        finally:
            self._request_read()

    def _request_read(self) -> None:
        """The request has arrived (or will not be read further): its deadline ends, and the connection is
        no longer one waiting for a request; writes get the plain silence limit."""
        if self.deadline is not None:
            self.deadline = None
            self.server.awaiting(self.connection, None)
            with contextlib.suppress(OSError):
                self.connection.settimeout(self.server.settings.read_timeout)

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
            if not self._has_body():
                self._request_read()
            self._check_host()
            path = urlsplit(self.path).path
            if path in METHODS:
                self._route(method, path)
            elif method in ("GET", "HEAD"):
                self._static(path)
            else:
                raise ApiError(404, f"no such endpoint: {path}")
        except ApiError as error:
            self._close_if_body_unread()
            self._send_error(error)
        except OSError:  # the client went away, or stopped reading
            self.close_connection = True
        except Exception as exc:  # a bug: answer cleanly, never a traceback page
            print(f"ai-writer: internal error on {method} {self.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._close_if_body_unread()
            self._send_error(ApiError(500, "internal server error"))

    def _has_body(self) -> bool:
        return self.headers.get("Content-Length", "0").strip() != "0" or "Transfer-Encoding" in self.headers

    def _close_if_body_unread(self) -> None:
        """A request refused before its body was read (a wrong token, a wrong path) leaves that body on the
        connection, where it would be taken for the next request: such a connection is closed instead."""
        if self._has_body() and not self._body_read:
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

    def _check_host(self) -> None:
        """Only this server's own names: a web page whose name was made to point at 127.0.0.1 (DNS
        rebinding) sends its own name, and is refused. A request without a Host header is no browser's."""
        allowed = self.server.settings.allowed_hosts
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1:
            raise ApiError(400, "more than one Host header")
        if allowed is None or not hosts:
            return
        match = _HOST.fullmatch(hosts[0].strip().lower())
        if match is None or match.group(1).rstrip(".") not in allowed:
            shown = hosts[0].strip()[:80]
            raise ApiError(403, f"this server does not answer to the host name {shown!r}; if that name is meant "
                                f"to reach it, start it with --allow-host NAME")

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
        content_type = self.headers.get("Content-Type", "")
        if content_type.partition(";")[0].strip().lower() != "application/json":
            raise ApiError(415, "send the request body as JSON, with 'Content-Type: application/json'")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ApiError(411, "send the body with a Content-Length, not chunked")
        lengths = {value.strip() for value in self.headers.get_all("Content-Length") or []}
        if not lengths:
            raise ApiError(411, "a Content-Length header is required")
        length_text = lengths.pop()
        if lengths:
            raise ApiError(400, "Content-Length headers that disagree")
        if not re.fullmatch(r"[0-9]+", length_text):  # int() would also take "+14", "1_4", " 14", "١٤"
            raise ApiError(400, f"bad Content-Length: {length_text[:40]!r}")
        length = int(length_text) if len(length_text) <= 18 else 10**18
        if length > self.server.settings.max_body:
            raise ApiError(413, f"the request body is {length} bytes; the limit is {self.server.settings.max_body}")
        try:
            raw = self.rfile.read(length)
        except socket.timeout:
            raise ApiError(408, "the request body came too slowly") from None
        if len(raw) < length:
            raise ApiError(400, "the request body is shorter than its Content-Length")
        self._body_read = True
        self._request_read()
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
                self._sse({"variant": event[1], "finish_reason": event[2], "rewinds": event[3]}, "finish")
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
                        "finish_reason": c["finish_reason"], "rewinds": c["rewinds"]} for c in summary["choices"]]
            self._send_json(200, {**base, "choices": choices, "usage": _usage(summary)})
            return
        self._start_stream()
        for event in self._events(job):
            if event[0] == "chunk":
                self._sse({**base, "choices": [{"text": event[2], "index": event[1], "logprobs": None,
                                                "finish_reason": None}]})
            elif event[0] == "finish":  # rewinds: an extension, as on the answer without streaming
                self._sse({**base, "choices": [{"text": "", "index": event[1], "logprobs": None,
                                                "finish_reason": event[2], "rewinds": event[3]}]})
            elif event[0] == "error":
                self._sse(event[1].body())
        self._write_raw(b"data: [DONE]\n\n")

    def _events(self, job: Job):
        """The job's events as they come; cancels the job when the client goes away (looked at every
        DISCONNECT_CHECK seconds, also while events keep coming: a client waiting for one JSON answer
        writes nothing that could fail)."""
        last_write, last_check = 0.0, time.monotonic()
        while True:
            try:
                events = [job.events.get(timeout=DISCONNECT_CHECK)]
            except queue.Empty:
                events = []
            if time.monotonic() - last_check >= DISCONNECT_CHECK:
                last_check = time.monotonic()
                if self._client_gone():
                    job.cancel()
                    return
            if not events:
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
            with selectors.DefaultSelector() as selector:
                selector.register(self.connection, selectors.EVENT_READ)
                readable = selector.select(0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    # -- static files ------------------------------------------------------------------------

    def _static(self, path: str) -> None:
        root = self.server.settings.static_root.resolve()
        relative = unquote(path).lstrip("/") or "index.html"
        missing = ApiError(404, f"no such file: {path[:200]}")
        if "\x00" in relative or "\\" in relative or any(part in ("", ".", "..") for part in relative.split("/")):
            raise missing
        try:
            target = (root / relative).resolve()
            if root not in target.parents or not target.is_file():
                raise missing
            data = target.read_bytes()
        except (OSError, ValueError):  # a name too long for the file system, a folder we may not read
            raise missing from None
        kind = CONTENT_TYPES.get(target.suffix.lower()) or mimetypes.guess_type(target.name)[0] or \
            "application/octet-stream"
        self._send(200, data, kind, {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

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

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        """One whole answer; to HEAD, its headers only (Content-Length still that of the body)."""
        self._request_read()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self._common_headers()
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8", "replace")
        self._send(status, data, "application/json; charset=utf-8", headers)

    def _send_error(self, error: ApiError) -> None:
        try:
            self._send_json(error.status, error.body(), error.headers)
        except OSError:
            self.close_connection = True

    def parse_request(self) -> bool:
        """The standard library's parsing, less HTTP/0.9 (an answer without headers) and versions past 1.x."""
        if not super().parse_request():
            return False
        if not self.request_version.startswith("HTTP/1."):
            self.send_error(400, f"only HTTP/1.0 and 1.1 are spoken here, not {self.request_version[:20]!r}")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own errors (bad request line, oversized headers) in our JSON shape; an
        unknown method is 405 and an HTTP version past 1.x 400 (no 5xx for what a client sent)."""
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.1"  # always answer with headers and a JSON body
        headers = {"Allow": "GET, HEAD, POST, OPTIONS"} if code == 501 else None
        code = {501: 405, 505: 400}.get(code, code)
        self._send_error(ApiError(code, message or self.responses.get(code, ("error",))[0], headers=headers))

    def _start_stream(self) -> None:
        self._request_read()
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
        self._write_raw(line.encode("utf-8", "replace"))

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
