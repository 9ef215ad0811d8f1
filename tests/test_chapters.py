"""Chapter headings told from the text (story/chapters.py): each rule, the lines that must not count, a
manuscript's tidying, and a property test that a generated book splits where its headings are."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_writer.errors import InputTextError
from ai_writer.story.chapters import (
    Chapter,
    clean_manuscript,
    heading_lines,
    heading_text,
    is_named_heading,
    split_chapters,
)


@pytest.mark.parametrize("line", [
    "第一章", "第一章 风起", "第十二章　风起云涌", "第12回", "第 三 卷", "第１２章", "第一百零八回 忠义堂石碣受天文",
    "第二节 夜行", "卷一", "卷三 风起", "楔子", "序章：开始", "番外 小师妹", "# 风起", "### Part one",
    "Chapter 3", "CHAPTER IV", "chapter xii", "Chapter Twenty-One: The Storm", "  　第三章 前后有空白　",
])
def test_named_headings(line):
    assert is_named_heading(line)
    assert heading_lines(f"正文。\n{line}\n正文。\n") == [(4, line.strip())]  # whatever the lines around it


@pytest.mark.parametrize("line", [
    "第一回合，他就输了。", "第一回合他就输了", "第一节课开始了", "第二天，他走了。", "第一章 他来了。",
    "卷起了一阵风。", "楔子里藏着什么", "#风起", "Chapter and verse", "Chapter ivory tower",
    "第一章" + "很长的标题" * 8,  # more than 40 characters
])
def test_lines_that_are_not_named_headings(line):
    assert not is_named_heading(line)
    assert heading_lines(f"正文。\n{line}\n正文。\n") == []


def test_a_short_line_alone_between_blank_lines():
    text = "\n风起\n\n正文在这里。\n\n云涌\n\n又是正文。\n"
    assert [title for _, title in heading_lines(text)] == ["风起", "云涌"]  # the start of the text counts as blank
    for not_alone in ("正文。\n风起\n\n正文。", "正文。\n\n风起\n正文。", "正文。\n\n风起", "风起\n"):  # blank each side
        assert heading_lines(not_alone) == []
    for line in ("“好”", "「走吧」", "他笑了。", "好，走吧", "Yes, sir", "短" * 31):  # quotes, punctuation, length
        assert heading_lines(f"正文。\n\n{line}\n\n正文。") == [], line


def test_split_chapters_offsets_titles_and_the_untitled_first_part():
    text = "前言一段。\n第一章 风起\n甲。\n乙。\n第二章 云涌\n丙。\n"
    assert split_chapters(text) == [
        Chapter(1, "", 0, 6), Chapter(2, "第一章 风起", 6, 19), Chapter(3, "第二章 云涌", 19, len(text))]
    assert [c.chars for c in split_chapters(text)] == [6, 13, len(text) - 19]
    assert split_chapters("\n第一章\n正文。")[0] == Chapter(1, "第一章", 1, len("\n第一章\n正文。"))  # blank before: no part
    assert split_chapters("只有正文。\n没有标题。") == [Chapter(1, "", 0, 11)]
    assert split_chapters("") == [] and split_chapters("\n\n") == []


def test_clean_manuscript_keeps_headings_between_blank_lines():
    raw = "\u3000\u3000书名\n\n第一章 风起\n\u3000\u3000他走了。\n\n\n他又回来了。\n\n云涌\n\n正文。  \n"
    clean = clean_manuscript(raw)
    assert clean == "\n书名\n\n第一章 风起\n\n他走了。\n他又回来了。\n\n云涌\n\n正文。"
    assert [c.title for c in split_chapters(clean)] == [c.title for c in split_chapters(raw)] == \
        ["书名", "第一章 风起", "云涌"]
    assert clean_manuscript("一段。\n\n二段。\n") == "\n一段。\n二段。"  # no headings: as an opening is tidied
    assert clean_manuscript(clean) == clean


def test_heading_text_for_chapter():
    assert heading_text("正文。", "风起") == "\n\n风起\n\n"
    assert heading_text("正文。\n", " 第十章 风起 ") == "\n第十章 风起\n\n"
    assert heading_text("正文。\n\n", "风起") == "风起\n\n"
    story = "正文。\n" + heading_text("正文。\n", "风起") + "又是正文。"
    assert split_chapters(story)[-1].title == "风起"
    for bad in ("他走了。", "短" * 31, "一\n二", ""):
        with pytest.raises(InputTextError, match="a chapter title is one line"):
            heading_text("正文。", bad)


PROSE = st.lists(st.sampled_from(["他拔出了剑，走向远方。", "众人惊呼：“不好！”", "夜色渐深，风吹过山岗。",
                                  "“走吧。”她说。", "There was a storm, and it rained."]), min_size=1, max_size=4)
TITLES = st.sampled_from(["风起", "云涌", "夜行", "归来", ""])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 999), TITLES, PROSE), min_size=1, max_size=12), st.booleans())
def test_a_generated_book_splits_at_its_headings(chapters, blank_lines):
    separator = "\n\n" if blank_lines else "\n"
    parts, expected = [], []
    position = 0
    for number, title, lines in chapters:
        heading = f"第{number}章 {title}".strip()
        expected.append((position, heading))
        part = heading + "\n" + separator.join(lines) + "\n"
        parts.append(part)
        position += len(part)
    text = "".join(parts)
    found = split_chapters(text)
    assert [(c.begin, c.title) for c in found] == expected
    assert [c.end for c in found] == [c.begin for c in found[1:]] + [len(text)]  # chapters tile the text
    assert [c.title for c in split_chapters(clean_manuscript(text))] == [title for _, title in expected]
