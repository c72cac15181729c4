"""YAML to plain data, remembering where every key and value stands.

PyYAML's loaders drop positions and silently keep the last of duplicate keys; this walks the
composed node graph instead, so every value keeps its line and column, duplicates are errors,
and alias expansion is bounded (no "billion laughs").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from reconciler.problems import Location, Problem, excerpt

Path = tuple[str | int, ...]

MAX_NODES = 100_000
MAX_DEPTH = 64

Kind = Literal["integer", "boolean"]
Advice = Callable[[Path, Kind], str]
"""What to write instead of an ambiguous spelling, given the value's field."""

_INT_TAG = "tag:yaml.org,2002:int"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_STR_TAG = "tag:yaml.org,2002:str"
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # YAML's, which its marks count
_PLAIN_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
# YAML 1.1's booleans. PyYAML reads y and n as strings; other YAML 1.1 readers do not.
_TRUE_WORDS = frozenset({"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"})
_FALSE_WORDS = frozenset(
    {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
)


@dataclass
class Marks:
    """Positions of keys and values by field path, for one file."""

    file: str
    keys: dict[Path, Location] = field(default_factory=dict)
    values: dict[Path, Location] = field(default_factory=dict)

    def of_value(self, path: Path) -> Location:
        return self._nearest(self.values, path)

    def of_key(self, path: Path) -> Location:
        return self._nearest(self.keys, path) if path in self.keys else self.of_value(path)

    def _nearest(self, table: dict[Path, Location], path: Path) -> Location:
        while path and path not in table:
            path = path[:-1]
        return table.get(path, Location(self.file, 1, 1))


# libyaml's composer is about 6x faster and bounds nesting itself; PyYAML's is the fallback.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _TooLarge(Exception):
    def __init__(self, message: str, where: Location) -> None:
        super().__init__(message)
        self.where = where


def plain_advice(_path: Path, kind: Kind) -> str:
    return "write true or false" if kind == "boolean" else "write the number in plain decimal"


def load(text: str, file: str, advice: Advice = plain_advice) -> tuple[Any, Marks, list[Problem]]:
    """Parse one YAML document into (data, marks, problems); data is None when unreadable.

    A number or boolean that YAML 1.1 reads otherwise than a person would (010 is 8, on is
    true) is a problem, ending in `advice` for its field.
    """
    marks = Marks(file)
    try:
        nodes = list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        hint = _tab_hint(text, error.problem_mark)
        return None, marks, [Problem(where, "", f"invalid YAML: {_explain(error)}{hint}")]
    except yaml.reader.ReaderError as error:  # its str() spans two lines, with an offset
        before = text[: error.position]
        where = Location(file, before.count("\n") + 1, len(before) - before.rfind("\n"))
        char = error.character
        code = char if isinstance(char, int) else ord(char) if len(char) == 1 else None
        what = f"character #x{code:04x}: " if code is not None else ""
        return None, marks, [Problem(where, "", f"invalid YAML: {what}{error.reason}")]
    except yaml.YAMLError as error:
        return None, marks, [Problem(Location(file, 1, 1), "", f"invalid YAML: {error}")]
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        return (
            None,
            marks,
            [Problem(Location(file, 1, 1), "", f"document nests deeper than {MAX_DEPTH} levels")],
        )
    nodes = [n for n in nodes if n is not None]
    if not nodes:
        return (
            None,
            marks,
            [Problem(Location(file, 1, 1), "", "empty file: expected a desired-state document")],
        )
    if len(nodes) > 1:
        second = nodes[1].start_mark
        where = Location(file, second.line + 1, second.column + 1)
        return None, marks, [Problem(where, "", "one document per file, found several ('---')")]
    builder = _Builder(marks, advice)
    try:
        data = builder.build(nodes[0], ())
    except _TooLarge as error:
        return None, marks, [Problem(error.where, "", str(error))]
    return data, marks, builder.problems


def _tab_hint(text: str, mark: yaml.Mark | None) -> str:
    """A hint when the scanner stopped at a tab: libyaml only says it "cannot start any
    token"."""
    if mark is None:
        return ""
    lines = _LINE_BREAK.split(text)
    if mark.line >= len(lines) or lines[mark.line][mark.column : mark.column + 1] != "\t":
        return ""
    return " (a tab: YAML indents with spaces only)"


def _explain(error: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem, with its context when it has one ("second occurrence" alone, for a
    duplicate anchor, says nothing)."""
    problem = error.problem or str(error)
    if not error.context:
        return problem
    mark = error.context_mark
    if mark is not None and mark != error.problem_mark:
        return f"{error.context} (line {mark.line + 1}), {problem}"
    return f"{error.context}: {problem}"


# Booleans in YAML 1.1 and 1.2 alike: as values they mean what they say to every reader.
_BOOLEANS_EVERYWHERE = frozenset({"true", "True", "TRUE", "false", "False", "FALSE"})


def _yaml11_boolean(node: yaml.ScalarNode) -> bool | None:
    """The boolean YAML 1.1 reads `node` as, None when it reads none; quoted words and
    explicit strings are text."""
    if node.tag == _STR_TAG and node.style:
        return None
    if node.tag not in (_BOOL_TAG, _STR_TAG):
        return None
    return True if node.value in _TRUE_WORDS else False if node.value in _FALSE_WORDS else None


def _is_plain_decimal(node: yaml.ScalarNode) -> bool:
    """Whether an integer is written as every YAML version and every person reads it."""
    return node.tag != _INT_TAG or _PLAIN_DECIMAL.fullmatch(node.value) is not None


def _int_notation(text: str) -> str:
    """How YAML 1.1 reads an integer written other than in plain decimal."""
    digits = text.lstrip("+-").replace("_", "")
    if ":" in digits:
        return "sexagesimal, base 60"
    if digits.startswith("0x"):
        return "hexadecimal"
    if digits.startswith("0b"):
        return "binary"
    if digits.startswith("0") and len(digits) > 1:
        return "octal"
    return "'_' ignored"


def _yaml11_reading(node: yaml.ScalarNode, value: Any) -> tuple[Kind, str] | None:
    """(kind, how YAML 1.1 reads it) for a number or boolean spelt so that a person, or a
    YAML 1.2 reader, takes it otherwise (010, 1:20, yes, On); None for a plain spelling."""
    if not _is_plain_decimal(node):
        return "integer", f"{value} ({_int_notation(node.value)})"
    boolean = _yaml11_boolean(node)
    if boolean is not None and node.value not in _BOOLEANS_EVERYWHERE:
        return "boolean", str(boolean).lower()
    return None


def _key_problem(node: yaml.ScalarNode) -> str | None:
    """Why a key YAML reads as a boolean or as a number not in plain decimal is no name: this
    module keeps keys as written, other YAML readers do not."""
    boolean = _yaml11_boolean(node)
    if boolean is not None:
        meaning = f"a boolean ({str(boolean).lower()})"
    elif not _is_plain_decimal(node):
        meaning = f"a number ({_int_notation(node.value)})"
    else:
        return None
    key = excerpt(node.value)
    return f"key {key} is read as {meaning} by YAML 1.1; quote it: '{key}'"


class _Builder:
    def __init__(self, marks: Marks, advice: Advice) -> None:
        self.marks = marks
        self.advice = advice
        self.problems: list[Problem] = []
        self.budget = MAX_NODES
        self.built: set[int] = set()  # ids of the nodes built: one built again is an alias
        self.aliases_used: list[Location] = []  # where the aliases being expanded stand
        self.constructor = yaml.SafeLoader("")

    def _where(self, node: yaml.Node) -> Location:
        return Location(self.marks.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: yaml.Node, path: Path, used_at: Location | None = None) -> Any:
        """`node` as plain data; `used_at` is where it is referred to (its key, or the list
        holding it): an alias stands there, and the node's own mark is its anchor's."""
        alias = id(node) in self.built
        if not alias:
            self.built.add(id(node))
            return self._build(node, path)
        self.aliases_used.append(used_at or self._where(node))
        try:
            return self._build(node, path)
        finally:
            self.aliases_used.pop()

    def _too_large(self, message: str, node: yaml.Node) -> _TooLarge:
        # An alias bomb or a recursive alias: the line of the outermost alias that led here
        where = self.aliases_used[0] if self.aliases_used else self._where(node)
        return _TooLarge(message, where)

    def _build(self, node: yaml.Node, path: Path) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise self._too_large(
                f"document expands to more than {MAX_NODES} values (aliases?)", node
            )
        if len(path) > MAX_DEPTH:
            raise self._too_large(f"document nests deeper than {MAX_DEPTH} levels", node)
        self.marks.values.setdefault(path, self._where(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        where = self._where(node)
        return [self.build(item, (*path, i), where) for i, item in enumerate(node.value)]

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as error:
            why = error.problem if isinstance(error, yaml.MarkedYAMLError) else str(error)
            self.problems.append(
                Problem(self._where(node), dotted(path), f"bad value: {excerpt(str(why), 120)}")
            )
            return None
        except Exception:
            # SafeConstructor trusts explicit tags: `!!int one`, `!!int ''`, `!!bool maybe`
            # and `!!timestamp soon` fail inside it with ValueError, IndexError, KeyError or
            # AttributeError; untrusted text must not reach the user as a traceback.
            self.problems.append(
                Problem(
                    self._where(node),
                    dotted(path),
                    f"bad value: {excerpt(repr(node.value))} is not a valid"
                    f" {excerpt(node.tag.rsplit(':', 1)[-1])}",
                )
            )
            return None
        reading = _yaml11_reading(node, value)
        if reading is not None:
            kind, meaning = reading
            self.problems.append(
                Problem(
                    self._where(node),
                    dotted(path),
                    f"{excerpt(node.value)} is ambiguous: YAML 1.1 reads it as"
                    f" {excerpt(meaning, 80)}; {self.advice(path, kind)}",
                )
            )
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, Location] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(
                    Problem(self._where(key_node), dotted(path), "keys must be plain names")
                )
                continue
            key = str(key_node.value)
            where = self._where(key_node)
            if key in first_seen:
                first = first_seen[key]
                self.problems.append(
                    Problem(
                        where,
                        dotted((*path, key)),
                        f"duplicate key '{excerpt(key)}' (first at line {first.line})",
                    )
                )
                continue
            first_seen[key] = where
            unnamed = _key_problem(key_node)
            if unnamed is not None:
                self.problems.append(Problem(where, dotted((*path, key)), unnamed))
            self.marks.keys[(*path, key)] = where
            result[key] = self.build(value_node, (*path, key), where)
        return result


def dotted(path: Path) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + part
    return text
