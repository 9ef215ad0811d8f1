"""Fuzzing the HTTP server: hostile bodies and raw requests against a real server on a loopback port.

Whatever arrives, the answer is never a 5xx, every error is the one JSON shape, the server never
hangs on a request it has been sent in full, and the inference thread keeps answering a small
request made alongside the fuzz. The default runs are bounded (a few seconds each); the `slow`
variants run many more examples.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from server_helpers import request, running_server

QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REQUEST_TIMEOUT = 1.5  # the fuzzed server's deadline for a whole request


@pytest.fixture(scope="module")
def server(tiny_model, one_torch_thread):
    with running_server(tiny_model, max_body=64 * 1024, request_timeout=REQUEST_TIMEOUT, read_timeout=5,
                        token=None) as server:
        prober = Prober(server)
        prober.start()
        yield server
        prober.finish()


class Prober(threading.Thread):
    """A small generation request every half second while the fuzz runs: each must complete quickly."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.stopping, self.times, self.failures = server, threading.Event(), [], []

    def run(self):
        while not self.stopping.wait(0.5):
            began = time.monotonic()
            try:
                status, _, body = request(self.server, "POST", "/v1/completions",
                                          {"prompt": "这是", "max_tokens": 2, "seed": 1}, timeout=30)
                if status != 200 or len(json.loads(body)["choices"][0]["text"]) != 2:
                    self.failures.append((status, body[:200]))
            except OSError as exc:
                self.failures.append(repr(exc))
            self.times.append(time.monotonic() - began)

    def finish(self):
        self.stopping.set()
        self.join(60)
        assert not self.failures, self.failures
        assert self.times and max(self.times) < 10, self.times


def exchange(server, raw: bytes, method: str = "GET") -> tuple[int | None, dict, bytes]:
    """Send raw bytes; (status, headers, body) of the first answer, or (None, {}, b"") if the server
    closed the connection without one (a request it never got in full). Fails if nothing happens."""
    began = time.monotonic()
    with socket.create_connection(server.server_address[:2], timeout=REQUEST_TIMEOUT + 10) as sock:
        try:
            sock.sendall(raw)
        except OSError:  # the server answered (and closed) before taking it all
            pass
        response = http.client.HTTPResponse(sock, method=method if method in ("HEAD", "GET", "POST") else "GET")
        try:
            response.begin()
            body = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, http.client.IncompleteRead):
            assert time.monotonic() - began < REQUEST_TIMEOUT + 5
            return None, {}, b""
        return response.status, dict(response.getheaders()), body


def check_answer(status, headers, body, method="GET"):
    if status is None:
        return
    assert 100 <= status < 500, (status, body[:300])
    if status >= 400 and method != "HEAD":
        assert headers.get("Content-Type", "").startswith("application/json"), headers
        error = json.loads(body)
        assert set(error) == {"error"} and set(error["error"]) == {"message", "type", "param"}, error
        assert isinstance(error["error"]["message"], str) and error["error"]["message"]


# -- hostile values and bodies --------------------------------------------------------------------------

any_text = st.text(st.characters(blacklist_categories=()), max_size=20)  # lone surrogates too
small_ints = st.integers(-3, 12)
huge_ints = st.one_of(st.integers(min_value=2**53), st.integers(max_value=-(2**53)),
                      st.sampled_from([2**63, 2**63 - 1, -(2**63), 10**400, -(10**4000)]))
scalars = st.one_of(st.none(), st.booleans(), small_ints, huge_ints, st.floats(), any_text,
                    st.sampled_from(["", "\ud800", "\x00", "剑" * 40, "1e309", "NaN"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    any_text, inner, max_size=4), max_leaves=8)
numbers = st.one_of(small_ints, huge_ints, st.floats(), st.floats(0, 1), values)
stops = st.one_of(st.text(max_size=300), st.lists(st.text(max_size=300), max_size=6), values)
SAMPLING = ("temperature", "top_p", "top_p_newline", "allow_p", "top_k", "presence_penalty", "frequency_penalty",
            "penalty_decay")

lore_entries = st.lists(st.fixed_dictionaries({}, optional={
    "keys": st.one_of(st.lists(any_text, max_size=3), any_text, values), "key": st.one_of(any_text, values),
    "text": st.one_of(any_text, values), "content": st.one_of(any_text, values), "secondary": values,
    "keysecondary": values, "constant": values, "disable": values, "enabled": values, "selective": values}), max_size=3)
STEERING = {"memory": st.one_of(any_text, values), "note": st.one_of(any_text, values),
            "lore": st.one_of(lore_entries, st.fixed_dictionaries({"entries": st.one_of(
                lore_entries, st.dictionaries(any_text, values, max_size=3), values)}), values),
            "lore_scan": numbers, "ban": st.one_of(st.lists(any_text, max_size=4), values),
            "loop_guard": st.one_of(st.booleans(), values)}

continue_bodies = st.fixed_dictionaries({}, optional={
    "text": st.one_of(st.text(max_size=60), values),
    "settings": st.one_of(st.fixed_dictionaries({}, optional={
        "length": numbers, "seed": numbers, "raw": st.one_of(st.booleans(), values), "stop": stops,
        **{name: numbers for name in SAMPLING}}), values),
    "variants": numbers,
    "stream": st.one_of(st.booleans(), values),
    "colour": values,
    **STEERING,
})
completion_bodies = st.fixed_dictionaries({}, optional={
    "prompt": st.one_of(st.text(max_size=60), st.lists(st.text(max_size=20), max_size=20), values),
    "max_tokens": numbers, "n": numbers, "seed": numbers, "stop": stops, "stream": st.one_of(st.booleans(), values),
    "model": values, "echo": values, "logprobs": values, "best_of": values, "suffix": values, "logit_bias": values,
    **{name: numbers for name in SAMPLING}, **STEERING})


def raw_post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (path.encode(), len(body), extra)) + body


