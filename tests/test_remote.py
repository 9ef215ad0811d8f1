"""Writing through a remote OpenAI-compatible engine (`continue --remote`, generation/remote.py).

Against ai-writer's own server running the shipped model: the same text as a local model for the same seed and
settings (runs, stop strings, lengths). Against a tiny standard-library fake server: what is sent (the assembled
steering prompt, the fields each kind of server gets, the API key), the cuts made here (length, stop strings,
banned phrases a server ignores), and every failure as one line naming the URL.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import ROOT, cli_env
from server_helpers import running_server

from ai_writer.cli.remote import RemoteOptions, remote_request, write_remote
from ai_writer.errors import BackendError
from ai_writer.generation.generator import RunResult
from ai_writer.generation.remote import RemoteEngine
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.story.lorebook import Lorebook, LoreEntry
from ai_writer.story.steering import Steering
from ai_writer.text.cleanup import clean_opening

OPENING = "林黛玉没想到，这一剑竟如此精妙。\n她"
SECRET = "sk-test-5ecret-never-shown"
SETTINGS = SamplerSettings()


def write(engine, prompt="从前有座山。", **options):
    """(the chunks joined per run, the RunResults in run order) of one remote write (a remote engine does not
    say how many tokens it drew: RunResult.tokens stays 0)."""
    results: list[RunResult] = []
    options.setdefault("settings", SETTINGS)
    options.setdefault("max_chars", 20)
    runs = options.get("runs", 1)
    texts = [""] * runs
    for chunk in engine.stream(prompt, results=results, **options):
        texts[chunk.run] += chunk.text
    return texts, sorted(results, key=lambda r: r.run)


def cli(*args, stdin: str = OPENING, **env):
    return subprocess.run([sys.executable, "-m", "ai_writer", "continue", *args], input=stdin.encode(),
                          capture_output=True, cwd=ROOT, env=cli_env(**env), timeout=120)


# -- ai-writer's own server: the same text as the local model ---------------------------------------------------


@pytest.fixture(scope="module")
def server(default_model, one_torch_thread):
    with running_server(default_model) as server:
        yield server


@pytest.fixture(scope="module")
def local(default_model, one_torch_thread):
    """write(prompt, **options) with the shipped model in this process, as `continue` writes."""
    import numpy as np

    from ai_writer.backends.open import load_model
    from ai_writer.generation.generator import Generator

    loaded = load_model(default_model, backend="torch-cpu")

    def write_locally(prompt, *, max_chars, seed, runs=1, stop=(), settings=SETTINGS):
        generator = Generator(loaded.backend, loaded.tokenizer, settings)
        results: list[RunResult] = []
        texts = [""] * runs
        for chunk in generator.stream(generator.prefill(prompt), max_chars=max_chars, runs=runs,
                                      rng=np.random.default_rng(seed), stop=stop, results=results):
            texts[chunk.run] += chunk.text
        return texts, [RunResult(r.run, r.text, r.finish_reason) for r in sorted(results, key=lambda r: r.run)]

    return write_locally


def test_continue_remote_writes_what_the_local_model_writes(server, default_model):
    args = ("--len", "60", "--seed", "3", "--runs", "3", "--temperature", "0.9", "--format", "jsonl")
    remote = cli("--remote", server.url, *args)
    here = cli("--model", str(default_model), "--backend", "torch-cpu", "--threads", "1", *args)
    assert remote.returncode == 0 and here.returncode == 0, remote.stderr.decode() + here.stderr.decode()
    done = [[json.loads(line) for line in result.stdout.decode().splitlines() if '"done"' in line]
            for result in (remote, here)]
    assert done[0] == done[1] and [r["run"] for r in done[0]] == [0, 1, 2]
    assert all(r["chars"] == 60 and r["finish_reason"] == "length" for r in done[0])
    status = remote.stderr.decode()
    assert f"remote ai-writer server at {server.url}v1" in status and "seed 3" in status
    text_mode = cli("--remote", server.url, *args[:-2], "-q")  # as text (the runs share one random generator)
    assert text_mode.returncode == 0 and text_mode.stderr == b""
    assert text_mode.stdout.decode() == "".join(
        ("" if r["run"] == 0 else f"\n======== run {r['run'] + 1} of 3 ========\n") + r["text"] for r in done[0])


def test_stop_strings_and_length_as_the_local_model(server, local):
    engine = RemoteEngine(server.url)
    prompt = clean_opening(OPENING)
    texts, results = local(prompt, max_chars=40, seed=9)
    stop = texts[0][12:14]
    expected = local(prompt, max_chars=40, seed=9, stop=(stop,))
    assert expected[0][0] == texts[0][: texts[0].find(stop)] and expected[1][0].finish_reason == "stop"
    assert write(engine, prompt, max_chars=40, seed=9, stop=(stop,)) == expected
    # five stop strings: the server takes four, the fifth (the one met) is cut here
    five = ("甲乙", "丙丁", "戊己", "庚辛", stop)
    assert write(engine, prompt, max_chars=40, seed=9, stop=five) == expected
    assert write(engine, prompt, max_chars=7, seed=9, runs=2) == local(prompt, max_chars=7, seed=9, runs=2)


def test_models_and_what_an_ai_writer_server_is_sent(server, default_model):
    engine = RemoteEngine(server.url + "v1/completions")  # the endpoint itself works as the address too
    assert engine.models() == [default_model.stem] and engine.is_ai_writer
    body = engine._body("x", 30, 2, SETTINGS.replace(top_p_newline=0.5), 4, ("a",), ("b",))
    assert body["max_tokens"] == 30 and body["top_p_newline"] == 0.5 and body["ban"] == ["b"]
    assert body["model"] == default_model.stem and body["n"] == 2 and body["stream"] is True


# -- a fake server: what is sent ---------------------------------------------------------------------------------


@contextmanager
def fake_server(answer, owned_by="someone-else", models_status=200):
    """(base URL, requests seen) of a server on a free loopback port: GET /v1/models lists one model owned by
    `owned_by`; POST answers with `answer(handler, body)`. Each request seen is (method, path, headers, body)."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            seen.append(("GET", self.path, dict(self.headers), None))
            if self.path == "/v1/models" and models_status == 200:
                send(self, 200, {"object": "list", "data": [{"id": "fake-model", "owned_by": owned_by}]})
            else:
                send(self, 404, {"error": {"message": "no such path"}})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(("POST", self.path, dict(self.headers), body))
            try:
                answer(self, body)
            except (BrokenPipeError, ConnectionResetError):
                self.server.closed.set()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads, httpd.block_on_close, httpd.closed = True, False, threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen, httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def send(handler, status, body, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def stream(*pieces, done=True, delay=0.0):
    """An answer streaming `pieces`: (index, text, finish_reason) events, or raw bytes sent as they are."""
    def answer(handler, body):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for piece in pieces:
            if isinstance(piece, bytes):
                handler.wfile.write(piece)
            else:
                index, text, finish = piece
                event = {"object": "text_completion", "choices": [{"index": index, "text": text,
                                                                   "finish_reason": finish}]}
                handler.wfile.write(f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode())
            handler.wfile.flush()
            time.sleep(delay)
        if done:
            handler.wfile.write(b"data: [DONE]\n\n")
        handler.close_connection = True
    return answer


def test_the_steering_prompt_is_assembled_for_another_engine():
    story = "第一章\n林黛玉进了贾府。宝玉说：\n她笑了"
    steering = Steering(memory="林黛玉：聪明，多愁。", note="下一段写宝玉。",
                        lorebook=Lorebook((LoreEntry(keys=("宝玉",), text="宝玉：衔玉而生。"),)))
    collected = Collected()
    with fake_server(stream((0, "，", None), (0, "又哭了。", "length"))) as (url, seen, _):
        write_remote(RemoteOptions(url), story, collected, length=5, runs=1, settings=SETTINGS, seed=1,
                     steering=steering, quiet=True)
    posted = [body for method, _, _, body in seen if method == "POST"]
    assert posted[0]["prompt"] == steering.remote_prompt(story)
    assert posted[0]["prompt"] == ("林黛玉：聪明，多愁。\n宝玉：衔玉而生。\n"  # memory, active lore
                                   "第一章\n林黛玉进了贾府。宝玉说：\n"  # the story before its last paragraph
                                   "下一段写宝玉。\n她笑了")  # the note, the last paragraph
    assert collected.text == ["，又哭了。"] and collected.results[0].finish_reason == "length"


def test_an_ai_writer_server_gets_the_steering_as_its_fields():
    steering = Steering(memory="记忆", note="笔记")
    with fake_server(stream((0, "好", "length")), owned_by="ai-writer") as (url, seen, _):
        engine = RemoteEngine(url)
        prompt, fields = remote_request(engine, "故事\n段落", steering)
    assert prompt == "故事\n段落"
    assert fields == {"memory": "记忆", "note": "笔记", "lore": [], "lore_scan": steering.scan}


def test_fields_sent_to_another_engine():
    with fake_server(stream((0, "ok", "length"), (1, "ok", "length"))) as (url, seen, _):
        write(RemoteEngine(url), max_chars=10, runs=2, seed=5, stop=("。",), bans=("坏",), extra={"memory": "x"},
              settings=SETTINGS.replace(top_k=40, temperature=0.8))
    body = seen[-1][3]
    assert seen[-1][1] == "/v1/completions" and seen[0][1] == "/v1/models"
    assert body == {"prompt": "从前有座山。", "n": 2, "stream": True, "max_tokens": 30, "temperature": 0.8,
                    "top_p": 0.7, "presence_penalty": 0.0, "frequency_penalty": 0.0, "model": "fake-model", "seed": 5,
                    "stop": ["。"], "top_k": 40}  # no AI-Writer extras, no bans, no ai-writer-only fields
    with fake_server(stream((0, "ok", "length")), models_status=404) as (url, seen, _):
        texts, _ = write(RemoteEngine(url, model="named"))
    assert texts == ["ok"] and seen[-1][3]["model"] == "named"


class Collected:
    """The output `write_remote` writes to, kept."""

    def __init__(self):
        self.text, self.results, self.total_chars, self.closed = [""], [], 0, False

    def chunk(self, run, text):
        self.text[run] += text
        self.total_chars += len(text)

    def finished(self, result):
        self.results.append(result)

    def close(self):
        self.closed = True


# -- a fake server: the cuts made here ---------------------------------------------------------------------------


def test_length_cut_here_and_the_stream_closed():
    endless = stream(*[(0, "山里有座庙，", None)] * 5000, delay=0.001)
    with fake_server(endless) as (url, _, httpd):
        texts, results = write(RemoteEngine(url), max_chars=23)
        assert httpd.closed.wait(10)  # the server saw the connection close: it can stop writing
    assert texts == ["山里有座庙，山里有座庙，山里有座庙，山里有座庙，"[:23]]
    assert results[0].finish_reason == "length" and results[0].text == texts[0]


def test_stop_strings_cut_here_when_the_server_does_not():
    pieces = [(0, "他说：“走", None), (0, "吧。”然后", None), (1, "一二三", None), (1, "", "length")]
    with fake_server(stream(*pieces)) as (url, _, _):
        texts, results = write(RemoteEngine(url), runs=2, stop=("。”",))
    assert texts == ["他说：“走吧", "一二三"]
    assert [(r.text, r.finish_reason) for r in results] == [("他说：“走吧", "stop"), ("一二三", "length")]


def test_bans_fallback_against_a_server_that_ignores_them():
    """A banned phrase is never written: the text ends just before it, and nothing of it was ever shown."""
    pieces = [(0, "the da", None), (0, "rk lo", None), (0, "rd rises", None), (0, " again", "length")]
    with fake_server(stream(*pieces)) as (url, seen, _):
        engine = RemoteEngine(url)
        shown = []
        results: list[RunResult] = []
        for chunk in engine.stream("x", max_chars=100, settings=SETTINGS, bans=("dark lord", "zzz"), results=results):
            shown.append(chunk.text)
    assert "".join(shown) == "the " and not any("d" in s for s in shown)
    assert results == [RunResult(0, "the ", "ban")]
    assert "ban" not in seen[-1][3]  # another engine is not sent them
    with fake_server(stream((0, "a dark lord", "length")), owned_by="ai-writer") as (url, seen, _):
        texts, results = write(RemoteEngine(url), bans=("dark lord",))
    assert seen[-1][3]["ban"] == ["dark lord"] and texts == ["a "] and results[0].finish_reason == "ban"


def test_a_banned_phrase_that_begins_in_the_prompt():
    with fake_server(stream((0, "k", None), (0, " lord rises", "length"))) as (url, _, _):
        texts, results = write(RemoteEngine(url), "the dar", bans=("dark lord",))
    assert texts == [""] and results == [RunResult(0, "", "ban")]
    with fake_server(stream((0, "kness falls", "length"))) as (url, _, _):  # "dark" but no "dark lord"
        assert write(RemoteEngine(url), "the dar", bans=("dark lord",)) == (["kness falls"],
                                                                           [RunResult(0, "kness falls", "length")])


def test_cutting_pieces_as_they_come_matches_cutting_the_whole_text():
    """However the text is split into pieces, the shown chunks add up to the kept text, which ends at the first
    stop string or banned phrase to complete (the earliest-starting when several end together) or the length."""
    import random

    from ai_writer.generation.remote import _Run, _settle

    rng = random.Random(5)
    for _ in range(3000):
        def word():
            return "".join(rng.choice("ab") for _ in range(rng.randint(1, 4)))

        stop, bans = (tuple(sorted({word() for _ in range(rng.randint(0, 2))})) for _ in range(2))
        context = word() if bans else ""
        text, max_chars = "".join(rng.choice("abc") for _ in range(30)), rng.randint(1, 30)
        expected, reason = text[:max_chars], "length"
        for i in range(1, min(len(text), max_chars) + 1):  # the first character that completes a needle
            seen = context + text[:i]
            ends = [(len(seen) - len(n), why) for needles, why in ((stop, "stop"), (bans, "ban")) for n in needles
                    if seen.endswith(n) and (why == "ban" or len(seen) - len(n) >= len(context))]
            if ends:
                start, reason = min(ends, key=lambda e: (e[0], e[1] != "stop"))  # a stop when both
                expected = text[: max(0, start - len(context))]
                break
        row, shown, at = _Run(0, context), "", 0
        while not row.done and at < len(text):
            step = rng.randint(1, 5)
            row.text += text[at : at + step]
            at += step
            shown += _settle(row, max_chars, stop, bans, finish="length" if at >= len(text) else None)
        assert (shown, row.text, row.finish_reason) == (expected, expected, reason), (context, text, stop, bans)


def test_a_json_answer_from_a_server_that_does_not_stream():
    answer = {"object": "text_completion", "choices": [{"index": 0, "text": "整段回答", "finish_reason": "stop"}]}
    with fake_server(lambda handler, body: send(handler, 200, answer)) as (url, _, _):
        assert write(RemoteEngine(url)) == (["整段回答"], [RunResult(0, "整段回答", "stop")])


# -- a fake server: failures, each one line ----------------------------------------------------------------------


def failure(url, **options) -> str:
    with pytest.raises(BackendError) as caught:
        write(RemoteEngine(url, **options))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_http_errors_carry_the_servers_message():
    error = {"error": {"message": "the model is overloaded", "type": "server_error", "param": None}}
    with fake_server(lambda handler, body: send(handler, 500, error)) as (url, _, _):
        message = failure(url)
    assert message == (f"the remote engine at {url}/v1/completions answered 500 Internal Server Error: "
                       f"the model is overloaded")
    with fake_server(lambda handler, body: send(handler, 401, {"error": {"message": f"bad key {SECRET}"}})) \
            as (url, _, _):
        message = failure(url, api_key=SECRET)
    assert "401" in message and "--api-key-env" in message and SECRET not in message


@pytest.mark.parametrize("answer, expected", [
    (stream(b"hello world\n\n"), "sent a line that is no server-sent event: 'hello world'"),
    (stream(b"data: {not json\n\n"), "sent an event that is not JSON: '{not json'"),
    (stream(b'data: {"error": {"message": "out of memory"}}\n\n'), "failed while writing: out of memory"),
    (stream(b'data: {"id": 1}\n\n'), "sent an answer without choices"),
    (stream(done=True), "ended its answer without writing anything"),
    (lambda handler, body: send(handler, 200, b"<html>hi</html>", "text/html"),
     "sent a body that is neither JSON nor server-sent events (Content-Type text/html): '<html>hi</html>'"),
    (lambda handler, body: send(handler, 200, b"{oops", "application/json"), "sent a body that is not JSON: '{oops'"),
])
def test_bodies_that_are_not_completions(answer, expected):
    with fake_server(answer) as (url, _, _):
        assert expected in failure(url)


def test_fewer_continuations_than_asked():
    with fake_server(stream((0, "一", "length"))) as (url, _, _):
        with pytest.raises(BackendError, match="wrote 1 of the 3 continuations asked for"):
            write(RemoteEngine(url), runs=3)


def test_a_slow_server_times_out():
    def slow(handler, body):
        time.sleep(2)
        send(handler, 200, {"choices": []})

    with fake_server(slow) as (url, _, _):
        began = time.monotonic()
        assert failure(url, timeout=0.3) == f"the remote engine at {url}/v1/completions did not answer within 0.3 s"
        assert time.monotonic() - began < 1.5


def test_connection_refused_and_bad_addresses():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(BackendError, match=f"cannot reach the remote engine at {url}/v1/models: connection refused"):
        RemoteEngine(url).models()
    for bad, words in [("localhost:8266", "must start with http:// or https://, got 'localhost:8266'; did you mean "
                                          "http://localhost:8266?"),
                       ("ftp://host/v1", "must start with http:// or https://"),
                       ("http://user:pw@host:1", "must not hold a user name or password"),
                       ("http://host:99999", "has a bad port"),
                       ("", "URL is empty")]:
        with pytest.raises(BackendError, match=words.replace("?", r"\?").replace(".", r"\.")):
            RemoteEngine(bad)
    for given in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/", "http://h:1/v1/completions"):
        assert RemoteEngine(given).url == "http://h:1/v1"
    assert RemoteEngine("https://h/api/oai").url == "https://h/api/oai/v1"


# -- the command line: the API key, and failures as one line -----------------------------------------------------


def test_cli_sends_the_api_key_from_the_environment_and_never_prints_it():
    with fake_server(stream((0, "好的", "length"))) as (url, seen, _):
        result = cli("--remote", url, "--api-key-env", "TEST_REMOTE_KEY", "--len", "5", TEST_REMOTE_KEY=SECRET)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == "好的"
    assert all(headers.get("Authorization") == f"Bearer {SECRET}" for _, _, headers, _ in seen)
    assert SECRET not in result.stdout.decode() + result.stderr.decode()
    assert seen[-1][3]["prompt"] == clean_opening(OPENING)
    with fake_server(lambda handler, body: send(handler, 401, {"error": {"message": f"key {SECRET} is wrong"}})) \
            as (url, _, _):
        refused = cli("--remote", url, "--api-key-env", "TEST_REMOTE_KEY", "-q", TEST_REMOTE_KEY=SECRET)
    assert refused.returncode == 2 and SECRET not in refused.stderr.decode() + refused.stdout.decode()
    assert refused.stderr.decode().startswith("Error: the remote engine at") and "***" in refused.stderr.decode()
    unset = cli("--remote", url, "--api-key-env", "TEST_REMOTE_KEY_UNSET")
    assert unset.returncode == 2
    assert unset.stderr.decode() == ("Error: --api-key-env TEST_REMOTE_KEY_UNSET: the environment variable "
                                     "TEST_REMOTE_KEY_UNSET is not set (or empty)\n")
    alone = cli("--remote-model", "x")
    assert alone.returncode == 2 and alone.stderr.decode() == "Error: --remote-model needs --remote URL\n"


def test_cli_failures_are_one_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = cli("--remote", f"http://127.0.0.1:{port}")
    assert refused.returncode == 2 and refused.stdout == b""
    assert refused.stderr.decode() == (f"Error: cannot reach the remote engine at http://127.0.0.1:{port}/v1/models: "
                                       f"connection refused (is the server running?)\n")
    with fake_server(lambda handler, body: send(handler, 500, {"error": {"message": "boom"}})) as (url, _, _):
        failed = cli("--remote", url, "-q")
    assert failed.returncode == 2 and failed.stderr.decode() == (
        f"Error: the remote engine at {url}/v1/completions answered 500 Internal Server Error: boom\n")
