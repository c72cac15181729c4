"""models.config: TFS's ModelServerConfig in protobuf text format, read and rendered.

Parsing and printing are protobuf's own `text_format` on TFS's message definitions, so any file
TFS accepts parses here. Fields the reconciler does not manage (logging_config, model_type,
anything unknown to it) are carried through untouched as serialized bytes.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

from google.protobuf import text_encoding

from reconciler.by_name import index_by_name
from reconciler.policy import AllVersions, Latest, Specific, VersionPolicy
from reconciler.problems import InputError, Location, Problem, excerpt

if TYPE_CHECKING:
    from reconciler.proto import tensorflow_serving_pb2 as pb

# protobuf's messages and text_format are imported where they are used: a file the line
# parser reads, and a config rendered without unmanaged fields, need neither (~30 ms of
# every command's start).

_MANAGED_FIELDS = ("name", "base_path", "model_platform", "model_version_policy", "version_labels")


@dataclass(frozen=True)
class ConfigModel:
    """One `config { ... }` entry of a model_config_list."""

    name: str
    base_path: str
    platform: str = "tensorflow"
    policy: VersionPolicy | None = None  # None: no policy set, which TFS reads as latest 1
    labels: tuple[tuple[str, int], ...] = ()
    unmanaged: bytes = field(default=b"", repr=False)

    @property
    def label_map(self) -> dict[str, int]:
        return dict(self.labels)

    @property
    def effective_policy(self) -> VersionPolicy:
        return self.policy if self.policy is not None else Latest(1)

    def same_base_path(self, other: str) -> bool:
        return normalize_path(self.base_path) == normalize_path(other)


@dataclass(frozen=True)
class ServingConfig:
    """A whole models.config. `custom` is set when the file uses custom_model_config."""

    models: tuple[ConfigModel, ...] = ()
    custom: bool = False

    def model(self, name: str) -> ConfigModel | None:
        return self._by_name.get(name)

    @cached_property
    def _by_name(self) -> dict[str, ConfigModel]:  # plans look up every model: no linear scans
        return index_by_name(self.models)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)


def changed_models(before: ServingConfig | None, after: ServingConfig) -> frozenset[str]:
    """The names of the models whose entries differ between two configs (added and removed
    ones included)."""
    old = before or ServingConfig()
    names = set(old.names) | set(after.names)
    return frozenset(n for n in names if old.model(n) != after.model(n))


def normalize_path(path: str) -> str:
    return posixpath.normpath(path) if path else path


def sorted_labels(labels: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(labels.items()))


def with_labels(model: ConfigModel, labels: dict[str, int]) -> ConfigModel:
    return replace(model, labels=sorted_labels(labels))


@lru_cache(maxsize=4)
def parse_config(text: str, source: str = "models.config") -> ServingConfig:
    """Parse models.config text; raise InputError naming the line and column on bad input.

    The layout `render_config` writes (a field or brace per line, strings without escapes)
    is read by a line parser, ten times faster than protobuf's pure-Python text_format (a
    1,000-model file took ~0.3 s); anything else, and anything the line parser is unsure of,
    goes to text_format, whose answer it equals wherever it gives one."""
    fast = _parse_rendered(text)
    if fast is not None:
        return _checked(fast, source)
    return parse_with_text_format(text, source)


def parse_with_text_format(text: str, source: str = "models.config") -> ServingConfig:
    """parse_config by protobuf's text_format alone (what the line parser must equal)."""
    from google.protobuf import text_format

    from reconciler.proto import tensorflow_serving_pb2 as pb

    try:
        message = text_format.Parse(text, pb.ModelServerConfig())
    except text_format.ParseError as error:
        line, column = error.GetLine() or 0, error.GetColumn() or 0
        why = str(error)
        lines = text.splitlines()
        if 0 < line <= len(lines) and lines[line - 1].strip():
            # protobuf quotes the whole line: a link to a secrets file would be shown
            why = why.replace(lines[line - 1], excerpt(lines[line - 1]))
        raise InputError(
            [Problem(Location(source, line, column), "", f"not a valid ModelServerConfig: {why}")]
        ) from None
    return from_proto(message, source)


def from_proto(message: pb.ModelServerConfig, source: str = "models.config") -> ServingConfig:
    if message.WhichOneof("config") == "custom_model_config":
        return ServingConfig(custom=True)
    return _checked([_model_from_proto(e) for e in message.model_config_list.config], source)


