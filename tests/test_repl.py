"""`ai-writer repl` driven through a real pseudo-terminal (pexpect) with the tiny model."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pexpect
import pytest
from helpers import ROOT, cli_env

OPENING = "这是一颗魔法，林黛玉竟如此精妙。三体舰队众人惊。" * 12  # 300 characters, one paragraph
PROMPT = r"\[(\d+) chars \|[^\]]*\]\r\n> "


def spawn(tiny_model, *args, length=30):
    env = cli_env()
    child = pexpect.spawn(sys.executable, ["-m", "ai_writer", "repl", *map(str, args), "--model", str(tiny_model),
                                           "--threads", "1", "--len", str(length), "--plain"],
                          cwd=str(ROOT), env=env, encoding="utf-8", timeout=60, dimensions=(50, 400))
    return child


def prompt(child) -> int:
    """Wait for the prompt; return the story's character count from the status line."""
    child.expect(PROMPT)
    return int(child.match.group(1))


def command(child, line: str) -> int:
    child.sendline(line)
    return prompt(child)


def fed(child) -> int:
    child.sendline("/stats")
    child.expect(r"tokens fed to the model: (\d+)")
    count = int(child.match.group(1))
    prompt(child)
    return count


def exported(child, path: Path) -> str:
    command(child, f"/export {path}")
    return path.read_text(encoding="utf-8")


def quit_(child):
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.fixture
def opening(tmp_path) -> Path:
    path = tmp_path / "opening.txt"
    path.write_text(OPENING + "\n", encoding="utf-8")
    return path


def test_write_and_rewrite_without_rereading(tiny_model, opening, tmp_path):
    child = spawn(tiny_model, opening, "--seed", "1")
    assert prompt(child) == len(OPENING) + 1  # the opening, with the paragraph mark in front
    written = command(child, "")
    assert written > len(OPENING) + 1
    first = exported(child, tmp_path / "a.txt")
    assert first.startswith(OPENING)
    before = fed(child)
    assert before >= len(OPENING)  # the opening was read once
    child.sendline("/rewrite")
    child.expect("换个写法")
    prompt(child)
    after = fed(child)
    assert 0 < after - before <= 30 < len(OPENING)  # only the new paragraph's characters, no re-read
    second = exported(child, tmp_path / "b.txt")
    assert second.startswith(OPENING) and second != first
    child.sendline("/r")  # the alias
    child.expect("换个写法")
    prompt(child)
    assert fed(child) - after <= 30
    quit_(child)


def test_writer_text_alternatives_and_pick(tiny_model, opening, tmp_path):
    child = spawn(tiny_model, opening, "--seed", "2")
    start = prompt(child)
    assert command(child, "众人惊") == start + 3  # the writer's own text
    child.sendline("/alt 3")
    child.expect(r"\[1\] (.*?)\r\n\[2\] (.*?)\r\n\[3\] (.*?)\r\n")
    alts = [child.match.group(k).strip() for k in (1, 2, 3)]
    assert len(set(alts)) > 1
    prompt(child)
    command(child, "/pick 2")
    story = exported(child, tmp_path / "s.txt")
    assert story.rstrip("\n").endswith("众人惊" + alts[1])
    child.sendline("/pick 9")
    child.expect("no alternatives")
    quit_(child)


def test_undo_redo_edit_and_settings(tiny_model, opening, tmp_path):
    child = spawn(tiny_model, opening, "--seed", "3")
    start = prompt(child)
    written = command(child, "")
    assert command(child, "/undo") == start
    assert command(child, "/redo") == written
    with_text = command(child, "林黛玉")
    assert command(child, "/undo") == written
    assert command(child, "/redo") == with_text
    child.sendline("/edit 1")
    child.expect("edit ¶1> ")
    child.sendline("三体")
    prompt(child)
    story = exported(child, tmp_path / "e.txt")
    assert story.startswith("三体") and OPENING not in story
    command(child, "/undo")
    assert exported(child, tmp_path / "u.txt").startswith(OPENING)

    child.sendline("/set temperature 20")
    child.expect("temperature must be a number between 0 and 10")
    prompt(child)
    command(child, "/set top_p 0.5")
    child.sendline("/settings")
    child.expect(r"top_p = 0\.5 ")
    prompt(child)
    child.sendline("/len 7")
    child.expect(r"len 7\]\r\n> ")
    child.sendline("/nonsense")
    child.expect("unknown command /nonsense; commands: /write /rewrite")
    prompt(child)
    child.sendline("/help")
    child.expect(r"/alt \[N\]")
    prompt(child)
    child.sendintr()  # Ctrl-C at the prompt does not quit
    child.expect("use /quit")
    prompt(child)
    before = command(child, "")
    assert before > 0 and child.isalive()
    command(child, f"/save {opening}/inside.json")  # a file is not a folder
    assert "cannot write" in child.before
    quit_(child)


