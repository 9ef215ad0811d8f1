"""Modern Simplified-Chinese punctuation: the old e-text marks rewritten as a writer types them today.

The public-domain e-texts of corpus/ quote with 「」『』, end sentences with ． (紅樓夢) and use
the small and vertical forms ﹔︰﹕﹖﹗﹐﹑; some mix half-width quotes into “” and `'. A model
trained with `--punctuation modern` reads and writes only the modern marks. `modernize` is
the one mapping, applied line by line (a line is the text between two "\\n"):

everywhere
    「 → “   」 → ”   『 → ‘   』 → ’
    ﹔ → ；   ︰ ﹕ → ：   ﹖ → ？   ﹗ → ！   ﹐ → ，   ﹑ → 、
    a run of two or more ． → ……   a single ． → 。

only in lines holding CJK (an ideograph, kana, a CJK or full-width punctuation mark), so that
English text is left alone
    half-width " → “ or ”, alternating: it opens unless a double quote is open, and a “ or ”
        already in the line counts (紅樓夢 writes “...?" as often as "...")
    ` → ‘ (紅樓夢 opens single quotes with it) and ' → ‘ or ’, alternating the same way with
        ‘ and ’; a ' between two ASCII letters or digits is an apostrophe: ’, not a quote
    a run of half-width , ; : ? ! between two CJK characters (“ ” ‘ ’ … count as CJK here)
        → ， ； ： ？ ！ (道:「 becomes 道：“)

`modernize` is idempotent, and changes nothing in text that holds none of the characters above.
`OLD_PUNCTUATION` maps each character a modern model never writes to the modern ones that
replace it (char_tokenizer.py bans a character only when its vocabulary has them).
"""

from __future__ import annotations

import re

MODERN = "modern"  # the value a model's metadata ("punctuation") and `--punctuation` give
MAPPING_VERSION = 1  # part of the training corpus cache key (training/corpus.py): bump it when the mapping changes

_SAME_EVERYWHERE = str.maketrans({
    "「": "“", "」": "”", "『": "‘", "』": "’",
    "﹔": "；", "︰": "：", "﹕": "：", "﹖": "？", "﹗": "！", "﹐": "，", "﹑": "、",
})
_FULL_WIDTH = str.maketrans({",": "，", ";": "；", ":": "：", "?": "？", "!": "！"})

# characters a model with modern punctuation never writes -> the characters that replace them
OLD_PUNCTUATION = {
    "「": "“", "」": "”", "『": "‘", "』": "’",
    "﹔": "；", "︰": "：", "﹕": "：", "﹖": "？", "﹗": "！", "﹐": "，", "﹑": "、",
    "．": "。", '"': "“”", "'": "‘’", "`": "‘",
}

_CJK = (
    "\u2e80-\u2fff"  # radicals, ideographic description
    "\u3000-\u303f"  # CJK symbols and punctuation (、。「」『』...)
    "\u3040-\u30ff\u3100-\u31ff"  # kana, bopomofo, strokes
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # ideographs
    "\ufe10-\ufe1f\ufe30-\ufe6f"  # vertical, compatibility and small forms (︰﹔...)
    "\uff00-\uffef"  # full-width forms (，．：...)
    "\U00020000-\U0003ffff"  # ideographs beyond the BMP
)
_HOLDS_CJK = re.compile(f"[{_CJK}]")
_NEIGHBOUR = f"[{_CJK}“”‘’…]"
_HALF_WIDTH_RUN = re.compile(f"(?<={_NEIGHBOUR})[,;:?!]+(?={_NEIGHBOUR})")
_DOTS = re.compile("．{2,}")


def modernize(text: str) -> str:
    """`text` with modern punctuation, as the module docstring maps it.

    >>> modernize('他道：「好．」又道:"去吧！"')
    '他道：“好。”又道：“去吧！”'
    >>> modernize('He said "hi", didn\\'t he?')
    'He said "hi", didn\\'t he?'
    """
    return "\n".join(_modernize_line(line) for line in text.split("\n"))


def _modernize_line(line: str) -> str:
    holds_cjk = _HOLDS_CJK.search(line) is not None
    if not holds_cjk:
        return line  # every character mapped everywhere is CJK: such a line has none
    line = _DOTS.sub("……", line.translate(_SAME_EVERYWHERE)).replace("．", "。")
    if '"' in line:
        line = _alternate(line, '"', "“", "”", openers="")
    if "'" in line or "`" in line:
        line = _alternate(line, "'", "‘", "’", openers="`")
    return _HALF_WIDTH_RUN.sub(lambda m: m.group().translate(_FULL_WIDTH), line)


def _alternate(line: str, mark: str, left: str, right: str, openers: str) -> str:
    """Each `mark` becomes `left` unless a quote is open (after a `left`), then `right`; `openers` always open.
    A ' between two ASCII letters or digits is an apostrophe: ’, and no quote opens or closes there."""
    out, is_open = [], False
    for i, char in enumerate(line):
        if char == "'" and _is_ascii_alnum(line[i - 1 : i]) and _is_ascii_alnum(line[i + 1 : i + 2]):
            out.append("’")
            continue
        if char == mark:
            char = right if is_open else left
        elif char in openers:
            char = left
        if char == left:
            is_open = True
        elif char == right:
            is_open = False
        out.append(char)
    return "".join(out)


def _is_ascii_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


def writes_modern(tokenizer) -> bool:
    """True for the tokenizer of a model trained with modern punctuation (a CharTokenizer that says so)."""
    return getattr(tokenizer, "punctuation", None) == MODERN
