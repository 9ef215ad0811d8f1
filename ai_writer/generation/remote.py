"""Writing through a remote OpenAI-compatible engine: `POST /v1/completions` with `stream: true`.

`RemoteEngine` is the alternative to a local model: ai-writer's own `serve` on a bigger machine,
vLLM, llama.cpp's server, AI00 or any other server of the OpenAI completions API. It keeps no
state: every write sends the whole prompt, and a rewrite or alternatives send it again. The
steering block is the caller's (cli/remote.py): an ai-writer server takes it as its own fields
(`extra`), any other gets it assembled into the prompt (story/steering.Steering.remote_prompt).

    engine = RemoteEngine("http://big-machine:8266")
    for chunk in engine.stream(prompt, max_chars=500, settings=SamplerSettings(), seed=7):
        print(chunk.text, end="")

The URL is the server's address (`http://host:8266`), its OpenAI base (`.../v1`) or the
completions endpoint itself; only http and https, with no credentials in it (the API key goes in
`api_key`, sent as `Authorization: Bearer`, and is never part of a message).

What is sent. The first write asks `GET /v1/models` once: the model to name when none is given
(the first listed) and whether the server is ai-writer (a model `owned_by: "ai-writer"`).
- Every server gets the OpenAI fields: prompt, model, n, temperature (the same rule as ours:
  p ** (1/T) is softmax(logits / T)), top_p, presence_penalty, frequency_penalty, seed, stream,
  max_tokens, stop (the first 4 of at most 256 characters, as OpenAI and ai-writer's server
  take: the others are cut here only); and top_k when it is set (vLLM, llama.cpp, AI00 read it).
- An ai-writer server also gets AI-Writer's own settings (top_p_newline, allow_p, top_k,
  penalty_decay), the banned phrases (`ban`) and the caller's `extra` fields (steering,
  loop_guard), so it writes exactly as a local model would (the same text for the same seed,
  model and backend); its max_tokens counts characters, so it is the length asked for.
- Other servers are not sent those extras (OpenAI's own API refuses fields it does not know; the
  others would only log or ignore them): they sample with their own nucleus rule and undecayed
  penalties. Their max_tokens counts tokens of their own vocabulary, so 3 per character is asked
  for (a byte-level tokenizer needs at most 3 for any character of the Basic Multilingual Plane).

Whatever the server does, the text is cut here too: at `max_chars` characters (the stream is then
closed, which stops a server that notices), just before a stop string, and just before a banned
phrase (which, as with a local model, may begin at the end of the prompt). A server other than
ai-writer cannot guarantee bans (it does not know them), nor has it our loop guard; the fallback
here keeps the promise that a banned phrase is never written: the continuation ends just before
it (finish_reason "ban") instead of being rewound and written on, as a local model does. Text
that could still turn into a stop string or a banned phrase is held back until it cannot.

Every failure is a `BackendError` whose one line names the URL and what went wrong: an address
that is not http(s), a connection refused or timed out, an HTTP error (with the message of the
server's OpenAI error body), a body that is neither JSON nor server-sent events.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from ai_writer import __version__
from ai_writer.errors import BackendError, InputTextError, SettingsError
from ai_writer.generation.generator import Chunk, RunResult
from ai_writer.generation.sampler import SamplerSettings

DEFAULT_TIMEOUT = 120.0  # seconds the server may stay silent (connecting, or between two pieces of text)
OPENAI_MAX_STOPS = 4  # stop strings OpenAI (and ai-writer's server) take; more are cut here only
MAX_SENT_STOP = 256  # characters of a stop string ai-writer's server takes; longer ones are cut here only
FOREIGN_TOKENS_PER_CHAR = 3  # max_tokens asked of a server whose tokens are not characters
MAX_LINE = 1 << 20  # bytes in one line of an event stream
MAX_BODY = 16 << 20  # bytes of a JSON answer
SHOWN = 200  # characters of a server's message quoted in an error


@dataclass
class _Run:
    """One continuation arriving: its text so far, what is shown, and whether it ended."""

    run: int
    context: str = ""  # the end of the prompt, where a banned phrase may begin
    text: str = ""
    sent: int = 0  # characters of `text` already yielded
    scanned: int = 0  # characters of `text` already searched for stop strings and bans
    done: bool = False
    finish_reason: str = "length"


class RemoteEngine:
    """A server of the OpenAI completions API that writes for us (see the module docstring)."""

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT):
        self.scheme, self.host, self.port, self.base = _parse_url(url)
        self.url = f"{self.scheme}://{_netloc(self.host, self.port)}{self.base}"  # shown in messages: .../v1
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self._listed: list[dict[str, Any]] | None = None  # GET /v1/models, asked once

    # ----- what the server offers -----
    def models(self) -> list[str]:
        """The ids of the models the server lists (an empty list if it has no /v1/models)."""
        return [str(m.get("id")) for m in self._models() if isinstance(m, dict) and m.get("id") is not None]

    @property
    def is_ai_writer(self) -> bool:
        """Whether the server is ai-writer's own (it then takes our sampling settings and bans)."""
        return any(isinstance(m, dict) and m.get("owned_by") == "ai-writer" for m in self._models())

    def describe(self) -> str:
        kind = "ai-writer server" if self.is_ai_writer else "OpenAI-compatible server"
        model = self.model or next(iter(self.models()), None)
        return f"remote {kind} at {self.url}" + (f", model {model}" if model else "")

    def _models(self) -> list[Any]:
        if self._listed is None:
            connection, response = self._request("GET", "/models")
            with contextlib.closing(connection), self._reading("/models"):
                if response.status == 404:  # some servers have only the completions endpoint
                    self._listed = []
                else:
                    self._check_status(response, "/models")
                    body = _json_body(response, self._endpoint("/models"))
                    data = body.get("data") if isinstance(body, dict) else None
                    self._listed = data if isinstance(data, list) else []
        return self._listed

    # ----- writing -----
    def stream(self, prompt: str, *, max_chars: int, runs: int = 1, settings: SamplerSettings,
               seed: int | None = None, stop: Sequence[str] = (), bans: Sequence[str] = (),
               extra: Mapping[str, Any] | None = None, results: list[RunResult] | None = None) -> Iterator[Chunk]:
        """Yield chunks of `runs` continuations of `prompt`, written by the server as they arrive.

        Each ends after `max_chars` characters, just before a stop string, or just before a banned
        phrase (finish_reason "length", "stop" or "ban"). `extra`: more request fields an ai-writer
        server gets (its steering fields, loop_guard); other servers do not. If `results` is given,
        one RunResult per run is appended to it as the runs end, before the run's last chunk is yielded.
        """
        if max_chars < 1:
            raise SettingsError(f"the length must be at least 1 character, got {max_chars}")
        if runs < 1:
            raise SettingsError(f"runs must be at least 1, got {runs}")
        if not prompt:
            raise InputTextError("the prompt is empty; give some text to continue")
        stop = tuple(s for s in stop if s)
        bans = tuple(b for b in bans if b)
        body = self._body(prompt, max_chars, runs, settings, seed, stop, bans)
        if extra and self.is_ai_writer:
            body.update(extra)
        context = prompt[max(0, len(prompt) - max((len(b) for b in bans), default=1) + 1):]
        active = [_Run(run, context) for run in range(runs)]
        connection, response = self._request("POST", "/completions", body)
        # closing the connection (when the runs end early, or on an error) stops the server writing
        with contextlib.closing(connection), contextlib.closing(response), self._reading("/completions"):
            self._check_status(response, "/completions")
            for choice in _choices(response, self._endpoint("/completions")):
                index = choice.get("index", 0)
                if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < runs:
                    raise BackendError(f"the remote engine at {self._endpoint('/completions')} sent a continuation "
                                       f"numbered {index!r}; {runs} were asked for")
                row = active[index]
                if row.done:
                    continue
                text = choice.get("text") or ""
                if not isinstance(text, str):
                    raise BackendError(f"the remote engine at {self._endpoint('/completions')} sent text that is "
                                       f"not a string: {_quoted(text)}")
                row.text += text
                shown = _settle(row, max_chars, stop, bans, finish=choice.get("finish_reason"))
                if row.done and results is not None:
                    results.append(RunResult(row.run, row.text, row.finish_reason))
                if shown:
                    yield Chunk(row.run, shown)
                if all(r.done for r in active):
                    return
            missing = [r.run for r in active if not r.done and not r.text]
            if missing and len(missing) == runs:
                raise BackendError(f"the remote engine at {self._endpoint('/completions')} ended its answer "
                                   f"without writing anything")
            if missing:
                raise BackendError(f"the remote engine at {self._endpoint('/completions')} wrote "
                                   f"{runs - len(missing)} of the {runs} continuations asked for (does it take n?)")
            for row in active:  # the stream ended: what is left ends where it is
                if not row.done:
                    shown = _settle(row, max_chars, stop, bans, finish="length")
                    if results is not None:
                        results.append(RunResult(row.run, row.text, row.finish_reason))
                    if shown:
                        yield Chunk(row.run, shown)

    def _body(self, prompt: str, max_chars: int, runs: int, settings: SamplerSettings, seed: int | None,
              stop: tuple[str, ...], bans: tuple[str, ...]) -> dict[str, Any]:
        ours = self.is_ai_writer
        body: dict[str, Any] = {
            "prompt": prompt, "n": runs, "stream": True,
            "max_tokens": max_chars if ours else max_chars * FOREIGN_TOKENS_PER_CHAR,
            "temperature": settings.temperature, "top_p": settings.top_p,
            "presence_penalty": settings.presence_penalty, "frequency_penalty": settings.frequency_penalty,
        }
        model = self.model or next(iter(self.models()), None)
        if model is not None:
            body["model"] = model
        if seed is not None:
            body["seed"] = seed
        sent_stops = [s for s in stop if len(s) <= MAX_SENT_STOP][:OPENAI_MAX_STOPS]
        if sent_stops:
            body["stop"] = sent_stops
        if ours:
            body.update(top_p_newline=settings.top_p_newline, allow_p=settings.allow_p, top_k=settings.top_k,
                        penalty_decay=settings.penalty_decay)
            if bans:
                body["ban"] = list(bans)
        elif settings.top_k:
            body["top_k"] = settings.top_k
        return body

    # ----- HTTP -----
    def _endpoint(self, path: str) -> str:
        return self.url + path

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None):
        """Send one request; (connection, response) once the status line and headers have come."""
        url = self._endpoint(path)
        kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        connection = kind(self.host, self.port, timeout=self.timeout)
        headers = {"User-Agent": f"ai-writer/{__version__}", "Accept": "text/event-stream, application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, self.base + path, body=data, headers=headers)
            return connection, connection.getresponse()
        except BaseException as exc:
            connection.close()
            if isinstance(exc, Exception):
                raise self._failure(url, exc) from None
            raise

    @contextlib.contextmanager
    def _reading(self, path: str):
        """Turns a failure while reading an answer into one BackendError line, without the API key."""
        try:
            yield
        except BackendError as exc:
            raise BackendError(self._scrub(str(exc))) from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._failure(self._endpoint(path), exc) from None

    def _failure(self, url: str, exc: Exception) -> BackendError:
        return BackendError(self._scrub(_failure_text(url, exc, self.timeout)))

    def _check_status(self, response, path: str) -> None:
        if 200 <= response.status < 300:
            return
        url = self._endpoint(path)
        try:
            raw = response.read(64 * 1024)
        except (OSError, http.client.HTTPException):
            raw = b""
        message = _error_message(raw)
        hint = {401: " (check the API key: --api-key-env)", 403: " (check the API key: --api-key-env)",
                404: " (is this an OpenAI-compatible server? give its address, e.g. http://host:8266)"}
        text = (f"the remote engine at {url} answered {response.status} {response.reason}"
                + (f": {message}" if message else "") + hint.get(response.status, ""))
        raise BackendError(self._scrub(text))

    def _scrub(self, text: str) -> str:
        """A message never holds the API key (a server may echo what it was sent)."""
        return text.replace(self.api_key, "***") if self.api_key else text


# ----- the answer -----

def _choices(response, url: str) -> Iterator[dict[str, Any]]:
    """Each choice the server sends, from an event stream, or from one JSON answer (a server that ignored
    `stream`); a failure reading it is a BackendError."""
    content_type = (response.getheader("Content-Type") or "").partition(";")[0].strip().lower()
    if content_type == "text/event-stream":
        for event in _events(response, url):
            yield from _event_choices(event, url)
    elif content_type == "application/json" or content_type.endswith("+json"):
        yield from _event_choices(_json_body(response, url), url)
    else:
        start = response.read(SHOWN)
        raise BackendError(f"the remote engine at {url} sent a body that is neither JSON nor server-sent events "
                           f"(Content-Type {content_type or 'missing'}): {_quoted(start)}")


def _events(response, url: str) -> Iterator[Any]:
    """The JSON data of each server-sent event, until `data: [DONE]` or the end of the stream."""
    data: list[str] = []
    while True:
        raw = response.readline(MAX_LINE + 1)
        if len(raw) > MAX_LINE:
            raise BackendError(f"the remote engine at {url} sent an event line longer than {MAX_LINE} bytes")
        if not raw or raw in (b"\n", b"\r\n"):  # end of an event (or of the stream)
            if data:
                payload = "\n".join(data)
                if payload.strip() == "[DONE]":
                    return
                try:
                    yield json.loads(payload)
                except ValueError:
                    raise BackendError(f"the remote engine at {url} sent an event that is not JSON: "
                                       f"{_quoted(payload)}") from None
                data = []
            if not raw:
                return
            continue
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise BackendError(f"the remote engine at {url} sent an event stream that is not UTF-8") from None
        name, colon, value = line.partition(":")
        if not name and colon:  # a comment (a keep-alive)
            continue
        if name not in ("data", "event", "id", "retry"):
            raise BackendError(f"the remote engine at {url} sent a line that is no server-sent event: {_quoted(line)}")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)


