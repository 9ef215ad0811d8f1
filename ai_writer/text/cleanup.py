"""Prompt cleaning: the way AI-Writer tidies an opening before continuing it.

The command line applies `clean_opening` to every prompt by default (``--raw`` skips it),
because the original models were trained on text laid out this way: one paragraph per
line, no indentation, no blank lines.
"""

from __future__ import annotations


def clean_opening(text: str) -> str:
    """Tidy an opening the way the AI-Writer ``_new_`` models expect it.

    - leading and trailing whitespace of the whole text is removed;
    - the text is split into lines on ``\\n`` only (``\\r\\n`` works: the ``\\r`` is
      whitespace at the line end), and each line loses its leading and trailing
      whitespace, full-width spaces (U+3000) included;
    - lines left empty are dropped, so paragraphs end up on consecutive lines;
    - the result starts with one ``\\n``, the model's paragraph marker.

    Spaces inside a line are kept. "Whitespace" is Python's ``str.strip()`` set, which
    does not include the zero-width space U+200B or the BOM U+FEFF.

    >>> clean_opening("\\u3000\\u3000第一段\\n\\n  第二段  \\n")
    '\\n第一段\\n第二段'
    >>> clean_opening("   ")
    '\\n'
    """
    lines = (line.strip() for line in text.strip().split("\n"))
    return "\n" + "\n".join(line for line in lines if line).strip()