def fuzz_json_bodies(server, path, body, ascii):
    data = json.dumps(body, ensure_ascii=ascii).encode("utf-8", "surrogatepass")
    check_answer(*exchange(server, raw_post(path, data), "POST"))


def fuzz_raw_bodies(server, path, body):
    check_answer(*exchange(server, raw_post(path, body), "POST"))


json_fuzz = given(path=st.sampled_from(["/api/continue", "/v1/completions"]), body=st.one_of(
    continue_bodies, completion_bodies, values), ascii=st.booleans())
raw_body_fuzz = given(path=st.sampled_from(["/api/continue", "/v1/completions"]), body=st.one_of(
    st.binary(max_size=200),
    st.builds(lambda field, digits: b'{"prompt":"x","text":"x","%s":%s}' % (field.encode(), b"9" * digits),
              st.sampled_from(["max_tokens", "n", "variants", "seed", "temperature", "top_k"]),
              st.integers(1, 6000)),
    st.builds(lambda depth: b"[" * depth + b"]" * depth, st.integers(1, 60_000)),
    st.builds(lambda text: json.dumps({"prompt": text}).encode(), st.text(max_size=50))))


@QUICK
@json_fuzz
def test_fuzz_json_bodies(server, path, body, ascii):
    fuzz_json_bodies(server, path, body, ascii)


@QUICK
@raw_body_fuzz
def test_fuzz_raw_bodies(server, path, body):
    fuzz_raw_bodies(server, path, body)


# -- hostile request lines and headers --------------------------------------------------------------------

header_text = st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=40)
methods = st.one_of(st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH", "TRACE",
                                     "CONNECT", "get", "BREW"]), st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", max_size=8))
targets = st.one_of(st.sampled_from(["/", "/healthz", "/api/info", "/v1/models", "/v1/completions", "/api/continue",
                                     "/index.html", "/../secret", "/%2e%2e/x", "*", "http://evil.example/",
                                     "/" + "a" * 5000, "/%00", "/%ff%fe", "/?q=1#x"]),
                    st.text(st.characters(min_codepoint=33, max_codepoint=255), max_size=60))
versions = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1x", "HTTP/1.10", "", "http/1.1"])
header_names = st.one_of(st.sampled_from(["Host", "Content-Length", "Content-Type", "Transfer-Encoding", "Connection",
                                          "Authorization", "Origin", "Expect", "Access-Control-Request-Method"]),
                         st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=":"),
                                 min_size=1, max_size=12))
header_values = st.one_of(header_text, st.sampled_from([
    "+14", "1_4", "-1", "0", "14", " 14", "99999999999999999999999", "١٤", "14, 14", "chunked", "gzip, chunked",
    "application/json", "text/plain", "application/json; charset=latin-1", "evil.example", "127.0.0.1:1",
    "[::1]", "localhost:99999", "Bearer x", "100-continue", "close", "keep-alive", "x" * 9000]))
headers = st.lists(st.tuples(header_names, header_values), max_size=8)


def encode_request(method, target, version, host, header_list, body):
    line = f"{method} {target} {version}".rstrip() if version else f"{method} {target}"
    lines = [line] + ([f"Host: {host}"] if host is not None else []) + [f"{n}: {v}" for n, v in header_list]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body


def fuzz_requests(server, method, target, version, host, header_list, body):
    raw = encode_request(method, target, version, host, header_list, body)
    check_answer(*exchange(server, raw, method), method=method)


request_fuzz = given(method=methods, target=targets, version=versions,
                     host=st.one_of(st.just("127.0.0.1"), st.none(), header_text),
                     header_list=headers, body=st.one_of(st.just(b""), st.binary(max_size=64),
                                                         st.just(b'{"prompt":"x","max_tokens":2}')))


@QUICK
@request_fuzz
def test_fuzz_request_lines_and_headers(server, method, target, version, host, header_list, body):
    fuzz_requests(server, method, target, version, host, header_list, body)


# -- the long runs -----------------------------------------------------------------------------------------


@pytest.mark.slow
@LONG
@json_fuzz
def test_fuzz_json_bodies_long(server, path, body, ascii):
    fuzz_json_bodies(server, path, body, ascii)


@pytest.mark.slow
@LONG
@raw_body_fuzz
def test_fuzz_raw_bodies_long(server, path, body):
    fuzz_raw_bodies(server, path, body)


@pytest.mark.slow
@LONG
@request_fuzz
def test_fuzz_request_lines_and_headers_long(server, method, target, version, host, header_list, body):
    fuzz_requests(server, method, target, version, host, header_list, body)


def test_the_server_still_writes_after_the_fuzz(server):
    status, _, body = request(server, "POST", "/v1/completions", {"prompt": "这是", "max_tokens": 3}, timeout=10)
    assert status == 200 and len(json.loads(body)["choices"][0]["text"]) == 3