def _event_choices(event: Any, url: str) -> list[dict[str, Any]]:
    if not isinstance(event, dict):
        raise BackendError(f"the remote engine at {url} sent {_quoted(event)} where a completion was expected")
    if "error" in event:
        message = _error_message(json.dumps(event).encode())
        raise BackendError(f"the remote engine at {url} failed while writing: {message}")
    choices = event.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise BackendError(f"the remote engine at {url} sent an answer without choices: {_quoted(event)}")
    return choices


def _json_body(response, url: str) -> Any:
    raw = response.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise BackendError(f"the remote engine at {url} sent an answer longer than {MAX_BODY} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BackendError(f"the remote engine at {url} sent a body that is not JSON: {_quoted(raw)}") from None


def _error_message(raw: bytes) -> str:
    """The message of an error body: OpenAI's {"error": {"message"}}, or {"error": "..."}, {"detail"},
    {"message"}; else the start of the body."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _one_line(raw.decode("utf-8", "replace"))
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            error = error.get("message", error.get("detail", error))
        if isinstance(error, str):
            return _one_line(error)
        for key in ("detail", "message"):
            if isinstance(body.get(key), str):
                return _one_line(body[key])
    return _one_line(json.dumps(body, ensure_ascii=False))


def _failure_text(url: str, exc: Exception, timeout: float) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot reach the remote engine at {url}: connection refused (is the server running?)"
    if isinstance(exc, TimeoutError):  # socket.timeout too
        return f"the remote engine at {url} did not answer within {timeout:g} s"
    if isinstance(exc, socket.gaierror):
        return f"cannot reach the remote engine at {url}: the host name is not known ({exc.strerror})"
    if isinstance(exc, ssl.SSLError):
        return f"cannot talk to the remote engine at {url} over https: {exc.reason or exc}"
    if isinstance(exc, (ConnectionError, http.client.IncompleteRead, http.client.RemoteDisconnected)):
        return f"the connection to the remote engine at {url} broke: {type(exc).__name__}"
    if isinstance(exc, http.client.HTTPException):
        return f"the remote engine at {url} did not answer in HTTP: {type(exc).__name__} {_quoted(str(exc))}"
    return f"cannot reach the remote engine at {url}: {getattr(exc, 'strerror', None) or exc}"


# ----- cutting the text -----

def _settle(row: _Run, max_chars: int, stop: tuple[str, ...], bans: tuple[str, ...], *,
            finish: Any = None) -> str:
    """Settle a run after text arrived (`finish`: the server's finish_reason, if it ended the run): end it at
    the first stop string or banned phrase to complete within `max_chars` (cut just before it; a banned phrase
    may begin in the prompt, its `context`: the run then ends with no text), else at `max_chars`, else where
    the server ended it; return the text now safe to show."""
    seen, offset = row.context + row.text, len(row.context)
    end = offset + min(len(row.text), max_chars)
    found = None  # (end, start, reason) of the first needle to complete, in `seen`
    for needle, reason in [*((s, "stop") for s in stop), *((b, "ban") for b in bans)]:
        earliest = offset if reason == "stop" else 0  # a stop string lies in the run's own text
        start = seen.find(needle, max(earliest, offset + row.scanned - len(needle) + 1), end)
        if start >= 0:
            candidate = (start + len(needle), start, reason)
            found = candidate if found is None or candidate[:2] < found[:2] else found
    row.scanned = end - offset
    if found is not None:
        row.text, row.done, row.finish_reason = row.text[: max(found[1] - offset, 0)], True, found[2]
    elif len(row.text) >= max_chars:
        row.text, row.done, row.finish_reason = row.text[:max_chars], True, "length"
    elif finish is not None:
        row.done, row.finish_reason = True, "length" if finish == "length" else "stop"
    held = 0 if row.done else min(len(row.text), _held_back(row.context + row.text, stop + bans))
    safe = len(row.text) - held
    chunk = row.text[row.sent : safe]
    row.sent = max(row.sent, safe)
    return chunk


def _held_back(text: str, needles: tuple[str, ...]) -> int:
    """The length of the longest end of `text` that begins a needle (it may still become one)."""
    for k in range(min(len(text), max((len(n) for n in needles), default=1) - 1), 0, -1):
        tail = text[-k:]
        if any(n.startswith(tail) for n in needles):
            return k
    return 0


# ----- the address -----

def _parse_url(url: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port, base path ending in /v1) of a server address; a BackendError for anything else."""
    if not isinstance(url, str) or not url.strip():
        raise BackendError("the remote engine's URL is empty; give one like http://host:8266")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        suggestion = f"; did you mean http://{url}?" if "://" not in url else ""
        raise BackendError(f"the remote engine's URL must start with http:// or https://, got {_quoted(url)}"
                           + suggestion)
    if parts.username is not None or parts.password is not None:
        raise BackendError("the remote engine's URL must not hold a user name or password; put the API key in an "
                           "environment variable and name it with --api-key-env")
    if parts.query or parts.fragment:
        raise BackendError(f"the remote engine's URL must not hold a query or fragment, got {_quoted(url)}")
    try:
        port = parts.port
    except ValueError:
        raise BackendError(f"the remote engine's URL has a bad port: {_quoted(url)}") from None
    if not parts.hostname:
        raise BackendError(f"the remote engine's URL names no host: {_quoted(url)}")
    path = parts.path.rstrip("/")
    for suffix in ("/completions", "/models"):
        path = path.removesuffix(suffix) if path.endswith("/v1" + suffix) else path
    if not path.endswith("/v1"):
        path += "/v1"
    return parts.scheme.lower(), parts.hostname, port, path


def _netloc(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host
    return host if port is None else f"{host}:{port}"


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def _quoted(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False)
    return repr(_one_line(value)) if value.strip() else "(nothing)"