def _checked(models: list[ConfigModel], source: str) -> ServingConfig:
    problems: list[Problem] = []
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            problems.append(
                Problem(Location(source), f"config[{model.name}]", "duplicate model name")
            )
        seen.add(model.name)
    if problems:
        raise InputError(problems)
    return ServingConfig(models=tuple(models))


# --- the line parser for what render_config writes ---------------------------------------------

_STRING = r'"([^"\\]*)"'  # no escapes: the text between the quotes is the value
_NUMBER = r"(-?(?:0|[1-9][0-9]*))"  # decimal only: text_format reads 0-led numbers as octal
_FIELD = re.compile(
    rf"(name|base_path|model_platform|key): {_STRING}|(versions|num_versions|value): {_NUMBER}"
)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)


def _parse_rendered(text: str) -> list[ConfigModel] | None:
    """The models of `text` if it is laid out as render_config writes it (comments, blank
    lines and indentation aside), else None: text_format decides."""
    reader = _RenderedReader()
    for raw in text.split("\n"):
        line = raw.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        if line == "}":
            ok = reader.close()
        elif line.endswith(" {"):
            ok = reader.open(line[:-2])
        else:
            ok = reader.field(line)
        if not ok:
            return None
    return None if reader.stack else reader.models


class _RenderedReader:
    """`_parse_rendered`'s state, a line at a time; each step False where the layout is not
    render_config's."""

    def __init__(self) -> None:
        self.models: list[ConfigModel] = []
        self.stack: list[str] = []  # the open blocks
        self.fields: dict[str, str | int] = {}
        self.versions: list[int] = []
        self.labels: dict[str, int] = {}
        self.label: dict[str, str | int] = {}
        self.policy: str | None = None
        self.seen_list = False

    @property
    def top(self) -> str:
        return self.stack[-1] if self.stack else ""

    def close(self) -> bool:
        if not self.stack:
            return False
        closed = self.stack.pop()
        if closed == "config":
            self.models.append(
                _rendered_model(self.fields, self.policy, self.versions, self.labels)
            )
            self.fields, self.versions, self.labels, self.policy = {}, [], {}, None
        elif closed == "version_labels":
            key, number = self.label.get("key", ""), self.label.get("value", 0)
            if not isinstance(key, str) or not isinstance(number, int) or key in self.labels:
                return False
            self.labels[key] = number
            self.label = {}
        return True

    def open(self, block: str) -> bool:
        if (self.top, block) not in _BLOCKS or (block == "model_config_list" and self.seen_list):
            return False
        if block in ("specific", "latest", "all"):
            if self.policy is not None:
                return False
            self.policy = block
        if block == "model_version_policy":
            if "model_version_policy" in self.fields:
                return False
            self.fields["model_version_policy"] = 1
        self.seen_list = self.seen_list or block == "model_config_list"
        self.stack.append(block)
        return True

    def field(self, line: str) -> bool:
        match = _FIELD.fullmatch(line)
        if match is None:
            return False
        name = match.group(1) or match.group(3)
        value: str | int = match.group(2) if match.group(1) else int(match.group(4))
        if (self.top, name) not in _FIELDS:
            return False
        low, high = _UINT32 if name == "num_versions" else _INT64
        if isinstance(value, int) and not low <= value <= high:
            return False
        if name == "versions":
            assert isinstance(value, int)
            self.versions.append(value)
            return True
        target = self.label if self.top == "version_labels" else self.fields
        if name in target:
            return False  # a singular field twice: text_format's error
        target[name] = value
        return True


_BLOCKS = {
    ("", "model_config_list"),
    ("model_config_list", "config"),
    ("config", "model_version_policy"),
    ("config", "version_labels"),
    ("model_version_policy", "specific"),
    ("model_version_policy", "latest"),
    ("model_version_policy", "all"),
}
_FIELDS = {
    ("config", "name"),
    ("config", "base_path"),
    ("config", "model_platform"),
    ("specific", "versions"),
    ("latest", "num_versions"),
    ("version_labels", "key"),
    ("version_labels", "value"),
}


def _rendered_model(
    fields: dict[str, str | int], policy: str | None, versions: list[int], labels: dict[str, int]
) -> ConfigModel:
    chosen: VersionPolicy | None = None
    if policy == "specific":
        chosen = Specific(tuple(sorted(set(versions))))
    elif policy == "latest":
        chosen = Latest(int(fields.get("num_versions", 0)))
    elif policy == "all":
        chosen = AllVersions()
    return ConfigModel(
        name=str(fields.get("name", "")),
        base_path=str(fields.get("base_path", "")),
        platform=str(fields.get("model_platform", "")),
        policy=chosen,
        labels=sorted_labels(labels),
    )