def test_save_and_reopen_round_trip(tiny_model, opening, tmp_path):
    child = spawn(tiny_model, opening, "--seed", "4")
    prompt(child)
    command(child, "")
    command(child, "众人")
    command(child, "")
    command(child, "/set top_p 0.5")
    session = tmp_path / "story.json"
    command(child, f"/save {session}")
    story = exported(child, tmp_path / "before.txt")
    quit_(child)
    record = json.loads(session.read_text(encoding="utf-8"))
    assert [s["author"] for s in record["spans"]] == ["writer", "model", "writer", "model"]
    assert all(isinstance(s["seed"], int) and "temperature" in s["settings"]
               for s in record["spans"] if s["author"] == "model")
    assert "state" in record

    child = spawn(tiny_model, session)
    assert prompt(child) == len(story) + 1
    assert "top_p 0.5 " in child.after  # the session's settings came back with it
    assert exported(child, tmp_path / "after.txt") == story
    assert fed(child) == 0  # the saved state: reopening reads nothing
    command(child, "")
    assert 0 < fed(child) <= 30
    quit_(child)


def test_kill_during_generation_then_resume(tiny_model, opening, tmp_path):
    session = tmp_path / "auto.json"
    child = spawn(tiny_model, opening, "--seed", "5", "--session", session, "--no-paragraph", length=200000)
    prompt(child)
    child.sendline("众人惊")
    kept = prompt(child)
    child.sendline("")  # a long paragraph: it is still being written when the kill comes
    child.expect("惊.{20}")
    time.sleep(1.5)  # long enough for an autosave of the paragraph so far
    os.kill(child.pid, signal.SIGKILL)
    child.expect(pexpect.EOF)
    child.close()
    assert child.signalstatus == signal.SIGKILL

    saved = json.loads(session.read_text(encoding="utf-8"))
    text = "".join(s["text"] for s in saved["spans"])
    assert text.startswith("\n" + OPENING + "众人惊") and len(text) > kept
    child = spawn(tiny_model, opening, "--session", session)
    child.expect(r"Resume the autosaved session .* \((\d+) characters\)\? \[Y/n\] ")
    assert int(child.match.group(1)) == len(text)
    child.sendline("y")
    assert prompt(child) == len(text)
    assert exported(child, tmp_path / "r.txt") == text.lstrip("\n")
    quit_(child)


@pytest.mark.slow
def test_prompt_toolkit_terminal_keys(tiny_model, opening):
    """The full terminal UI (no --plain): Ctrl-R rewrites, Esc stops the writing, /edit is prefilled."""
    env = cli_env(TERM="xterm")
    child = pexpect.spawn(sys.executable, ["-m", "ai_writer", "repl", str(opening), "--model", str(tiny_model),
                                           "--threads", "1", "--len", "30", "--seed", "6", "--no-paragraph"],
                          cwd=str(ROOT), env=env, encoding="utf-8", timeout=60, dimensions=(40, 200))
    child.expect("/help lists the commands")
    child.expect(">")
    child.sendline("")
    child.expect(">")
    child.send("\x12")  # Ctrl-R
    child.expect("换个写法")
    child.expect(">")
    child.sendline("/stats")
    child.expect(r"tokens fed to the model: (\d+)")
    assert int(child.match.group(1)) <= len(OPENING) + 1 + 2 * 30
    child.sendline("/set colour 1")
    child.expect("unknown setting 'colour'")
    child.sendline("/len 200000")
    child.expect("len 200000")
    child.expect(">")
    child.sendline("")
    time.sleep(2)  # it is writing 200,000 characters (the machine may be busy)
    child.send("\x1b")  # Esc stops it and keeps what was written
    child.expect(r"\(stopped\)")
    child.sendline("/stats")
    child.expect(r"story: (\d+) characters")
    assert len(OPENING) + 100 < int(child.match.group(1)) < 200000
    child.sendline("/edit 1")
    child.expect("edit ¶1> ")
    child.expect(OPENING[-10:])  # the paragraph is in the editor
    child.sendcontrol("u")  # prompt_toolkit: delete to the start of the line
    child.sendline("林黛玉")
    child.expect(r"\(paragraph 1 edited\)")
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_no_file_asks_for_an_opening_and_open_loads_one(tiny_model, opening, tmp_path):
    child = spawn(tiny_model, "--session", tmp_path / "auto.json", "--seed", "7")
    child.expect("Opening> ")
    child.sendline("  林黛玉竟如此精妙。  ")
    assert prompt(child) == len("\n林黛玉竟如此精妙。")  # cleaned up as `continue` does
    assert command(child, "") > len("\n林黛玉竟如此精妙。")
    assert command(child, f"/open {opening}") == len(OPENING) + 1
    assert exported(child, tmp_path / "o.txt") == OPENING
    command(child, "/open /no/such/file.txt")
    assert "no such file" in child.before
    quit_(child)
    assert json.loads((tmp_path / "auto.json").read_text(encoding="utf-8"))["spans"][0]["text"] == "\n" + OPENING
