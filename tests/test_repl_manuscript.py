"""A whole manuscript in the REPL (pseudo-terminal, tiny model): read once chapter by chapter with progress lines,
the chapter snapshots saved in the session, reopened reading nothing, /chapters and /chapter.

The manuscript is made here from a few repeated lines under 第N章 headings (no corpus text in the repository)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_repl import command, exported, fed, prompt, quit_, spawn

LINES = ("这是一颗魔法，林黛玉竟如此精妙。", "三体舰队众人惊。", "林黛玉竟如此精妙，这是一颗魔法。")
CHAPTER_CHARS = 5_000


def manuscript(chars: int) -> str:
    """About `chars` characters: chapters of CHAPTER_CHARS, each a 第N章 heading then lines indented as books are."""
    chapters, total, n = [], 0, 0
    while total < chars:
        n += 1
        body, k = [], 0
        while sum(map(len, body)) < CHAPTER_CHARS:
            body.append("\u3000\u3000" + LINES[k % 3] * (1 + k % 4) + "\n")
            k += 1
        chapter = f"第{n}章 风起\n\n" + "".join(body) + "\n"
        chapters.append(chapter)
        total += len(chapter)
    return "".join(chapters)


@pytest.mark.parametrize("chars", [150_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
def test_a_manuscript_is_read_once_and_reopened_reading_nothing(tiny_model, tmp_path, chars):
    from ai_writer.story.chapters import clean_manuscript, split_chapters

    path = tmp_path / "novel.txt"
    raw = manuscript(chars)
    path.write_text(raw, encoding="utf-8")
    story = clean_manuscript(raw)
    chapters = split_chapters(story)
    assert len(chapters) == raw.count("章 风起") > 20

    child = spawn(tiny_model, path, "--seed", "1")
    child.timeout = 600
    child.expect(rf"\(reading the story: 0 of {len(story):,} characters\)")
    child.expect(rf"\(reading the story: {len(story):,} of {len(story):,} characters\)")
    assert prompt(child) == len(story)
    assert len(story) <= fed(child) < len(story) + 100  # read once
    child.sendline("/chapters")
    child.expect(rf" {len(chapters)}\. 第{len(chapters)}章 风起  at ([\d,]+), ([\d,]+) characters  \[state kept\]")
    assert int(child.match.group(1).replace(",", "")) == chapters[-1].begin
    prompt(child)
    quit_(child)

    session = Path(str(path) + ".session.json")
    record = json.loads(session.read_text(encoding="utf-8"))
    assert record["version"] == 2 and record["state"]["n_chars"] == len(story)
    pinned = [s["offset"] for s in record["snapshots"]["states"] if s["pinned"]]
    begins = {c.begin for c in chapters}
    assert pinned and set(pinned) <= begins  # chapter starts, spaced
    assert all(b - a >= 50_000 for a, b in zip([0] + pinned, pinned))

    child = spawn(tiny_model, path)  # the file holds what the session holds: resumed, nothing asked
    child.timeout = 120
    child.expect(r"\(resumed \d+ characters\)")
    assert prompt(child) == len(story)
    assert fed(child) == 0  # reopening reads nothing
    child.sendline("/chapters")
    prompt(child)
    listed = child.before
    assert f" {len(chapters)}. 第{len(chapters)}章 风起  at " in listed
    assert listed.count("[state kept]") == len(pinned) + ("[state kept]" in listed.splitlines()[-1])
    child.sendline("/chapter 尾声")
    child.expect(rf"\(chapter {len(chapters) + 1} begins; Enter writes on\)")
    prompt(child)
    command(child, "")
    assert fed(child) <= 2 + len("尾声\n\n") + 30  # the heading and the paragraph, nothing before them
    text = exported(child, tmp_path / "out.txt")
    assert text.startswith(story.lstrip("\n")) and text[len(story) - 1:].startswith("\n\n尾声\n\n")
    child.sendline("/chapters")
    child.expect(rf" {len(chapters) + 1}\. 尾声  at {len(story) + 2:,}")
    prompt(child)
    quit_(child)