def _model_from_proto(entry: pb.ModelConfig) -> ConfigModel:
    from reconciler.proto import tensorflow_serving_pb2 as pb

    rest = pb.ModelConfig()
    rest.CopyFrom(entry)
    for name in _MANAGED_FIELDS:
        rest.ClearField(name)
    return ConfigModel(
        name=entry.name,
        base_path=entry.base_path,
        platform=entry.model_platform,
        policy=_policy_from_proto(entry),
        labels=sorted_labels(dict(entry.version_labels)),
        unmanaged=rest.SerializeToString(deterministic=True),
    )


def _policy_from_proto(entry: pb.ModelConfig) -> VersionPolicy | None:
    if not entry.HasField("model_version_policy"):
        return None
    policy = entry.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "specific":
        return Specific(tuple(sorted(set(policy.specific.versions))))
    if choice == "all":
        return AllVersions()
    if choice == "latest":
        return Latest(policy.latest.num_versions)
    return None


def to_proto(config: ServingConfig) -> pb.ModelServerConfig:
    from reconciler.proto import tensorflow_serving_pb2 as pb

    message = pb.ModelServerConfig()
    message.model_config_list.SetInParent()
    for model in config.models:
        entry = message.model_config_list.config.add()
        if model.unmanaged:
            entry.MergeFromString(model.unmanaged)
        entry.name = model.name
        entry.base_path = model.base_path
        if model.platform:
            entry.model_platform = model.platform
        _policy_to_proto(model.policy, entry)
        for label, version in model.labels:
            entry.version_labels[label] = version
    return message


def _policy_to_proto(policy: VersionPolicy | None, entry: pb.ModelConfig) -> None:
    target = entry.model_version_policy
    if isinstance(policy, Specific):
        target.specific.versions.extend(sorted(policy.versions))
    elif isinstance(policy, Latest):
        target.latest.num_versions = policy.num_versions
    elif isinstance(policy, AllVersions):
        target.all.SetInParent()


HEADER = "# Managed by tfs-reconciler: edit the desired state, not this file.\n"


def render_config(config: ServingConfig) -> str:
    """The canonical text of `config`: the same value always renders to the same bytes, those
    of protobuf's `text_format` (field-number order, map keys sorted, double quotes)."""
    parts = [HEADER, "model_config_list {\n"]
    for model in config.models:
        parts.append("  config {\n")
        parts.append(_render_model(model))
        parts.append("  }\n")
    parts.append("}\n")
    return "".join(parts)


def _render_model(model: ConfigModel) -> str:
    """The fields of one `config` entry. The managed fields are printed here, ten times faster
    than text_format's pure-Python printer; an entry with unmanaged fields, which interleave
    with them by field number, goes through text_format."""
    if model.unmanaged:
        entry = to_proto(ServingConfig((model,))).model_config_list.config[0]
        from google.protobuf import text_format

        return text_format.MessageToString(entry, as_utf8=True, indent=4)
    lines = []
    if model.name:
        lines.append(f'    name: "{_escape(model.name)}"\n')
    if model.base_path:
        lines.append(f'    base_path: "{_escape(model.base_path)}"\n')
    if model.platform:
        lines.append(f'    model_platform: "{_escape(model.platform)}"\n')
    policy = model.policy
    if isinstance(policy, Specific):
        lines.append("    model_version_policy {\n      specific {\n")
        lines.extend(f"        versions: {v}\n" for v in sorted(policy.versions))
        lines.append("      }\n    }\n")
    elif isinstance(policy, Latest):
        lines.append("    model_version_policy {\n      latest {\n")
        if policy.num_versions:
            lines.append(f"        num_versions: {policy.num_versions}\n")
        lines.append("      }\n    }\n")
    elif isinstance(policy, AllVersions):
        lines.append("    model_version_policy {\n      all {\n      }\n    }\n")
    for label, version in sorted(dict(model.labels).items()):
        lines.append("    version_labels {\n")
        if label:  # proto3: a field at its default value is not printed
            lines.append(f'      key: "{_escape(label)}"\n')
        if version:
            lines.append(f"      value: {version}\n")
        lines.append("    }\n")
    return "".join(lines)


def _escape(text: str) -> str:
    # text_format passes str here too; the stub only admits bytes.
    return text_encoding.CEscape(text, as_utf8=True)  # type: ignore[arg-type]
