"""The HTTP server over a real socket: endpoints, streaming, OpenAI shapes, errors, limits, security."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from server_helpers import json_request, raw_exchange, request, running_server, sse_events

from ai_writer.text.cleanup import clean_opening
from ai_writer.generation.generator import Generator
from ai_writer.backends.open import load_model
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.server.requests import continue_spec

OPENING = "林黛玉没想到，这一剑竟如此精妙。"
POST_HEAD = b"POST /api/continue HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def server(tiny_model, one_torch_thread):
    with running_server(tiny_model) as server:
        yield server


def continue_body(length=20, variants=1, stream=False, **settings):
    return {"text": OPENING, "settings": {"length": length, **settings}, "variants": variants, "stream": stream}


# -- the endpoints -------------------------------------------------------------------------------


def test_health_info_and_models(server):
    assert json_request(server, "GET", "/healthz")[::2] == (200, {"status": "ok"})
    status, _, info = json_request(server, "GET", "/api/info")
    assert status == 200 and info["model"] == "tiny.pth"
    assert info["defaults"]["top_p"] == SamplerSettings().top_p and info["defaults"]["length"] == 200
    status, _, models = json_request(server, "GET", "/v1/models")
    assert status == 200 and models["object"] == "list" and models["data"][0]["id"] == "tiny"


def test_continue_json_matches_the_generator_with_the_same_seed(server, tiny_model):
    status, headers, body = json_request(server, "POST", "/api/continue", continue_body(length=25, variants=2, seed=11))
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    texts = [v["text"] for v in body["variants"]]
    assert [v["index"] for v in body["variants"]] == [0, 1] and all(len(t) == 25 for t in texts)
    assert body["seed"] == 11 and body["completion_tokens"] == 50

    loaded = load_model(tiny_model, backend="torch-cpu")
    generator = Generator(loaded.backend, loaded.tokenizer, SamplerSettings())
    expected = [""] * 2
    start = generator.prefill(clean_opening(OPENING))
    for chunk in generator.stream(start, max_chars=25, runs=2, rng=np.random.default_rng(11)):
        expected[chunk.run] += chunk.text
    assert texts == expected
    assert json_request(server, "POST", "/api/continue", continue_body(length=25, variants=2, seed=11))[2][
        "variants"] == body["variants"]


def test_continue_stream_framing(server):
    status, headers, payload = request(server, "POST", "/api/continue", continue_body(length=30, variants=2,
                                                                                         stream=True, seed=5))
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(payload)
    names = [name for name, _ in events]
    assert names[-1] == "done" and names.count("finish") == 2 and set(names) == {"chunk", "finish", "done"}
    streamed = ["", ""]
    for name, data in events:
        if name == "chunk":
            chunk = json.loads(data)
            streamed[chunk["variant"]] += chunk["text"]
    done = json.loads(events[-1][1])
    assert streamed == [v["text"] for v in done["variants"]] and all(len(t) == 30 for t in streamed)
    assert done["prompt_tokens"] == len(clean_opening(OPENING))


def test_rewrite_and_continue_reuse_the_cached_state(server):
    text = "剑竟如此精妙，众人惊。"
    first = json_request(server, "POST", "/api/continue", {"text": text, "settings": {"length": 12}, "stream": False})[2]
    again = json_request(server, "POST", "/api/continue", {"text": text, "settings": {"length": 12}, "stream": False})[2]
    assert again["reused_tokens"] == again["prompt_tokens"]  # a rewrite reads nothing again
    longer = text + first["variants"][0]["text"]
    follow = json_request(server, "POST", "/api/continue", {"text": longer, "settings": {"length": 5}, "stream": False})[2]
    # the page's text as the server reads it: cleaned up, a line break at its end kept (a new paragraph)
    assert follow["prompt_tokens"] == len(clean_opening(longer)) + longer.endswith("\n")
    assert follow["reused_tokens"] == follow["prompt_tokens"] - 1  # all but the last written character


@pytest.mark.parametrize("text, prompt", [("甲乙。", "\n甲乙。"), ("甲乙。\n", "\n甲乙。\n"), ("甲\n\n乙 \n　", "\n甲\n乙\n"),
                                          ("甲乙。\n  ", "\n甲乙。\n")])
def test_a_text_ending_in_a_line_break_asks_for_a_new_paragraph(text, prompt):
    spec = continue_spec({"text": text}, SamplerSettings(), 10, 32)
    assert spec.prompts == (prompt,)


def test_openai_completions(server):
    body = {"model": "whatever", "prompt": ["这是一颗", "三体舰队"], "max_tokens": 8, "n": 2, "seed": 3,
            "temperature": 0.8, "top_p_newline": 0.5, "allow_p": 0.02}
    status, _, answer = json_request(server, "POST", "/v1/completions", body)
    assert status == 200 and answer["object"] == "text_completion" and answer["id"].startswith("cmpl-")
    assert answer["model"] == "whatever" and isinstance(answer["created"], int)
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2, 3]
    assert all(len(c["text"]) == 8 and c["finish_reason"] == "length" and c["logprobs"] is None
               for c in answer["choices"])
    assert answer["usage"] == {"prompt_tokens": 8, "completion_tokens": 32, "total_tokens": 40}


def test_openai_stop_string(server):
    plain = json_request(server, "POST", "/v1/completions", {"prompt": OPENING, "max_tokens": 30, "seed": 9})[2]
    text = plain["choices"][0]["text"]
    stop = text[10:12]
    stopped = json_request(server, "POST", "/v1/completions",
                           {"prompt": OPENING, "max_tokens": 30, "seed": 9, "stop": [stop, "never here"]})[2]
    choice = stopped["choices"][0]
    assert choice["text"] == text[: text.find(stop)] and choice["finish_reason"] == "stop"


def test_openai_stream(server):
    status, headers, payload = request(server, "POST", "/v1/completions",
                                       {"prompt": OPENING, "max_tokens": 12, "n": 2, "stream": True, "seed": 4})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(payload)
    assert all(name is None for name, _ in events) and events[-1][1] == "[DONE]"
    texts, reasons = ["", ""], [None, None]
    for _, data in events[:-1]:
        chunk = json.loads(data)
        assert chunk["object"] == "text_completion" and len(chunk["choices"]) == 1
        choice = chunk["choices"][0]
        texts[choice["index"]] += choice["text"]
        reasons[choice["index"]] = choice["finish_reason"] or reasons[choice["index"]]
    assert reasons == ["length", "length"] and all(len(t) == 12 for t in texts)


# -- errors: one JSON shape, the right status, never a 500 ------------------------------------------


def assert_error(answer, status, param=None):
    code, _, body = answer
    assert code == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param


@pytest.mark.parametrize("payload, status, param", [
    (b"{not json", 400, None),
    (b"\xff\xfe", 400, None),
    (b"[1, 2]", 400, None),
    (b"null", 400, None),
    (b"[" * 100_000 + b"]" * 100_000, 400, None),
    (json.dumps({"text": 5}).encode(), 400, "text"),
    (json.dumps({"settings": {}}).encode(), 400, "text"),
    (json.dumps({"text": "x", "settings": []}).encode(), 400, "settings"),
    (json.dumps({"text": "x", "variants": "2"}).encode(), 400, "variants"),
    (json.dumps({"text": "x", "variants": 1.5}).encode(), 400, "variants"),
    (json.dumps({"text": "x", "colour": "red"}).encode(), 400, "colour"),
    (json.dumps({"text": "x", "settings": {"top_p": "high"}}).encode(), 400, "settings.top_p"),
    (json.dumps({"text": "x", "settings": {"raw": 1}}).encode(), 400, "settings.raw"),
    (json.dumps({"text": "  \n "}).encode(), 422, "text"),
    (json.dumps({"text": "x", "settings": {"top_p": 2}}).encode(), 422, "settings.top_p"),
    (json.dumps({"text": "x", "settings": {"temperature": -1}}).encode(), 422, "settings.temperature"),
    (b'{"text": "x", "settings": {"allow_p": NaN}}', 422, "settings.allow_p"),
    (json.dumps({"text": "x", "settings": {"length": 0}}).encode(), 422, "settings.length"),
    (json.dumps({"text": "x", "variants": 99}).encode(), 422, "variants"),
])
def test_continue_rejects_bad_bodies(server, payload, status, param):
    code, headers, body = request(server, "POST", "/api/continue", payload,
                                  {"Content-Type": "application/json"})
    assert_error((code, headers, json.loads(body)), status, param)


@pytest.mark.parametrize("body, status, param", [
    ({}, 400, "prompt"),
    ({"prompt": 3}, 400, "prompt"),
    ({"prompt": ["a", 3]}, 400, "prompt"),
    ({"prompt": ""}, 422, "prompt"),
    ({"prompt": "这是", "max_tokens": 0}, 422, "max_tokens"),
    ({"prompt": "这是", "n": 0}, 422, "n"),
    ({"prompt": "这是", "presence_penalty": -1}, 422, "presence_penalty"),
    ({"prompt": "这是", "stop": 5}, 400, "stop"),
    ({"prompt": "这是", "stop": ["a", "b", "c", "d", "e"]}, 422, "stop"),
    ({"prompt": "这是", "echo": True}, 422, "echo"),
    ({"prompt": "这是", "logprobs": 5}, 422, "logprobs"),
    ({"prompt": "这是", "stream": "yes"}, 400, "stream"),
])
def test_completions_rejects_bad_bodies(server, body, status, param):
    assert_error(json_request(server, "POST", "/v1/completions", body), status, param)


def test_unknown_paths_and_methods(server):
    assert_error(json_request(server, "GET", "/v1/chat/nothing"), 404)
    assert_error(json_request(server, "POST", "/nowhere", {}), 404)
    code, headers, body = json_request(server, "GET", "/v1/completions")
    assert_error((code, headers, body), 405)
    assert headers["Allow"] == "POST"
    assert_error(json_request(server, "DELETE", "/api/continue"), 405)
    assert_error(json_request(server, "PUT", "/healthz"), 405)


def test_body_limits_and_framing(tiny_model, one_torch_thread):
    with running_server(tiny_model, max_body=2048) as server:
        big = json.dumps({"text": "剑" * 3000}).encode()
        assert_error(json_request(server, "POST", "/api/continue", big), 413)
        answer = raw_exchange(server, POST_HEAD + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 411") and b'"error"' in answer
        answer = raw_exchange(server, POST_HEAD + b"Content-Length: -5\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400")
        answer = raw_exchange(server, POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
                                      b"5\r\nhello\r\n0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 411")
        many = b"".join(b"X-H%d: 1\r\n" % i for i in range(150))
        answer = raw_exchange(server, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431") and b'"error"' in answer
        answer = raw_exchange(server, b"GARBAGE\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400") and b'"error"' in answer


def test_slow_client_is_cut_off(tiny_model, one_torch_thread):
    with running_server(tiny_model, read_timeout=0.5) as server:
        with socket.create_connection(server.server_address[:2], timeout=5) as sock:
            sock.sendall(POST_HEAD + b"Content-Length: 100\r\n\r\n{\"te")
            began = time.monotonic()
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
            assert time.monotonic() - began < 4
            assert received == b"" or received.startswith(b"HTTP/1.1 408")


def test_full_queue_answers_429(tiny_model, one_torch_thread):
    with running_server(tiny_model, start_worker=False, max_queue=1) as server:
        waiting = socket.create_connection(server.server_address[:2], timeout=5)
        body = json.dumps(continue_body()).encode()
        waiting.sendall(POST_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        deadline = time.monotonic() + 5
        while server.worker.waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        code, headers, answer = json_request(server, "POST", "/api/continue", continue_body())
        assert_error((code, headers, answer), 429)
        assert headers["Retry-After"].isdigit()
        waiting.close()


# -- streaming and cancellation ----------------------------------------------------------------------


def test_disconnect_stops_generation(server):
    body = json.dumps(continue_body(length=10_000, stream=True)).encode()
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(POST_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert b"event: chunk" in sock.recv(4096) + sock.recv(4096)
    deadline = time.monotonic() + 10
    while server.worker.active_rows and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.worker.active_rows == 0
    steps = server.worker.steps
    time.sleep(0.3)
    assert server.worker.steps == steps  # nothing is being written any more


def test_concurrent_requests_share_decode_steps(tiny_model, one_torch_thread):
    with running_server(tiny_model, start_worker=False) as server:
        answers = [None] * 4

        def ask(i):
            answers[i] = json_request(server, "POST", "/api/continue", continue_body(length=20, seed=100 + i))

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while server.worker.waiting < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.worker.start()
        for thread in threads:
            thread.join(30)
        assert server.worker.max_rows_seen == 4
        assert server.worker.steps < 4 * 20  # the four were written together
        alone = [json_request(server, "POST", "/api/continue", continue_body(length=20, seed=100 + i))
                 for i in range(4)]
        assert [a[2]["variants"] for a in answers] == [a[2]["variants"] for a in alone]


# -- security ----------------------------------------------------------------------------------------


def test_token_required_on_api_routes(tiny_model, one_torch_thread):
    with running_server(tiny_model, token="s3cret") as server:
        for method, path, body in (("GET", "/api/info", None), ("GET", "/v1/models", None),
                                   ("POST", "/v1/completions", {"prompt": "这是"})):
            assert_error(json_request(server, method, path, body), 401)
            assert_error(json_request(server, method, path, body, {"Authorization": "Bearer wrong"}), 401)
            code = request(server, method, path, body, {"Authorization": "Bearer s3cret"})[0]
            assert code == 200
        assert request(server, "GET", "/healthz")[0] == 200
        assert request(server, "GET", "/")[0] == 200


def test_cli_refuses_a_public_address_without_token(tiny_model):
    result = subprocess.run([sys.executable, "-m", "ai_writer", "serve", "--host", "0.0.0.0", "--model", str(tiny_model)],
                            capture_output=True, text=True, timeout=60, env={"PATH": "", "HOME": "/nonexistent"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--token" in result.stderr and "0.0.0.0" in result.stderr


def test_cors_is_off_unless_asked(server, tiny_model, one_torch_thread):
    headers = {"Origin": "https://example.org"}
    assert "Access-Control-Allow-Origin" not in request(server, "GET", "/api/info", headers=headers)[1]
    assert request(server, "OPTIONS", "/v1/completions", headers=headers)[0] == 405
    with running_server(tiny_model, cors_origin="https://example.org") as open_server:
        code, answer_headers, _ = request(open_server, "OPTIONS", "/v1/completions",
                                          headers={**headers, "Access-Control-Request-Method": "POST"})
        assert code == 204 and answer_headers["Access-Control-Allow-Origin"] == "https://example.org"
        assert "POST" in answer_headers["Access-Control-Allow-Methods"]
        other = request(open_server, "GET", "/api/info", headers={"Origin": "https://evil.example"})[1]
        assert "Access-Control-Allow-Origin" not in other


def test_static_files_and_escapes(tiny_model, tmp_path, one_torch_thread):
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<p>hello</p>", encoding="utf-8")
    (root / "app.js").write_text("export {}", encoding="utf-8")
    (root / "sub" / "a.css").write_text("p{}", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("do not serve", encoding="utf-8")
    with running_server(tiny_model, static_root=root) as server:
        code, headers, body = request(server, "GET", "/")
        assert code == 200 and body == b"<p>hello</p>" and headers["Content-Type"].startswith("text/html")
        assert request(server, "GET", "/app.js")[1]["Content-Type"].startswith("text/javascript")
        assert request(server, "GET", "/sub/a.css")[0] == 200
        code, headers, body = request(server, "HEAD", "/app.js")
        assert code == 200 and body == b"" and headers["Content-Length"] == "9"
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/sub/..%2f..%2fsecret.txt", "/sub/", "/sub",
                     "//etc/passwd", "/sub%5c..%5c..%5csecret.txt", "/app.js%00.html", "/nothing.html"):
            answer = raw_exchange(server, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            assert answer.startswith(b"HTTP/1.1 404"), path
            assert b"do not serve" not in answer


def test_a_refused_body_does_not_poison_the_connection(tiny_model, one_torch_thread):
    import http.client

    with running_server(tiny_model, token="s3cret") as server:
        connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
        connection.request("POST", "/api/continue", body=json.dumps(continue_body()))
        response = connection.getresponse()
        assert response.status == 401 and json.loads(response.read())["error"]["type"] == "authentication_error"
        connection.close()
        connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
        connection.request("POST", "/nowhere", body=b'{"a": 1}')
        assert connection.getresponse().read() and True
        connection.request("GET", "/healthz")  # http.client reconnects if the server closed the connection
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}


def test_python_server_py_serves_the_page_and_stops_on_ctrl_c(tiny_model):
    import re
    import signal
    import urllib.request
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen([sys.executable, str(root / "server.py"), "--port", "0", "--model", str(tiny_model),
                                "--backend", "torch-cpu", "--threads", "1", "--quiet"],
                               stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        port = None
        for line in process.stderr:
            match = re.search(r"serving http://127\.0\.0\.1:(\d+)/", line)
            if match:
                port = int(match.group(1))
                break
        assert port, "the server did not say where it listens"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        body = json.dumps({"prompt": "这是", "max_tokens": 5, "seed": 1}).encode()
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                                           headers={"Content-Type": "application/json"}),
                                    timeout=60) as answer:
            assert len(json.loads(answer.read())["choices"][0]["text"]) == 5
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()
