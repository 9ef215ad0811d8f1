"""Prompt cleaning: the way AI-Writer tidies an opening before continuing it.

The command line applies `clean_opening` to every prompt by default (``--raw`` skips it),
because the original models were trained on text laid out this way: one paragraph per
line, no indentation, no blank lines. For a model trained with modern punctuation (its
tokenizer's `punctuation` is "modern"), the caller passes `modern_punctuation=True` and the
opening's old marks (「」『』．...) are rewritten as the model learned them (text/punctuation.py).
"""

from __future__ import annotations

from ai_writer.text.punctuation import modernize


def clean_opening(text: str, modern_punctuation: bool = False) -> str:
    """Tidy an opening the way the AI-Writer ``_new_`` models expect it.

    - leading and trailing whitespace of the whole text is removed;
    - the text is split into lines on ``\\n`` only (``\\r\\n`` works: the ``\\r`` is
      whitespace at the line end), and each line loses its leading and trailing
      whitespace, full-width spaces (U+3000) included;
    - lines left empty are dropped, so paragraphs end up on consecutive lines;
    - the result starts with one ``\\n``, the model's paragraph marker;
    - with `modern_punctuation`, punctuation.modernize is applied last.

    Spaces inside a line are kept. "Whitespace" is Python's ``str.strip()`` set, which
    does not include the zero-width space U+200B or the BOM U+FEFF.

    >>> clean_opening("\\u3000\\u3000第一段\\n\\n  第二段  \\n")
    '\\n第一段\\n第二段'
    >>> clean_opening("   ")
    '\\n'
    >>> clean_opening("他道：「好．」", modern_punctuation=True)
    '\\n他道：“好。”'
    """
    lines = (line.strip() for line in text.strip().split("\n"))
    cleaned = "\n" + "\n".join(line for line in lines if line).strip()
    return modernize(cleaned) if modern_punctuation else cleaned
