"""Errors in user input, written for the person who must fix it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Location:
    """Where in a user's file something stands (1-based line and column)."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with the input: where, which field, and what."""

    location: Location
    field: str
    message: str

    def __str__(self) -> str:
        # a field names the keys leading to it: keys of an invalid document, cut like values
        field = f" {_one_line(excerpt(self.field, FIELD_CHARS))}:" if self.field else ""
        return f"{self.location}:{field} {_one_line(self.message)}"


EXCERPT_CHARS = 32
FIELD_CHARS = 160


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` as a message quotes it: whole when short, else clearly cut. A value of an
    invalid document may be a secret (a link to a credentials file), so no message quotes
    more of it than this."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}[... {len(text) - limit} more characters cut]"


def _one_line(text: str) -> str:
    """Line breaks from the input (a key or value quoted in a message) shown escaped, so
    every problem prints as exactly one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class InputError(Exception):
    """Input that cannot be used; carries every problem found, not only the first."""

    def __init__(self, problems: tuple[Problem, ...] | list[Problem]) -> None:
        self.problems = tuple(sorted(problems))
        super().__init__("\n".join(str(p) for p in self.problems))
