"""Final-answer extraction, shared by the ``vote`` aggregator and benchmark scoring.

Experts state their final answer in many ways ("The answer is (B)", "\\boxed{42}",
"**Answer:** C", "= -7").  We read the answer the model *concluded with*: hidden
thinking is stripped first, then every stated final answer is found and the LAST
one wins.  Explicit statements ("answer is", "Answer:", ``\\boxed{}``) take
precedence over weak cues (a bare "(C)" ending the text, a trailing "= 12", a response
that opens with an option such as "B. Jupiter").
Anything unparsable, out of range or hedged ("A or B") gives ``None`` so callers
can count it separately instead of guessing.

Letters come back upper-case ("B"); numbers come back canonical ("1000", "3.5",
"-7", "1/3") so that "1,000", "1000.0" and "\\frac{2000}{2}" vote together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Callable

LETTERS = "ABCDEFGHIJ"

_THINK_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1\s*>", re.S | re.I)
_THINK_OPEN = re.compile(r"<(?:think|thinking|reasoning)>", re.I)
_THINK_CLOSE = re.compile(r"</(?:think|thinking|reasoning)\s*>", re.I)

_LEAD = (r"(?:\banswer\**\s*(?:(?:is|would\s+be|should\s+be|must\s+be|will\s+be)\b\s*:?|:)"
         r"|\b(?:correct|right|best)\s+(?:option|choice)\s+is\b\s*:?)")
_LETTER_LEAD = re.compile(_LEAD + r"[\s*_$]*(?:(?:option|choice|letter)\s+)?[\s*_$]*"
                          r"(?:\((?P<p>[A-Za-z])\)|\[(?P<b>[A-Za-z])\]|(?-i:(?P<l>[A-Z]))(?![\w']))", re.I)
_LETTER_CORRECT = re.compile(r"\b(?:option|choice)\s+\(?(?-i:(?P<l>[A-Z]))\)?\s+is\s+(?:the\s+)?correct\b",
                             re.I)
_HEDGE = re.compile(r"^\)?[\s*]*(?:or|and|/)\s*\(?[A-J]\b")

_NUM = r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-−]?\.\d+"
_FRAC = rf"[-−]?\\[dt]?frac\{{\s*(?:{_NUM})\s*\}}\{{\s*(?:{_NUM})\s*\}}"
_TOKEN = rf"(?:{_FRAC}|(?:{_NUM})(?:\s*/\s*(?:{_NUM}))?)(?!\.?\w|\s*(?:[\^+×]|\\times|\\cdot))"
_NUMBER_LEAD = re.compile(_LEAD + rf"[\s*_$\\(\[]*(?P<n>{_TOKEN})", re.I)
_NUMBER_EQUALS = re.compile(rf"=\s*\$?\s*(?P<n>{_TOKEN})[\s$*]*\.?\s*$", re.M)
_NUMBER_HEDGE = re.compile(rf"^[\s$]*(?:or|and)\s+\$?(?:{_NUM})")


@dataclass(frozen=True)
class _Hit:
    pos: int              # where the statement ends: the last one in the text wins
    value: str | None     # None: an answer was stated but is unusable (hedged, not a number)


def strip_thinking(text: str | None) -> str:
    """Remove hidden reasoning: ``<think>...</think>`` blocks, everything before a
    stray ``</think>`` (chat templates open the block in the prompt) and everything
    after an unclosed ``<think>`` (generation stopped while still thinking)."""
    if not text:
        return ""
    text = _THINK_BLOCK.sub("", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end():]
    opened = _THINK_OPEN.search(text)
    if opened:
        text = text[:opened.start()]
    return text.strip()


def choice_letters(n: int) -> str:
    """The option letters of an ``n``-choice question: ``choice_letters(4) == "ABCD"``."""
    if not 2 <= n <= len(LETTERS):
        raise ValueError(f"a multiple-choice question has 2 to {len(LETTERS)} options, not {n}")
    return LETTERS[:n]


def extract_choice(text: str | None, letters: str = LETTERS) -> str | None:
    """The last stated multiple-choice letter, or None (none stated, out of ``letters``, hedged)."""
    return extract_answer(text, letters)


def extract_number(text: str | None) -> str | None:
    """The last stated numeric final answer in canonical form, or None."""
    return _last(_number_hits, strip_thinking(text))


def extract_answer(text: str | None, choices: str | None = None) -> str | None:
    """The final answer of a response.

    ``choices`` are the allowed option letters ("ABCD"): only a letter among them
    counts.  With ``choices=None`` the question's kind is unknown and either a
    letter A-J or a number is accepted, whichever the response concluded with.
    """
    body = strip_thinking(text)
    if choices is not None:
        value = _last(_letter_hits, body)
        return value if value is not None and value in choices.upper() else None
    return _last(lambda t, strong: _letter_hits(t, strong) + _number_hits(t, strong), body)


def _last(finder: Callable[[str, bool], list[_Hit]], body: str) -> str | None:
    """Explicit statements first; weak cues only when the text has none."""
    if not body:
        return None
    for strong in (True, False):
        hits = finder(body, strong)
        if hits:
            return max(hits, key=lambda h: h.pos).value
    return None


def _letter_hits(text: str, strong: bool) -> list[_Hit]:
    if not strong:
        return _weak_letters(text)
    hits = []
    for m in _LETTER_LEAD.finditer(text):
        letter = (m.group("p") or m.group("b") or m.group("l")).upper()
        rest = text[m.end():m.end() + 24]
        if m.group("l") and letter in "AI" and re.match(r"\s*[A-Za-z]", rest):
            continue                      # "the answer is I think ...", "answer is A bit ..."
        hits.append(_Hit(m.end(), None if _HEDGE.match(rest) else letter))
    hits += [_Hit(m.end(), m.group("l")) for m in _LETTER_CORRECT.finditer(text)]
    for pos, content in _boxed(text):
        letter = _boxed_letter(content)
        if letter:
            hits.append(_Hit(pos, letter))
    return hits


def _weak_letters(text: str) -> list[_Hit]:
    """A response ending in a bare "(C)" or whose last line is just a letter; failing those, one
    that opens with an option ("B. Jupiter", "(C) 12 moles", a first line that is just "D")."""
    lines = text.strip().splitlines()
    last_line = lines[-1].strip(" *#_`>").strip()
    m = re.fullmatch(r"\(?([A-J])\)?[.)]?", last_line)
    if m:
        return [_Hit(len(text), m.group(1))]
    m = re.search(r"\(([A-J])\)[\s*]*\.?\s*$", text)
    if m:
        return [_Hit(m.end(), m.group(1))]
    first_line = lines[0].strip(" *#_`>").strip()
    m = re.match(r"\(?([A-J])(?:[.)]\s|\)|[.)]?$)", first_line)
    return [_Hit(0, m.group(1))] if m else []


def _number_hits(text: str, strong: bool) -> list[_Hit]:
    if strong:
        hits = [_Hit(m.end(), None if _NUMBER_HEDGE.match(text[m.end():m.end() + 24])
                     else _canonical(m.group("n"))) for m in _NUMBER_LEAD.finditer(text)]
        hits += [_Hit(pos, _canonical(c)) for pos, c in _boxed(text) if _canonical(c) is not None]
        return hits
    whole = _canonical(text.strip().rstrip("."))
    if whole is not None:
        return [_Hit(len(text), whole)]
    return [_Hit(m.end(), _canonical(m.group("n"))) for m in _NUMBER_EQUALS.finditer(text)]


def _boxed(text: str) -> list[tuple[int, str]]:
    """``(end position, content)`` of every ``\\boxed{...}`` / ``\\fbox{...}``, nested braces allowed."""
    found = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found.append((i, text[m.end():i - 1].strip()))
    return found


def _unwrap(content: str) -> str:
    """Drop LaTeX text wrappers: ``\\text{(B)}`` -> ``(B)``."""
    while True:
        m = re.fullmatch(r"\\(?:text|textbf|mathrm|mathbf|textit)\s*\{(.*)\}", content.strip(), re.S)
        if not m:
            return content.strip()
        content = m.group(1)


def _boxed_letter(content: str) -> str | None:
    m = re.match(r"\(?([A-Za-z])\)?(?=$|[\s.:)])", _unwrap(content))
    if not m or (m.group(1).islower() and not content.lstrip().startswith("(")):
        return None
    return m.group(1).upper()


def _canonical(token: str) -> str | None:
    """"1,000" -> "1000"; "3.50" -> "3.5"; "\\frac{1}{2}" -> "0.5"; "1/3" -> "1/3"; else None."""
    s = _unwrap(token).replace("−", "-").replace("\\!", "").replace("\\,", "")
    s = re.sub(r"^\$|\$$|\\%$|%$", "", s.strip()).strip()
    frac = re.fullmatch(r"(-?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}", s)
    if frac:
        s = f"{frac.group(1)}{frac.group(2)}/{frac.group(3)}"
    parts = [p.strip() for p in s.split("/")]
    if len(parts) > 2 or not all(re.fullmatch(_NUM, p) for p in parts):
        return None
    try:
        values = [Fraction(p.replace(",", "")) for p in parts]
        value = values[0] / values[1] if len(values) == 2 else values[0]
    except ZeroDivisionError:
        return None
    return _format(value)


def _format(value: Fraction) -> str:
    """Integers plainly, terminating decimals as decimals, other fractions as "p/q"."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return f"{value.numerator}/{value.denominator}"
    exact = Decimal(value.numerator) / Decimal(value.denominator)   # terminates: exact at 28 digits
    return format(exact.normalize(), "f")
