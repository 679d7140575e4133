"""Parsers for model text. They never raise: tiny models write anything."""

from __future__ import annotations

import re

# A thousands separator sits between a digit and exactly three digits ("1,234"); a comma in
# "1,2" is a list separator and stays.
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# A minus counts only when it cannot be a range or a hyphen ("3-4" is 3 and 4, not 3 and -4).
_NUMBER = re.compile(r"(?:(?<![\w.])-)?(?<![\d.])\d+(?:\.\d+)?")
_WHITESPACE = re.compile(r"\s+")

MIN_VALUE = 0.0
MAX_VALUE = 10.0


def numbers(text: str) -> list[float]:
    """Every number in `text`, in order; "$1,234.50" reads as 1234.5."""
    return [float(m) for m in _NUMBER.findall(_THOUSANDS_COMMA.sub("", str(text)))]


def last_number(text: str) -> float | None:
    """The last number in `text` (the SEED authors' answer rule), or None."""
    found = numbers(text)
    return found[-1] if found else None


def parse_value(text: str) -> float:
    """The first number in [0, 10] in `text`, else 0: a State Evaluator's score."""
    return next((x for x in numbers(text) if MIN_VALUE <= x <= MAX_VALUE), 0.0)


def format_number(x: float | None) -> str:
    """18.0 -> "18", 2.5 -> "2.5", None -> "none"."""
    if x is None:
        return "none"
    return str(int(x)) if x.is_integer() else str(x)


def normalise_space(text: str) -> str:
    """Collapse every run of whitespace to one space and strip the ends."""
    return _WHITESPACE.sub(" ", text).strip()


def first_line(text: str) -> str:
    """The first non-blank line of `text`, stripped ("" when there is none)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
