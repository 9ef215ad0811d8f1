"""`ai-writer repl --remote URL` in a real pseudo-terminal: the REPL writes through a server instead of a local model.

Against ai-writer's own server running the shipped model (in this process, on a free loopback port): Enter, /rewrite,
/alt + /pick, and the same text as a local REPL with the same seed, model and backend. Against a tiny
standard-library fake server (tests/test_remote.py's): what is sent (the steering block as an ai-writer server's own
fields, or assembled into the prompt for another server; bans; the story before the last model paragraph for a
rewrite; n for /alt), the API key, and failures: one line each, the story as it was.
"""

from __future__ import annotations

import io
import json
import socket
import sys
from pathlib import Path

import pexpect
import pytest
from helpers import ROOT, cli_env
from server_helpers import running_server
from test_remote import fake_server, send, stream
from test_repl import OPENING, PROMPT, command, exported, prompt, quit_
from test_repl import spawn as spawn_local

from ai_writer.story.steering import Steering

SECRET = "sk-repl-5ecret-never-shown"
MEMORY = "林黛玉寄居贾府，多愁善感。"


def spawn(url: str, *args, length: int = 30, **env) -> pexpect.spawn:
    """The REPL writing through the server at `url`; everything it prints is kept in `child.logfile_read`."""
    child = pexpect.spawn(sys.executable, ["-m", "ai_writer", "repl", *map(str, args), "--remote", url,
                                           "--len", str(length), "--plain"],
                          cwd=str(ROOT), env=cli_env(**env), encoding="utf-8", timeout=60, dimensions=(50, 400))
    child.logfile_read = io.StringIO()
    return child


def session_of(opening: Path) -> dict:
    return json.loads(Path(str(opening) + ".session.json").read_text(encoding="utf-8"))


def error_line(child) -> tuple[str, int]:
    """(the one line an error prints, the story's length in the prompt right after it: nothing else in between)."""
    child.expect(r"Error: ([^\r\n]*)\r\n" + PROMPT)
    return child.match.group(1), int(child.match.group(2))


