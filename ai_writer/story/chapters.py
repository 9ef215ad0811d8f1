"""Chapters of a story: where they begin, told from the text alone.

A line is a chapter heading when, without the spaces around it, it is at most 40 characters
and it is one of:

1. 第 + a number + 章, 回, 节 or 卷, then the title if any: 第一章 风起, 第12回, 第 三 卷.
   The number is Chinese (〇零一二两三四五六七八九十百千万, or 壹贰叁肆伍陆柒捌玖拾佰仟) or
   Arabic digits. 第一回合 and 第一节课 are not headings (回 followed by 合, 节 by 课), nor
   is a line holding 。 or ，.
2. 卷 + a number: 卷一, 卷三 风起; or 序章, 楔子, 引子, 尾声, 终章, 后记 or 番外, alone or
   followed by a space, a colon or a dash and a title.
3. A Markdown heading: one to six # and a space, then the title (# 风起, ## Part one).
4. Chapter + a number (digits, Roman numerals, or one to ninety-nine in words), any case:
   Chapter 3, CHAPTER IV, Chapter Twenty-One: The Storm.
5. A short line standing alone: at most 30 characters, a blank line (or the start of the text)
   before it and a blank line after it (the line break that ends the text is not one), no
   sentence punctuation in it (。，、；！？…!?;,.) and not opening with a quotation mark or a
   bracket.

A chapter runs from the start of its heading line to the start of the next heading; the text
before the first heading, when it holds anything, is a first part without a title. The REPL
reads a manuscript chapter by chapter and keeps the model's state at each chapter's start.

A manuscript is tidied as an opening is (text/cleanup.py: one paragraph per line, no blank
lines), except that a heading keeps a blank line before and after it (`clean_manuscript`),
which is also how `/chapter TITLE` writes one: "\\n\\nTITLE\\n\\n" after the story.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ai_writer.errors import InputTextError
from ai_writer.text.cleanup import clean_opening

MAX_HEADING = 40  # characters of a named heading (rules 1-4)
MAX_SHORT_HEADING = 30  # characters of a heading standing alone between blank lines (rule 5)

_ZH = "〇零一二两三四五六七八九十百千万壹贰叁肆伍陆柒捌玖拾佰仟"
_NUMBER = rf"[{_ZH}0-9０-９]+"
_UNITS = "one|two|three|four|five|six|seven|eight|nine"
_TEENS = "ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen"
_TENS = "twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety"
_WORDS = rf"(?:(?:{_TENS})(?:[- ](?:{_UNITS}))?|{_TEENS}|{_UNITS})"
_NAMED = re.compile(
    rf"第\s*{_NUMBER}\s*(?:章|回(?!合)|节(?!课)|卷)"  # 1
    rf"|卷\s*{_NUMBER}|(?:序章|楔子|引子|尾声|终章|后记|番外)(?:$|[\s:：\-—·])"  # 2
    r"|#{1,6}\s+\S"  # 3
    rf"|(?i:chapter\s+(?:[0-9]+|[ivxlcdm]+|{_WORDS})(?![a-z]))")  # 4
_SENTENCE_PUNCTUATION = set("。，、；！？…!?;,.")
_OPENERS = set("“‘「『\"'（(【[《<")


@dataclass(frozen=True)
class Chapter:
    number: int  # 1-based, as listed
    title: str  # the heading line without its spaces; "" for the text before the first heading
    begin: int  # character offset of its heading line (0 for the untitled first part)
    end: int  # where the next chapter begins (the length of the text for the last)

    @property
    def chars(self) -> int:
        return self.end - self.begin


def is_named_heading(line: str) -> bool:
    """Rules 1-4: a heading whatever the lines around it."""
    line = line.strip()
    return (0 < len(line) <= MAX_HEADING and _NAMED.match(line) is not None
            and not ("。" in line or "，" in line))


def is_short_title(line: str) -> bool:
    """Rule 5 without the blank lines: short, no sentence punctuation, not a quotation."""
    line = line.strip()
    return (0 < len(line) <= MAX_SHORT_HEADING and line[0] not in _OPENERS
            and not any(c in _SENTENCE_PUNCTUATION for c in line))


def heading_lines(text: str) -> list[tuple[int, str]]:
    """(offset of the line, the line stripped) of every heading in `text`, in order."""
    lines = text.split("\n")
    blank = [not line.strip() for line in lines]
    found, offset = [], 0
    for i, line in enumerate(lines):
        if not blank[i] and len(line) <= 4 * MAX_HEADING:  # most lines are long prose: skip them at once
            alone = (i == 0 or blank[i - 1]) and i + 2 < len(lines) and blank[i + 1]  # "\n\n" after it
            if is_named_heading(line) or (alone and is_short_title(line)):
                found.append((offset, line.strip()))
        offset += len(line) + 1
    return found


def split_chapters(text: str) -> list[Chapter]:
    """The chapters of `text` (module docstring); an untitled first part when text comes before the first
    heading; one untitled part for a text without headings; nothing for an empty text."""
    starts = heading_lines(text)
    if not starts or text[: starts[0][0]].strip():
        starts.insert(0, (0, ""))
    if not text.strip():
        return []
    ends = [offset for offset, _ in starts[1:]] + [len(text)]
    return [Chapter(n, title, begin, end) for n, ((begin, title), end) in enumerate(zip(starts, ends), 1)]


def clean_manuscript(text: str) -> str:
    """A manuscript laid out as an opening (text/cleanup.clean_opening), with each heading kept between blank
    lines, so that it stays a heading (rule 5) and stands out in the saved text."""
    headings = {offset for offset, _ in heading_lines(text)}
    parts, offset = [], 0
    for line in text.split("\n"):
        if line.strip():
            parts.append((line.strip(), offset in headings))
        offset += len(line) + 1
    if not any(is_heading for _, is_heading in parts):
        return clean_opening(text)
    lines: list[str] = []
    for line, is_heading in parts:
        if is_heading:
            lines += ([""] if lines and lines[-1] else []) + [line, ""]  # a blank line before and after
        else:
            lines.append(line)
    return "\n" + "\n".join(lines) + ("\n" if not lines[-1] else "")


def heading_text(story: str, title: str) -> str:
    """The text `/chapter TITLE` appends to `story`: the title between blank lines ("\\n\\nTITLE\\n\\n", fewer
    line breaks before it where the story already ends with some)."""
    title = title.strip()
    if "\n" in title or not (is_named_heading(title) or is_short_title(title)):
        raise InputTextError(f"a chapter title is one line of at most {MAX_SHORT_HEADING} characters without "
                             f"sentence punctuation, or a heading such as 第十章 风起 (got {title[:50]!r})")
    before = len(story) - len(story.rstrip("\n"))
    return "\n" * max(0, 2 - before) + title + "\n\n"
