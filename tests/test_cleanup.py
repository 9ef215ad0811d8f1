"""clean_opening reproduces the AI-Writer `_new_` refine_context rule (conformance README §8)."""

from __future__ import annotations

import json

import pytest
from helpers import DATA

from ai_writer.text.cleanup import clean_opening

CASES = json.loads((DATA / "refine_context_vectors.json").read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", CASES, ids=[repr(case["input"])[:40] for case in CASES])
def test_matches_the_original_refine_context(case: dict) -> None:
    assert clean_opening(case["input"]) == case["refine_context_new"]


@pytest.mark.parametrize("case", CASES, ids=[repr(case["input"])[:40] for case in CASES])
def test_is_idempotent_and_starts_with_one_newline(case: dict) -> None:
    once = clean_opening(case["input"])
    assert clean_opening(once) == once
    assert once.startswith("\n") and not once.startswith("\n\n")


def test_keeps_spaces_inside_lines_and_drops_blank_lines() -> None:
    opening = "\u3000\u3000他说：  好。\r\n\r\n\u3000\u3000她笑了。\n"
    assert clean_opening(opening) == "\n他说：  好。\n她笑了。"
    assert clean_opening("") == "\n"
