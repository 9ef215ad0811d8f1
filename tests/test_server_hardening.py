"""The server against hostile requests (issue 15, items 1-5): one regression test per finding."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st
from server_helpers import json_request, raw_exchange, request, running_server

from ai_writer.generation.decode import Row, settle_row
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.server.http import ServerSettings
from ai_writer.server.requests import MAX_STOP_CHARS

OPENING = "林黛玉没想到，这一剑竟如此精妙。"


@pytest.fixture(scope="module")
def server(tiny_model, one_torch_thread):
    with running_server(tiny_model) as server:
        yield server


def assert_error(answer, status, param=None):
    code, _, body = answer
    body = json.loads(body) if isinstance(body, bytes) else body
    assert code == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param
    return body["error"]["message"]


def head_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def post_raw(server, head: bytes, body: bytes) -> bytes:
    return raw_exchange(server, b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                                b"\r\n" + head + b"\r\n" + body)


# -- 1. stop strings: bounded in the request, matched incrementally ------------------------------------


def test_stop_strings_are_bounded_and_the_limit_named(server):
    long = "x" * (MAX_STOP_CHARS + 1)
    message = assert_error(json_request(server, "POST", "/v1/completions",
                                        {"prompt": "林黛玉", "max_tokens": 20, "stop": [long]}), 422, "stop")
    assert str(MAX_STOP_CHARS) in message
    assert_error(json_request(server, "POST", "/api/continue",
                              {"text": OPENING, "settings": {"stop": long}, "stream": False}), 422, "settings.stop")
    ok = json_request(server, "POST", "/v1/completions", {"prompt": "林黛玉", "max_tokens": 5,
                                                          "stop": ["x" * MAX_STOP_CHARS] * 4})
    assert ok[0] == 200


def settle_in_chunks(text: str, chunks: list[int], stops: tuple[str, ...], max_chars: int):
    """Feed `text` to a row in pieces of the given sizes; check what is shown after each piece."""
    row = Row(0, SamplerSettings(), None, max_chars, stops, None, None, 0)
    shown, at = "", 0
    for size in [*chunks, len(text)]:
        row.text += text[at : at + size]
        at += size
        shown += settle_row(row)
        assert shown == row.text[: row.sent]
        if row.done:
            break
        held = max((n for s in stops for n in range(1, len(s)) if row.text.endswith(s[:n])), default=0)
        assert shown == row.text[: len(row.text) - held]  # everything that cannot begin a stop string
    return row, shown


def reference_cut(text: str, stops: tuple[str, ...], max_chars: int) -> tuple[str, str | None]:
    """Read one character at a time: cut before the first stop string completed (the earliest-starting of
    those completed by the same character), or at max_chars."""
    for end in range(1, min(len(text), max_chars) + 1):
        starts = [end - len(s) for s in stops if text[:end].endswith(s)]
        if starts:
            return text[: min(starts)], "stop"
    return text[:max_chars], ("length" if len(text) >= max_chars else None)


@settings(max_examples=300, deadline=None)
@given(text=st.text("ab\n", max_size=40), stops=st.lists(st.text("ab\n", min_size=1, max_size=5), max_size=4),
       chunks=st.lists(st.integers(0, 6), max_size=20), max_chars=st.integers(1, 45))
def test_settle_row_matches_a_character_at_a_time_reading(text, stops, chunks, max_chars):
    stops = tuple(stops)
    row, shown = settle_in_chunks(text, chunks, stops, max_chars)
    expected, reason = reference_cut(text, stops, max_chars)
    if reason is None:
        assert not row.done and row.text == text
    else:
        assert row.done and row.text == expected == shown and row.finish_reason == reason
    assert not any(s in shown for s in stops)  # a stop string never leaks


def test_a_long_stop_string_costs_little_per_character():
    stop = "a" * (MAX_STOP_CHARS - 1) + "b"  # every new "a" begins it again: the old check was quadratic
    row = Row(0, SamplerSettings(), None, 30_000, (stop, "c" * MAX_STOP_CHARS), None, None, 0)
    began = time.perf_counter()
    for _ in range(20_000):
        row.text += "a"
        settle_row(row)
    assert time.perf_counter() - began < 2.0
    assert not row.done and row.sent == 20_000 - (MAX_STOP_CHARS - 1)
    row.text += "b"
    settle_row(row)
    assert row.done and row.finish_reason == "stop" and len(row.text) == 20_000 - (MAX_STOP_CHARS - 1)


# -- 2. DNS rebinding: Host names and Content-Type ------------------------------------------------------


def test_only_the_servers_own_host_names_are_answered(server):
    port = server.server_address[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.:80x", "[::2]"):
        message = assert_error(json_request(server, "GET", "/api/info", headers={"Host": host}), 403)
        assert "--allow-host" in message
    assert_error(json_request(server, "GET", "/", headers={"Host": "evil.example"}), 403)
    for host in (f"127.0.0.1:{port}", "localhost", f"LOCALHOST:{port}", f"[::1]:{port}", "127.0.0.1"):
        assert request(server, "GET", "/api/info", headers={"Host": host})[0] == 200, host


def test_allowed_host_names_from_the_command_line(tiny_model, one_torch_thread):
    from ai_writer.cli.serve import allowed_host_names

    assert allowed_host_names("127.0.0.1", ()) == {"127.0.0.1", "localhost", "[::1]"}
    assert allowed_host_names("127.0.0.1", ("Writer.LAN",)) >= {"writer.lan", "localhost"}
    assert allowed_host_names("192.168.1.5", ()) >= {"192.168.1.5", "127.0.0.1"}
    assert allowed_host_names("0.0.0.0", ()) is None  # every address: the token guards it
    with running_server(tiny_model, allowed_hosts=allowed_host_names("127.0.0.1", ("writer.lan",))) as server:
        assert request(server, "GET", "/api/info", headers={"Host": "writer.lan:8266"})[0] == 200
        assert request(server, "GET", "/api/info", headers={"Host": "other.lan"})[0] == 403


def test_post_bodies_must_be_json(server):
    body = json.dumps({"prompt": "这是", "max_tokens": 2}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                         "application/jsonx", ""):
        assert_error(request(server, "POST", "/v1/completions", body, {"Content-Type": content_type}), 415)
    assert head_and_body(post_raw(server, b"Content-Length: %d\r\n" % len(body), body))[0] == 200
    assert request(server, "POST", "/v1/completions", body,
                   {"Content-Type": "Application/JSON; charset=utf-8"})[0] == 200
    without = raw_exchange(server, b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n"
                           % len(body) + body)
    assert head_and_body(without)[0] == 415


# -- 3. slow-loris: a deadline for the whole request; stuck connections make way -----------------------


def test_a_trickling_request_runs_out_of_time_and_makes_way(tiny_model, one_torch_thread):
    with running_server(tiny_model, max_connections=4, request_timeout=4.0) as server:
        stop = threading.Event()
        sockets = [socket.create_connection(server.server_address[:2], timeout=10) for _ in range(4)]
        closed = [None] * 4

        def trickle(i, sock):
            began = time.monotonic()
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                while not stop.is_set():  # one header line every 0.2 s: each read is quick, the whole is not
                    sock.sendall(b"X-Slow: 1\r\n")
                    time.sleep(0.2)
                    sock.setblocking(False)
                    try:
                        if sock.recv(65536) == b"":
                            break
                    except BlockingIOError:
                        pass
                    finally:
                        sock.setblocking(True)
            except OSError:
                pass
            closed[i] = time.monotonic() - began

        threads = [threading.Thread(target=trickle, args=(i, s), daemon=True) for i, s in enumerate(sockets)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)  # all connections taken, by clients waiting longer than a second for their request
        began = time.monotonic()
        assert json_request(server, "GET", "/healthz")[::2] == (200, {"status": "ok"})
        assert time.monotonic() - began < 5
        for thread in threads:
            thread.join(10)
        stop.set()
        for sock in sockets:
            sock.close()
        assert all(seconds is not None and seconds < 9 for seconds in closed), closed


def test_a_slow_body_runs_out_of_time(tiny_model, one_torch_thread):
    with running_server(tiny_model, request_timeout=1.0) as server:
        with socket.create_connection(server.server_address[:2], timeout=10) as sock:
            sock.sendall(b"POST /api/continue HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n")
            began = time.monotonic()
            try:
                while time.monotonic() - began < 5:
                    sock.sendall(b" ")
                    time.sleep(0.1)
            except OSError:
                pass
            assert time.monotonic() - began < 3


# -- 4. a client waiting for one JSON answer that goes away stops its generation -----------------------


def test_a_non_stream_request_whose_client_left_is_cancelled(server):
    body = json.dumps({"text": OPENING, "settings": {"length": 10_000}, "stream": False}).encode()
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(b"POST /api/continue HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        deadline = time.monotonic() + 10
        while server.worker.steps < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.worker.active_rows
    deadline = time.monotonic() + 3
    while server.worker.active_rows and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.worker.active_rows == 0
    steps = server.worker.steps
    time.sleep(0.3)
    assert server.worker.steps == steps


# -- 5. the 500s and stray errors ------------------------------------------------------------------------


def test_huge_numbers_are_client_errors(server):
    body = b'{"prompt":"x","max_tokens":' + b"9" * 5000 + b"}"  # more digits than Python reads
    assert head_and_body(post_raw(server, b"Content-Length: %d\r\n" % len(body), body))[0] == 400
    for field in (b"max_tokens", b"n", b"seed", b"temperature", b"top_k", b"top_p"):
        body = b'{"prompt":"x","%s":%s}' % (field, b"9" * 400)
        status, payload = head_and_body(post_raw(server, b"Content-Length: %d\r\n" % len(body), body))
        assert status == 422 and json.loads(payload)["error"]["param"] == field.decode()
    body = b'{"text":"x","settings":{"temperature":-%s}}' % (b"1" * 4000)
    answer = raw_exchange(server, b"POST /api/continue HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                                  b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert head_and_body(answer)[0] == 422


def test_a_very_long_file_name_is_not_found(server):
    assert_error(json_request(server, "GET", "/" + "a" * 5000), 404)
    assert_error(json_request(server, "GET", "/" + "/".join(["b" * 250] * 30)), 404)


def test_head_answers_carry_no_body(server):
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    for path in ("/api/info", "/", "/nothing.html", "/v1/completions"):
        connection.request("HEAD", path)
        response = connection.getresponse()
        assert response.read() == b"" and int(response.headers["Content-Length"]) > 0
        connection.request("GET", "/healthz")  # the same connection: a stray body would be read as this answer
        response = connection.getresponse()
        assert json.loads(response.read()) == {"status": "ok"}, path
    connection.close()
    answer = raw_exchange(server, b"HEAD /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n")


def test_batch_limit_holds_per_request_and_in_the_worker(tiny_model, one_torch_thread):
    with running_server(tiny_model, max_batch=4, start_worker=False) as server:
        assert_error(json_request(server, "POST", "/v1/completions", {"prompt": ["a", "b"], "n": 3}), 422, "n")
        assert_error(json_request(server, "POST", "/api/continue",
                                  {"text": OPENING, "variants": 5, "stream": False}), 422, "variants")
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(json_request(
            server, "POST", "/v1/completions", {"prompt": ["这是", "三体"], "n": 1 + i % 2, "max_tokens": 6})))
            for i in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while server.worker.waiting < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.worker.start()
        for thread in threads:
            thread.join(60)
        assert [a[0] for a in answers] == [200] * 4
        assert server.worker.max_rows_seen <= 4


@pytest.mark.parametrize("lengths", [[b"+14"], [b"1_4"], [b" 14 ", b"15"], [b"14", b"140"], [b"0x0e"],
                                     [b"\xd9\xa1\xd9\xa4"], [b"1" * 30], [b"14, 14"]])
def test_content_length_is_one_plain_number(server, lengths):
    body = b'{"prompt":"x"}'
    head = b"".join(b"Content-Length: %s\r\n" % value for value in lengths)
    status, payload = head_and_body(post_raw(server, head, body))
    assert status in (400, 413) and json.loads(payload)["error"]["message"]


def test_repeated_equal_content_lengths_are_one(server):
    body = b'{"prompt":"x","max_tokens":2}'
    assert head_and_body(post_raw(server, b"Content-Length: %d\r\nContent-Length: %d\r\n" % (len(body), len(body)),
                                  body))[0] == 200


@pytest.mark.parametrize("token", [" s3cret", "s3cret\n", "秘密", "tab\there", ""])
def test_a_token_that_cannot_be_sent_is_refused(token, tiny_model):
    with pytest.raises(ValueError):
        ServerSettings(static_root=tiny_model.parent, model_id="m", info={}, token=token or " ")
    result = subprocess.run([sys.executable, "-m", "ai_writer", "serve", "--token", token, "--model", str(tiny_model)],
                            capture_output=True, text=True, timeout=60, env={"PATH": "", "HOME": "/nonexistent"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--token" in result.stderr


def test_a_client_resetting_the_connection_leaves_no_traceback(server, capsys):
    for partial in (b"GET /healthz HTTP/1.1\r\nHost: 127", b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"):
        sock = socket.create_connection(server.server_address[:2], timeout=5)
        sock.sendall(partial)
        time.sleep(0.1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        sock.close()
    time.sleep(0.3)
    assert request(server, "GET", "/healthz")[0] == 200
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Error" not in captured.err


@pytest.mark.parametrize("path, body", [
    ("/api/continue", b'{"text": "x", "\\ud800": 1}'),
    ("/v1/completions", b'{"prompt": "\\udfff\\u5251", "max_tokens": 2}'),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": 2, "model": "\\ud800"}'),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": 2, "stop": ["\\ud800"], "stream": true}'),
])
def test_lone_surrogates_in_json_are_answered(server, path, body):
    answer = raw_exchange(server, b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                  b"Connection: close\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(body)) + body)
    status, payload = head_and_body(answer)
    assert status in (200, 400, 422), payload
    payload.decode("utf-8")  # what the server writes is always UTF-8
