"""The REPL's story tools in a real pseudo-terminal: memory, author's note, lorebook and banned phrases (saved as
the session's own part, never in the story), their command-line options, a new story file, /save's text file and
/show's paragraph numbers. One in-process test checks that the REPL writes exactly what SteeredReader gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, cli_env
from test_repl import OPENING, command, exported, fed, prompt, quit_, spawn

MEMORY = "林黛玉寄居贾府，多愁善感。"
LORE = "宝玉, 怡红院: 贾宝玉衔玉而生。\n魔法: 魔法是禁术。\n"


@pytest.fixture
def opening(tmp_path) -> Path:
    path = tmp_path / "opening.txt"
    path.write_text(OPENING + "\n", encoding="utf-8")
    return path


def session_of(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_memory_note_and_lore_commands(tiny_model, opening, tmp_path):
    lore_file = tmp_path / "lore.txt"
    lore_file.write_text(LORE, encoding="utf-8")
    child = spawn(tiny_model, opening, "--seed", "1")
    start = prompt(child)
    child.sendline("/memory")  # edited in place, like /edit
    child.expect("memory> ")
    child.sendline(MEMORY)
    child.expect(f"memory: {MEMORY}")
    prompt(child)
    child.sendline("/note")
    child.expect(r"author's note: \(none\)")
    prompt(child)
    command(child, "/note 下一段写黛玉生气离开。")
    child.sendline("/note")
    child.expect("author's note: 下一段写黛玉生气离开。")
    prompt(child)
    command(child, "/lore add 青锋, 剑: 青锋是林远的剑。")
    child.sendline(f"/lore load {lore_file}")
    child.expect(r"\(2 entries read from .*lore.txt; the lorebook has 3\)")
    prompt(child)
    assert "| lore: 魔法]" in child.after  # the toolbar: the story names 魔法
    child.sendline("/lore list")
    child.expect(r"    1\. 青锋, 剑: 青锋是林远的剑。\r\n    2\. 宝玉, 怡红院: 贾宝玉衔玉而生。\r\n  \* 3\. 魔法: 魔法是禁术。")
    prompt(child)
    command(child, "剑")  # the writer names the sword: two entries are active
    child.sendline("/lore list")
    child.expect(r"\* 1\. 青锋")
    prompt(child)
    assert "| lore: 青锋, 剑 +1]" in child.after
    command(child, "/lore rm 2")
    child.sendline("/lore rm 9")
    child.expect("there is no lore entry 9")
    prompt(child)
    child.sendline("/lore add no colon")
    child.expect("no ':' found")
    prompt(child)
    written = command(child, "")
    assert written > start + 1
    story = exported(child, tmp_path / "story.txt")
    assert MEMORY not in story and "魔法是禁术" not in story and "下一段" not in story  # the block is not the story
    command(child, "/save")
    assert opening.read_text(encoding="utf-8") == story  # nor is it in the story's text file
    command(child, "/memory clear")
    quit_(child)
    saved = session_of(Path(str(opening) + ".session.json"))
    assert saved["version"] == 2
    assert saved["steering"]["memory"] == "" and saved["steering"]["note"] == "下一段写黛玉生气离开。"
    assert [e["keys"] for e in saved["steering"]["lore"]] == [["青锋", "剑"], ["魔法"]]
    assert "".join(s["text"] for s in saved["spans"]).lstrip("\n") == story
    assert MEMORY not in json.dumps(saved["spans"], ensure_ascii=False)


def test_ban_commands_and_the_banned_phrase_is_never_written(tiny_model, opening, tmp_path):
    child = spawn(tiny_model, opening, "--seed", "3", length=80)
    prompt(child)
    command(child, "")
    first = exported(child, tmp_path / "a.txt")[len(OPENING):]
    pairs = [first[i:i + 2] for i in range(len(first) - 1) if "\n" not in first[i:i + 2]]
    phrase = max(set(pairs), key=pairs.count)  # what this model writes most
    command(child, "/undo")
    child.sendline(f"/ban {phrase}")
    child.expect(f"banned: {phrase}")
    prompt(child)
    command(child, "/ban 突然")
    child.sendline("/ban list")
    child.expect(f"  1\\. {phrase}\r\n  2\\. 突然")
    prompt(child)
    child.sendline("/ban 突然")
    child.expect("banned already")
    prompt(child)
    command(child, "/ban rm 2")
    for line in ("", "", "/rewrite", "/rewrite"):
        command(child, line)
    child.sendline("/alt 3")
    child.expect(r"/pick K keeps one")
    prompt(child)
    command(child, "/pick 3")
    written = exported(child, tmp_path / "b.txt")[len(OPENING):]
    assert len(written) > 100 and phrase not in written
    quit_(child)
    assert session_of(Path(str(opening) + ".session.json"))["bans"] == [phrase]


def test_command_line_steering_overrides_the_session_and_bad_files_are_one_line(tiny_model, opening, tmp_path):
    memory = tmp_path / "memory.txt"
    memory.write_text(MEMORY + "\n", encoding="utf-8")
    lore = tmp_path / "lore.json"
    lore.write_text(json.dumps({"entries": [{"keys": ["剑"], "text": "青锋剑。"}]}, ensure_ascii=False),
                    encoding="utf-8")
    bans = tmp_path / "bans.txt"
    bans.write_text("# comment\n突然\n", encoding="utf-8")
    child = spawn(tiny_model, opening, "--memory", memory, "--note", "紧张些", "--lore", lore, "--ban", "不由得",
                  "--ban-file", bans)
    prompt(child)
    child.sendline("/ban list")
    child.expect(r"1\. 不由得\r\n  2\. 突然")
    prompt(child)
    command(child, "/note 别的")
    quit_(child)
    session = Path(str(opening) + ".session.json")
    saved = session_of(session)
    assert saved["steering"]["memory"] == MEMORY and saved["steering"]["note"] == "别的"
    assert saved["bans"] == ["不由得", "突然"]

    child = spawn(tiny_model, opening, "--note", "命令行的", "--resume")  # the option wins, the rest is the session's
    prompt(child)
    child.sendline("/note")
    child.expect("author's note: 命令行的")
    prompt(child)
    quit_(child)
    saved = session_of(session)
    assert saved["steering"]["note"] == "命令行的" and saved["steering"]["memory"] == MEMORY
    assert saved["bans"] == ["不由得", "突然"]

    bad_lore = tmp_path / "bad.json"
    bad_lore.write_text("{not json", encoding="utf-8")
    too_long = tmp_path / "long.txt"
    too_long.write_text("长" * 101 + "\n", encoding="utf-8")
    for args, words in ((["--lore", bad_lore], "not valid JSON"), (["--lore", tmp_path / "none.txt"], "no such"),
                        (["--memory", tmp_path / "none.txt"], "no such memory file"),
                        (["--ban-file", too_long], "line 1"), (["--ban", "长" * 101], "at most 100")):
        result = subprocess.run([sys.executable, "-m", "ai_writer", "repl", str(opening), "--model", str(tiny_model),
                                 "--plain", *map(str, args)], cwd=str(ROOT), env=cli_env(), capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ") and words in result.stderr


def test_writing_in_the_repl_is_exactly_the_steered_reader(tiny_model, tiny_onnx_cache, opening, tmp_path):
    from ai_writer.backends.open import load_model
    from ai_writer.generation.generator import Generator
    from ai_writer.generation.guards import Guards
    from ai_writer.generation.reading import Reader
    from ai_writer.story.document import WRITER, Document, Span
    from ai_writer.story.lorebook import parse_lorebook
    from ai_writer.story.steering import SteeredReader, Steering

    lore = tmp_path / "lore.txt"
    lore.write_text(LORE, encoding="utf-8")
    child = spawn(tiny_model, opening, "--seed", "11", "--note", "紧张些。", "--lore", lore, length=40)
    prompt(child)
    command(child, f"/memory {MEMORY}")
    command(child, "")
    written = exported(child, tmp_path / "s.txt")[len(OPENING):]
    quit_(child)

    loaded = load_model(tiny_model, backend="cpu", threads=1, onnx_cache=tiny_onnx_cache)
    reader = Reader(loaded.backend, loaded.tokenizer)
    steering = Steering(memory=MEMORY, note="紧张些。", lorebook=parse_lorebook(LORE, "lore"))
    document = Document([Span(WRITER, "\n" + OPENING)])
    assert "魔法是禁术" in steering.block(document.text)  # the lore entry is in the block
    start = SteeredReader(reader).start(document, steering)
    generator = Generator(loaded.backend, loaded.tokenizer, guards=Guards())
    results = []
    text = "".join(c.text for c in generator.stream(start, max_chars=40, rng=np.random.default_rng(11), stop=("\n",),
                                                   results=results))
    assert written == text + ("\n" if results[0].finish_reason == "stop" else "")


def test_a_new_story_file_save_writes_the_text_and_show_numbers_paragraphs(tiny_model, tmp_path):
    new = tmp_path / "NEW.txt"
    child = spawn(tiny_model, new, "--seed", "5")
    child.expect("a new story: .*NEW.txt does not exist yet")
    child.expect("Opening> ")
    child.sendline("林黛玉竟如此精妙。")
    prompt(child)
    command(child, "")
    command(child, "众人惊")
    child.sendline("/show")
    child.expect(r"\[1\] 林黛玉竟如此精妙。.*\r\n\[2\] 众人惊")
    prompt(child)
    child.sendline("/save")
    child.expect(r"saved (\d+) characters to (.*NEW\.txt\.session\.json) and (.*NEW\.txt)\r\n")
    assert Path(child.match.group(2)) == Path(str(new) + ".session.json") and Path(child.match.group(3)) == new
    prompt(child)
    story = exported(child, tmp_path / "e.txt")
    assert new.read_text(encoding="utf-8") == story
    command(child, "")
    child.sendline("/save")
    child.expect("and .*NEW.txt")  # its own file: written again without a question
    prompt(child)
    new.write_text("别人改过了。", encoding="utf-8")  # changed by someone else since
    child.sendline("/save")
    child.expect("was not written by this session; overwrite it with the story\\? \\[y/N\\] ")
    child.sendline("n")
    child.expect("is not written; /export PATH writes the text elsewhere")
    prompt(child)
    assert new.read_text(encoding="utf-8") == "别人改过了。"
    child.sendline("/save")
    child.expect(r"\[y/N\] ")
    child.sendline("y")
    child.expect("and .*NEW.txt")
    prompt(child)
    assert new.read_text(encoding="utf-8") == exported(child, tmp_path / "f.txt")
    child.sendline("/show 1")
    child.expect(r"\(… 1 paragraph before; /show prints them all\)\r\n\[2\] 众人惊")
    prompt(child)
    quit_(child)


def test_save_writes_the_opened_text_file_and_reopening_it_resumes(tiny_model, opening, tmp_path):
    child = spawn(tiny_model, opening, "--seed", "6")
    prompt(child)
    command(child, "")
    child.sendline("/save")
    child.expect(r"and .*opening\.txt\r\n")
    prompt(child)
    story = exported(child, tmp_path / "s.txt")
    assert opening.read_text(encoding="utf-8") == story
    quit_(child)
    child = spawn(tiny_model, opening)  # the file holds what the session holds: resumed without a question
    child.expect(r"\(resumed \d+ characters\)")
    assert prompt(child) == len(story) + 1
    assert fed(child) == 0
    quit_(child)
    other = tmp_path / "other.json"
    other_text = tmp_path / "other.txt"
    other_text.write_text("不相干的文件。", encoding="utf-8")
    child = spawn(tiny_model, opening)
    prompt(child)
    child.sendline(f"/save {other}")  # the text beside it is not this story's: asked first
    child.expect(r"other\.txt was not written by this session")
    child.sendline("")
    child.expect("is not written")
    prompt(child)
    assert other_text.read_text(encoding="utf-8") == "不相干的文件。" and other.is_file()
    quit_(child)


def test_a_version_1_session_opens_in_the_repl(tiny_model, tmp_path):
    session = tmp_path / "old.json"
    session.write_text(json.dumps({"format": "ai-writer-session", "version": 1, "len": 20, "spans": [
        {"author": "writer", "text": "\n" + OPENING}]}, ensure_ascii=False), encoding="utf-8")
    child = spawn(tiny_model, session)
    assert prompt(child) == len(OPENING) + 1
    assert command(child, "") > len(OPENING) + 1
    quit_(child)
    assert session_of(session)["version"] == 2