@pytest.fixture
def opening(tmp_path) -> Path:
    path = tmp_path / "opening.txt"
    path.write_text(OPENING + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(default_model, one_torch_thread):
    with running_server(default_model) as server:
        yield server


# -- ai-writer's own server ---------------------------------------------------------------------------------------


def test_enter_rewrite_alt_and_pick_through_the_server(server, opening, tmp_path):
    port = server.server_address[1]
    child = spawn(server.url, opening, "--seed", "1")
    child.expect(f"ai-writer: remote ai-writer server at http://127.0.0.1:{port}/v1, model default")
    start = prompt(child)
    assert start == len(OPENING) + 1
    assert f"| remote 127.0.0.1:{port} default |" in child.after  # the toolbar names the server
    written = command(child, "")
    assert written > start
    first = exported(child, tmp_path / "a.txt")
    assert first.startswith(OPENING) and len(first) > len(OPENING) + 1
    child.sendline("/rewrite")
    child.expect("换个写法")
    prompt(child)
    second = exported(child, tmp_path / "b.txt")
    assert second.startswith(OPENING) and second != first
    child.sendline("/alt 2")
    child.expect(r"\[1\] (.*?)\r\n\[2\] (.*?)\r\n/pick K keeps one \(1-2\)")
    alts = [child.match.group(k).strip() for k in (1, 2)]
    assert alts[0] != alts[1]
    prompt(child)
    command(child, "/pick 2")
    story = exported(child, tmp_path / "c.txt")
    assert story.startswith(second) and story[len(second):].rstrip("\n") == alts[1]
    child.sendline("/stats")
    child.expect(r"sent to the remote engine: \d+ characters in 3 requests; story")
    prompt(child)
    assert command(child, "/undo") == len(second) + 1
    quit_(child)
    saved = session_of(opening)
    assert "state" not in saved and "snapshots" not in saved  # a server's states are not ours to save
    assert "".join(s["text"] for s in saved["spans"]).lstrip("\n") == second

    child = spawn(server.url, Path(str(opening) + ".session.json"))  # the session reopened, and written on
    assert prompt(child) == len(second) + 1
    assert command(child, "") > len(second) + 1
    quit_(child)


def test_the_same_seed_writes_what_a_local_repl_writes(server, default_model, opening, tmp_path):
    """The same seed, model and backend write the same text through the server as in a local REPL, paragraph after
    paragraph, for a rewrite, and with the steering block (the server's own fields).

    The first paragraph is read in the same pieces on both sides (the story before the paragraph, the block, the
    paragraph), so its state is the same to the bit. Later ones are not: the local REPL reads on from the snapshot
    it keeps, the server from the longest prefix in its cache (or the whole prompt a segment at a time), and reading
    in other pieces rounds differently (about 1e-5 in the logits on torch-cpu). The sampled text is the same unless
    a draw falls that close to the edge between two characters: it does not here, with this seed and model."""
    lore = tmp_path / "lore.txt"
    lore.write_text("林黛玉: 林黛玉是剑客。\n", encoding="utf-8")
    steps = ["", "", "/rewrite", "众人惊", "", f"/memory {MEMORY}", "", "/rewrite"]
    stories = []
    for remote in (True, False):
        args = (opening, "--seed", "7", "--note", "紧张些。", "--lore", lore)
        child = spawn(server.url, *args) if remote else spawn_local(default_model, *args, "--backend", "torch-cpu")
        prompt(child)
        kept = []
        for step in steps:
            command(child, step)
            kept.append(exported(child, tmp_path / f"{remote}.txt"))
        quit_(child)
        Path(str(opening) + ".session.json").unlink()
        stories.append(kept)
    assert stories[0] == stories[1]
    assert len(set(stories[0])) == len(steps) - 1  # every step but /memory changed the story


# -- a fake server: what is sent ---------------------------------------------------------------------------------


def test_the_steering_block_bans_and_alternatives_as_sent(opening, tmp_path):
    """An ai-writer server gets the block as its own fields (and the bans); another gets it in the prompt."""
    def answer(handler, body):  # one continuation per n asked for
        pieces = [(0, "好", None), (1, "坏", None), (0, "。", "stop"), (1, "了", "stop")]
        stream(*[piece for piece in pieces if piece[0] < body["n"]])(handler, body)

    with fake_server(answer, owned_by="ai-writer") as (url, seen, _):
        child = spawn(url, opening, "--seed", "4", "--ban", "突然")
        prompt(child)
        command(child, f"/memory {MEMORY}")
        command(child, "/note 下一段写黛玉生气。")
        command(child, "/lore add 林黛玉: 林黛玉是剑客。")
        command(child, "")
        command(child, "/rewrite")
        child.sendline("/alt 2")
        child.expect(r"\[1\] 好。\r\n\[2\] 坏了\r\n")
        prompt(child)
        quit_(child)
    posts = [body for method, _, _, body in seen if method == "POST"]
    story = "\n" + OPENING
    lore = [{"keys": ["林黛玉"], "text": "林黛玉是剑客。"}]
    # a write, its rewrite (the same story before it), alternatives after the paragraph written
    for body, prompt_, seed, n in zip(posts, (story, story, story + "好。\n"), (4, 5, 6), (1, 1, 2)):
        assert body["prompt"] == prompt_  # the block is not in the prompt: the server reads it into a state
        assert (body["memory"], body["note"], body["lore"]) == (MEMORY, "下一段写黛玉生气。", lore)
        assert body["ban"] == ["突然"] and body["loop_guard"] is True and body["stop"] == ["\n"]
        assert (body["seed"], body["n"], body["max_tokens"]) == (seed, n, 30)
    assert len(posts) == 3

    with fake_server(stream((0, "好。", "stop"))) as (url, seen, _):
        child = spawn(url, opening, "--no-resume", "--seed", "4", "--ban", "突然", "--memory", _file(tmp_path, MEMORY))
        prompt(child)
        command(child, "")
        quit_(child)
    body = seen[-1][3]
    steering = Steering(memory=MEMORY)
    assert body["prompt"] == steering.remote_prompt(story) == MEMORY + "\n" + story
    assert not {"memory", "note", "lore", "ban", "loop_guard"} & set(body)  # another server knows none of them


def test_a_rewrite_sends_the_story_before_the_last_model_paragraph(opening):
    answers = iter(["甲。", "乙。", "丙。"])
    with fake_server(lambda handler, body: stream((0, next(answers), "stop"))(handler, body)) as (url, seen, _):
        child = spawn(url, opening, "--seed", "1")
        prompt(child)
        command(child, "")
        command(child, "我说")  # the writer's text after it stays
        child.sendline("/rewrite")
        child.expect("换个写法")
        prompt(child)
        command(child, "")
        quit_(child)
    prompts = [body["prompt"] for method, _, _, body in seen if method == "POST"]
    story = "\n" + OPENING
    assert prompts == [story, story, story + "乙。\n我说"]
    assert "".join(s["text"] for s in session_of(opening)["spans"]) == story + "乙。\n我说丙。\n"


def _file(folder: Path, text: str) -> Path:
    path = folder / "memory.txt"
    path.write_text(text, encoding="utf-8")
    return path


# -- a fake server: failures and the API key ---------------------------------------------------------------------


def test_server_failures_are_one_line_and_the_story_stays(opening, tmp_path):
    answers = [stream((0, "好。", "stop")),
               lambda handler, body: send(handler, 500, {"error": {"message": "boom"}}),
               stream((0, "写了一半", None), b'data: {"error": {"message": "out of memory"}}\n\n'),
               lambda handler, body: send(handler, 500, {"error": {"message": "boom"}})]
    with fake_server(lambda handler, body: answers.pop(0)(handler, body)) as (url, _, httpd):
        child = spawn(url, opening, "--seed", "1")
        prompt(child)
        written = command(child, "")
        story = exported(child, tmp_path / "a.txt")
        saved = session_of(opening)
        child.sendline("")
        assert error_line(child) == (f"the remote engine at {url}/v1/completions answered 500 Internal Server Error: "
                                     f"boom", written)
        child.sendline("")  # fails after writing a part: the part is not kept
        child.expect("写了一半\r\n")
        assert error_line(child) == (f"the remote engine at {url}/v1/completions failed while writing: out of memory",
                                     written)
        child.sendline("/alt 2")
        child.expect(r"\(writing 2 alternatives\)\r\n")
        assert error_line(child)[0].endswith("answered 500 Internal Server Error: boom")
        assert session_of(opening) == saved
    child.sendline("")  # the server is gone
    assert error_line(child) == (f"cannot reach the remote engine at {url}/v1/completions: connection refused "
                                 f"(is the server running?)", written)
    assert exported(child, tmp_path / "b.txt") == story
    quit_(child)
    assert session_of(opening)["spans"] == saved["spans"]


def test_a_server_that_cannot_be_reached_at_the_start(opening):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    child = spawn(url, opening)
    child.expect(f"ai-writer: cannot reach the remote engine at {url}/v1/models: connection refused "
                 r"\(is the server running\?\); each write tries again")
    assert prompt(child) == len(OPENING) + 1
    assert f"| remote 127.0.0.1:{port} |" in child.after
    child.sendline("")
    assert "connection refused" in error_line(child)[0]
    command(child, "我加一句。")  # the story can still be written by hand, and is saved
    quit_(child)
    assert "".join(s["text"] for s in session_of(opening)["spans"]) == "\n" + OPENING + "我加一句。"


def test_the_api_key_is_sent_and_never_printed(opening):
    with fake_server(stream((0, "好。", "stop"))) as (url, seen, _):
        child = spawn(url, opening, "--api-key-env", "TEST_REPL_KEY", TEST_REPL_KEY=SECRET)
        prompt(child)
        command(child, "")
        quit_(child)
    assert seen and all(headers.get("Authorization") == f"Bearer {SECRET}" for _, _, headers, _ in seen)
    echo = lambda handler, body: send(handler, 401, {"error": {"message": f"key {SECRET} is wrong"}})  # noqa: E731
    with fake_server(echo) as (url, _, _):
        child = spawn(url, opening, "--resume", "--api-key-env", "TEST_REPL_KEY", TEST_REPL_KEY=SECRET)
        prompt(child)
        child.sendline("")
        message = error_line(child)[0]
        quit_(child)
    assert "401" in message and "***" in message and "--api-key-env" in message
    printed = child.logfile_read.getvalue()
    assert SECRET not in printed and SECRET not in Path(str(opening) + ".session.json").read_text(encoding="utf-8")
    unset = pexpect.run(f"{sys.executable} -m ai_writer repl {opening} --remote {url} --api-key-env TEST_REPL_UNSET "
                        f"--plain", cwd=str(ROOT), env=cli_env(), encoding="utf-8", withexitstatus=True, timeout=60)
    assert unset == ("Error: --api-key-env TEST_REPL_UNSET: the environment variable TEST_REPL_UNSET is not set "
                     "(or empty)\r\n", 2)


def test_a_remote_session_opens_with_a_local_model(tiny_model, opening, tmp_path):
    """A session written with --remote holds no state: a local REPL reads the story and writes on."""
    with fake_server(stream((0, "林黛玉。", "stop"))) as (url, _, _):
        child = spawn(url, opening, "--seed", "2")
        prompt(child)
        command(child, "")
        quit_(child)
    child = spawn_local(tiny_model, Path(str(opening) + ".session.json"))
    written = prompt(child)
    assert written == len(OPENING) + 1 + len("林黛玉。\n")
    assert command(child, "") > written
    quit_(child)
