"""The desired-state format and every validation rule, each with the message a user sees."""

from __future__ import annotations

import gc
import json
import os
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from reconciler.desired import MAX_FILE_BYTES, DesiredState, parse_documents
from reconciler.desired_files import load_desired, read_documents
from reconciler.desired_schema import (
    MAX_EXPLAINED_MODELS,
    inline_refs,
    schema,
    valid_model,
    validator,
)
from reconciler.observe import Observed, scan_disk
from reconciler.plan import plan
from reconciler.policy import AllVersions, Latest, Specific
from reconciler.problems import InputError, Location
from reconciler.render import plan_text

LAB_YAML = """\
apiVersion: tfs-reconciler/v1
models:
  animals:
    versions: [1, 2, 3]
    labels:
      deprecated: 1
      stable: 2
      canary: 3
"""


def parse(*texts: str | bytes, serving_root: str = "/models") -> DesiredState:
    documents = []
    for i, text in enumerate(texts):
        raw = text.encode() if isinstance(text, str) else text
        documents.append((f"f{i}.yaml" if i else "f.yaml", raw))
    return parse_documents(documents, serving_root)


def problems(*texts: str | bytes, serving_root: str = "/models") -> list[str]:
    with pytest.raises(InputError) as caught:
        parse(*texts, serving_root=serving_root)
    return [str(p) for p in caught.value.problems]


def model_doc(body: str) -> str:
    """A document with one model `m` whose spec is `body` (YAML at the spec's indent)."""
    return "apiVersion: tfs-reconciler/v1\nmodels:\n  m:\n" + textwrap.indent(
        textwrap.dedent(body), "    "
    )


# --- what a valid document means -------------------------------------------------------------


def test_lab_document_parses_into_the_lab_state() -> None:
    state = parse(LAB_YAML)
    (model,) = state.models
    assert model.name == "animals"
    assert model.policy == Specific((1, 2, 3))
    assert model.label_map == {"deprecated": 1, "stable": 2, "canary": 3}
    assert model.base_path == "/models/animals"
    assert model.platform == "tensorflow"
    assert model.location == Location("f.yaml", 3, 3)
    assert state.prune is False


def test_latest_policy_parses() -> None:
    (model,) = parse(model_doc("versions: {latest: 2}")).models
    assert model.policy == Latest(2)


def test_all_policy_parses() -> None:
    (model,) = parse(model_doc("versions: all")).models
    assert model.policy == AllVersions()


def test_relative_base_path_is_taken_from_the_serving_root() -> None:
    (model,) = parse(model_doc("versions: [1]\nbase_path: zoo/m/")).models
    assert model.base_path == "/models/zoo/m"


def test_absolute_base_path_under_the_serving_root_is_kept_normalized() -> None:
    (model,) = parse(model_doc("versions: [1]\nbase_path: /models//zoo/./m/")).models
    assert model.base_path == "/models/zoo/m"


def test_models_from_several_files_merge_sorted_by_name() -> None:
    state = parse(
        "apiVersion: tfs-reconciler/v1\nmodels:\n  zebra: {versions: [1]}\n",
        "apiVersion: tfs-reconciler/v1\nmodels:\n  ant: {versions: [1]}\n",
    )
    assert [m.name for m in state.models] == ["ant", "zebra"]


def test_prune_true_is_read() -> None:
    assert parse("apiVersion: tfs-reconciler/v1\nprune: true\nmodels: {}\n").prune is True


def test_utf8_bom_is_accepted() -> None:
    assert parse(b"\xef\xbb\xbf" + LAB_YAML.encode()).models[0].name == "animals"


def test_comments_are_ignored() -> None:
    assert parse("# header\n" + LAB_YAML + "# trailer\n").models[0].name == "animals"


# --- shape: unknown keys, missing keys, wrong types -----------------------------------------


def test_unknown_top_level_key_is_rejected() -> None:
    assert problems("apiVersion: tfs-reconciler/v1\nmodels: {}\nprunne: true\n") == [
        "f.yaml:3:1: prunne: unknown key 'prunne' (allowed: apiVersion, models, prune)"
    ]


def test_unknown_model_key_is_rejected() -> None:
    assert problems(model_doc("versions: [1]\nlables: {stable: 1}\n")) == [
        "f.yaml:5:5: models.m.lables: unknown key 'lables'"
        " (allowed: base_path, labels, platform, verify, versions)"
    ]


def test_missing_api_version_is_rejected() -> None:
    assert problems("models: {}\n") == ["f.yaml:1:1: missing required key 'apiVersion'"]


def test_wrong_api_version_is_rejected() -> None:
    assert problems("apiVersion: v2\nmodels: {}\n") == [
        "f.yaml:1:13: apiVersion: must be tfs-reconciler/v1, got 'v2' (a string)"
    ]


def test_missing_versions_is_rejected() -> None:
    assert problems(model_doc("labels: {}\n")) == [
        "f.yaml:4:5: models.m: missing required key 'versions'"
    ]


def test_prune_must_be_a_boolean() -> None:
    assert problems("apiVersion: tfs-reconciler/v1\nprune: 'yes'\nmodels: {}\n") == [
        "f.yaml:2:8: prune: 'yes' (a string) is not true or false"
    ]


# --- duplicate keys and duplicate models ------------------------------------------------------


def test_duplicate_mapping_key_is_rejected_not_last_one_wins() -> None:
    text = model_doc("versions: [1, 2]\nlabels:\n  stable: 1\n  stable: 2\n")
    assert problems(text) == [
        "f.yaml:7:7: models.m.labels.stable: duplicate key 'stable' (first at line 6)"
    ]


def test_duplicate_model_key_in_one_file_is_rejected() -> None:
    text = "apiVersion: tfs-reconciler/v1\nmodels:\n  m: {versions: [1]}\n  m: {versions: [2]}\n"
    assert problems(text) == ["f.yaml:4:3: models.m: duplicate key 'm' (first at line 3)"]


def test_same_model_in_two_files_is_rejected() -> None:
    assert problems(LAB_YAML, LAB_YAML) == [
        "f1.yaml:3:3: models.animals: model 'animals' is already defined at f.yaml:3:3"
    ]


def test_files_that_disagree_on_prune_are_rejected() -> None:
    assert problems(
        "apiVersion: tfs-reconciler/v1\nprune: true\nmodels: {}\n",
        "apiVersion: tfs-reconciler/v1\nprune: false\nmodels: {}\n",
    ) == [
        "f.yaml:2:8: prune: files disagree on prune (this one says true)",
        "f1.yaml:2:8: prune: files disagree on prune (this one says false)",
    ]


# --- versions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ('"2"', "'2' (a string) is not an integer"),
        ("2.0", "2.0 (a float) is not an integer"),
        ("-1", "-1 is not a valid version: must be 1 or more"),
        ("0", "0 is not a valid version: must be 1 or more"),
        ("true", "true (a boolean) is not an integer"),
        ("null", "null is not an integer"),
    ],
    ids=["string", "float", "negative", "zero", "boolean", "null"],
)
def test_version_that_is_not_a_positive_integer_is_rejected(written: str, message: str) -> None:
    assert problems(model_doc(f"versions: [1, {written}]")) == [
        f"f.yaml:4:19: models.m.versions[1]: {message}"
    ]


def test_label_version_that_is_not_an_integer_is_rejected() -> None:
    assert problems(model_doc("versions: [1]\nlabels: {stable: '1'}")) == [
        "f.yaml:5:22: models.m.labels.stable: '1' (a string) is not an integer"
    ]


def test_version_listed_twice_is_rejected() -> None:
    assert problems(model_doc("versions: [1, 1]")) == [
        "f.yaml:4:15: models.m.versions: lists a version more than once"
    ]


def test_empty_version_list_is_rejected() -> None:
    assert problems(model_doc("versions: []")) == [
        "f.yaml:4:15: models.m.versions: must list at least one version"
    ]


def test_unknown_policy_word_is_rejected() -> None:
    assert problems(model_doc("versions: latest")) == [
        "f.yaml:4:15: models.m.versions: 'latest' (a string) is not a version policy:"
        " use a list of versions, {latest: N} or all"
    ]


def test_latest_zero_is_rejected() -> None:
    assert problems(model_doc("versions: {latest: 0}")) == [
        "f.yaml:4:24: models.m.versions.latest: 0 is not a valid count: must be 1 or more"
    ]


def test_latest_beyond_what_tfs_can_hold_is_rejected() -> None:
    # TFS's num_versions is a uint32.
    assert problems(model_doc("versions: {latest: 4294967296}")) == [
        "f.yaml:4:24: models.m.versions.latest: 4294967296 is not a valid count:"
        " must be 4294967295 or less"
    ]


def test_version_beyond_int64_is_rejected() -> None:
    assert problems(model_doc("versions: [9223372036854775808]")) == [
        "f.yaml:4:16: models.m.versions[0]: 9223372036854775808 is not a valid version:"
        " must be 9223372036854775807 or less"
    ]


# --- YAML 1.1 spellings: what the resolver reads is not what the user meant ---------------------


@pytest.mark.parametrize(
    ("written", "reading"),
    [
        ("010", "8 (octal)"),
        ("1:20", "80 (sexagesimal, base 60)"),
        ("0x10", "16 (hexadecimal)"),
        ("0b11", "3 (binary)"),
        ("1_0", "10 ('_' ignored)"),
        ("+010", "8 (octal)"),
        ("00", "0 (octal)"),
        ("!!int 010", "8 (octal)"),
    ],
    ids=["octal", "sexagesimal", "hex", "binary", "underscore", "signed", "zeros", "tagged"],
)
def test_version_not_in_plain_decimal_is_rejected(written: str, reading: str) -> None:
    assert problems(model_doc(f"versions: [{written}]")) == [
        f"f.yaml:4:16: models.m.versions[0]: {written.split()[-1]} is ambiguous:"
        f" YAML 1.1 reads it as {reading}; write the version in plain decimal"
    ]


def test_latest_count_not_in_plain_decimal_is_rejected() -> None:
    assert problems(model_doc("versions: {latest: 010}")) == [
        "f.yaml:4:24: models.m.versions.latest: 010 is ambiguous: YAML 1.1 reads it as 8"
        " (octal); write the count in plain decimal"
    ]


def test_label_version_not_in_plain_decimal_is_rejected() -> None:
    assert problems(model_doc("versions: [8]\nlabels: {stable: 010}")) == [
        "f.yaml:5:22: models.m.labels.stable: 010 is ambiguous: YAML 1.1 reads it as 8"
        " (octal); write the version in plain decimal"
    ]


def test_several_versions_not_in_plain_decimal_are_each_rejected_once() -> None:
    assert problems(model_doc("versions: [010, 1:20, 3]")) == [
        "f.yaml:4:16: models.m.versions[0]: 010 is ambiguous: YAML 1.1 reads it as 8 (octal);"
        " write the version in plain decimal",
        "f.yaml:4:21: models.m.versions[1]: 1:20 is ambiguous: YAML 1.1 reads it as 80"
        " (sexagesimal, base 60); write the version in plain decimal",
    ]


@pytest.mark.parametrize(
    ("written", "found"),
    [
        ("7", []),
        ("+5", []),
        ("0", ["0 is not a valid version: must be 1 or more"]),
        ("-3", ["-3 is not a valid version: must be 1 or more"]),
        ("'010'", ["'010' (a string) is not an integer"]),
        ('"0x10"', ["'0x10' (a string) is not an integer"]),
    ],
)
def test_plain_decimal_and_quoted_text_are_not_ambiguous(written: str, found: list[str]) -> None:
    try:
        parse(model_doc(f"versions: [1, {written}]"))
        reported: list[str] = []
    except InputError as error:
        reported = [p.message for p in error.problems]
    assert reported == found


@pytest.mark.parametrize(
    ("written", "reading"),
    [("yes", "true"), ("No", "false"), ("ON", "true"), ("off", "false"), ("y", "true"),
     ("n", "false")],
)  # fmt: skip
def test_a_yaml_1_1_only_boolean_is_rejected(written: str, reading: str) -> None:
    assert problems(f"apiVersion: tfs-reconciler/v1\nprune: {written}\nmodels: {{}}\n") == [
        f"f.yaml:2:8: prune: {written} is ambiguous: YAML 1.1 reads it as {reading};"
        " write true or false"
    ]


@pytest.mark.parametrize("written", ["true", "True", "TRUE", "false", "False", "FALSE"])
def test_a_boolean_in_yaml_1_1_and_1_2_alike_is_taken(written: str) -> None:
    text = f"apiVersion: tfs-reconciler/v1\nprune: {written}\nmodels: {{}}\n"
    assert parse(text).prune is (written.lower() == "true")


def test_boolean_word_where_text_is_meant_is_told_to_be_quoted() -> None:
    assert problems(model_doc("versions: [1]\nplatform: on")) == [
        "f.yaml:5:15: models.m.platform: on is ambiguous: YAML 1.1 reads it as true; quote it"
    ]


@pytest.mark.parametrize(
    ("key", "meaning"),
    [("on", "a boolean (true)"), ("No", "a boolean (false)"), ("y", "a boolean (true)"),
     ("true", "a boolean (true)"), ("010", "a number (octal)"), ("0x1f", "a number (hexadecimal)")],
)  # fmt: skip
def test_model_name_yaml_reads_as_a_boolean_or_number_must_be_quoted(
    key: str, meaning: str
) -> None:
    text = f"apiVersion: tfs-reconciler/v1\nmodels:\n  {key}:\n    versions: [1]\n"
    assert problems(text) == [
        f"f.yaml:3:3: models.{key}: key {key} is read as {meaning} by YAML 1.1; quote it: '{key}'"
    ]


def test_label_name_yaml_reads_as_a_boolean_must_be_quoted() -> None:
    assert problems(model_doc("versions: [1]\nlabels: {off: 1}")) == [
        "f.yaml:5:14: models.m.labels.off: key off is read as a boolean (false) by YAML 1.1;"
        " quote it: 'off'"
    ]


@pytest.mark.parametrize("key", ["'on'", '"010"', "'y'", "7"])
def test_quoted_or_decimal_model_names_are_names(key: str) -> None:
    text = f"apiVersion: tfs-reconciler/v1\nmodels:\n  {key}:\n    versions: [1]\n"
    (model,) = parse(text).models
    assert model.name == key.strip("'\"")


_NOTATIONS = {
    "octal": lambda n: "0" + format(n, "o"),
    "hexadecimal": lambda n: "0x" + format(n, "x"),
    "binary": lambda n: "0b" + format(n, "b"),
    "sexagesimal, base 60": lambda n: f"{n // 60}:{n % 60:02d}",
    "'_' ignored": lambda n: f"{n // 10}_{n % 10}",
}


@settings(max_examples=200, deadline=None)
@given(st.integers(60, 10**9), st.sampled_from(sorted(_NOTATIONS)))
def test_any_version_yaml_reads_in_another_base_is_rejected_where_it_stands(
    version: int, notation: str
) -> None:
    written = _NOTATIONS[notation](version)
    assert problems(model_doc(f"versions: [1, {written}]")) == [
        f"f.yaml:4:19: models.m.versions[1]: {written} is ambiguous: YAML 1.1 reads it as"
        f" {version} ({notation}); write the version in plain decimal"
    ]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 2**63 - 1))
def test_any_version_in_plain_decimal_is_read_as_written(version: int) -> None:
    (model,) = parse(model_doc(f"versions: [{version}]")).models
    assert model.policy == Specific((version,))


# --- labels --------------------------------------------------------------------------------------


def test_label_on_a_version_the_policy_does_not_serve_is_rejected() -> None:
    assert problems(model_doc("versions: [1, 2, 3]\nlabels:\n  stable: 9\n")) == [
        "f.yaml:6:15: models.m.labels.stable: version 9 is not served (served: 1, 2, 3)"
    ]


@pytest.mark.parametrize(
    "label",
    ["a/b", "a:b", "'-x'", "'1st'", "'sta ble'", '"stable\\n"', "''", "'x" + "y" * 128 + "'"],
    ids=["slash", "colon", "leading-dash", "leading-digit", "space", "newline", "empty", "long"],
)
def test_label_name_tfs_urls_cannot_use_is_rejected(label: str) -> None:
    (message,) = problems(model_doc(f"versions: [1]\nlabels:\n  {label}: 1\n"))
    assert message.startswith("f.yaml:6:7: models.m.labels.")
    assert "is not a valid label name" in message
    assert "no '/' or ':'" in message


@pytest.mark.parametrize(
    "name",
    ["a/b", "a:b", "'..'", "'.hidden'", "'-x'", "'my model'", '"m\\n"', "'é'"],
    ids=["slash", "colon", "dotdot", "leading-dot", "leading-dash", "space", "newline", "accent"],
)
def test_model_name_tfs_urls_cannot_use_is_rejected(name: str) -> None:
    text = f"apiVersion: tfs-reconciler/v1\nmodels:\n  {name}:\n    versions: [1]\n"
    (message,) = problems(text)
    assert message.startswith("f.yaml:3:3: models.")
    assert "is not a valid model name" in message


def test_all_errors_are_reported_at_once() -> None:
    text = (
        "apiVersion: tfs-reconciler/v1\n"
        "models:\n"
        "  a:\n"
        "    versions: [1, '2']\n"
        "    colour: red\n"
        "  b/c:\n"
        "    versions: [1]\n"
        "  d:\n"
        "    versions: [1]\n"
        "    labels: {stable: 2}\n"
    )
    assert problems(text, "apiVersion: tfs-reconciler/v1\nmodels:\n  d: {versions: [1]}\n") == [
        "f.yaml:4:19: models.a.versions[1]: '2' (a string) is not an integer",
        "f.yaml:5:5: models.a.colour: unknown key 'colour'"
        " (allowed: base_path, labels, platform, verify, versions)",
        "f.yaml:6:3: models.b/c: 'b/c' is not a valid model name. A model name: letters,"
        " digits, '.', '_' and '-', starting with a letter or digit; no '/' or ':'"
        " (they delimit TFS's REST URLs).",
        "f.yaml:10:22: models.d.labels.stable: version 2 is not served (served: 1)",
    ]


def test_line_breaks_quoted_from_the_input_keep_the_problem_on_one_line() -> None:
    assert problems('apiVersion: tfs-reconciler/v1\nmodels: {}\n"a\\nb": 1\n') == [
        "f.yaml:3:1: a\\nb: unknown key 'a\\nb' (allowed: apiVersion, models, prune)"
    ]


# --- base_path -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_path",
    ["../etc", "/models/../etc", "zoo/../../etc", "/etc/models", "/modelsX/m", "/models", "."],
)
def test_base_path_outside_the_serving_root_is_rejected(base_path: str) -> None:
    assert problems(model_doc(f"versions: [1]\nbase_path: '{base_path}'\n")) == [
        f"f.yaml:5:16: models.m.base_path: '{base_path}' is outside the serving root /models"
        " (TFS sees only what is under it; '..' is not allowed)"
    ]


@pytest.mark.parametrize("root", ["", "models", "./models"])
def test_serving_root_must_be_absolute(root: str) -> None:
    assert problems(LAB_YAML, serving_root=root) == [
        f"--serving-root: '{root}' is not an absolute path: give the folder TFS sees"
        " --models-dir as (e.g. /models)"
    ]


def test_serving_root_slash_accepts_any_absolute_base_path() -> None:
    (model,) = parse(model_doc("versions: [1]\nbase_path: /srv/m"), serving_root="/").models
    assert model.base_path == "/srv/m"


# --- documents that are not a desired state ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "got"),
    [
        ("- 1\n- 2\n", "a list"),
        ("hello\n", "a string of 5 characters"),
        ("3\n", "a number"),
        ("null\n", "null"),
        ("---\n", "null"),
    ],
    ids=["list", "string", "integer", "null", "bare-document-marker"],
)
def test_document_that_is_not_a_mapping_is_rejected(text: str, got: str) -> None:
    (message,) = problems(text)
    assert message.endswith(f": expected a mapping with apiVersion and models, got {got}")
    assert message.startswith(("f.yaml:1:1:", "f.yaml:2:1:"))


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file_is_rejected(text: str) -> None:
    assert problems(text) == ["f.yaml:1:1: empty file: expected a desired-state document"]


def test_several_documents_in_one_file_are_rejected() -> None:
    assert problems(LAB_YAML + "---\n" + LAB_YAML) == [
        "f.yaml:10:1: one document per file, found several ('---')"
    ]


def test_non_utf8_bytes_are_rejected_with_their_position() -> None:
    assert problems(b"apiVersion: tfs-reconciler/v1\nmodels: {\xff}\n") == [
        "f.yaml:2:10: not UTF-8 text"
    ]


def test_invalid_yaml_is_rejected_with_its_position() -> None:
    (message,) = problems("apiVersion: tfs-reconciler/v1\nmodels: [\n")
    assert message.startswith("f.yaml:3:1: invalid YAML:")


def test_control_character_is_rejected_on_one_line_with_its_position() -> None:
    assert problems("apiVersion: tfs-reconciler/v1\nmodels: {\x07}\n") == [
        "f.yaml:2:10: invalid YAML: character #x0007: control characters are not allowed"
    ]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("apiVersion: tfs-reconciler/v1\nmodels:\n\tm: {versions: [1]}\n", "3:1"),
        ("apiVersion: tfs-reconciler/v1\nmodels:\n  m:\n   \tversions: [1]\n", "4:4"),
        ("apiVersion: tfs-reconciler/v1\r\nmodels:\r\n\tm: {versions: [1]}\r\n", "3:1"),
    ],
    ids=["line-start", "after-spaces", "crlf"],
)
def test_tab_in_indentation_is_named(text: str, where: str) -> None:
    assert problems(text) == [
        f"f.yaml:{where}: invalid YAML: while scanning for the next token (line {where[0]}),"
        " found character that cannot start any token (a tab: YAML indents with spaces only)"
    ]


def test_yaml_error_elsewhere_than_a_tab_has_no_tab_hint() -> None:
    (message,) = problems("apiVersion: tfs-reconciler/v1\nmodels: {\tm: @x}\n")
    assert message.startswith("f.yaml:2:14: invalid YAML:")
    assert "tab" not in message


def test_duplicate_anchor_names_both_occurrences() -> None:
    assert problems("a: &x 1\nb: &x 2\n") == [
        "f.yaml:2:4: invalid YAML: found duplicate anchor; first occurrence (line 1),"
        " second occurrence"
    ]


def test_yaml_error_keeps_what_pyyaml_was_parsing() -> None:
    assert problems('apiVersion: "open\n') == [
        "f.yaml:2:1: invalid YAML: while scanning a quoted scalar (line 1),"
        " found unexpected end of stream"
    ]


def test_alias_bomb_is_rejected_without_expanding_it() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    # a0..a3 expand to 12,344 values; a4 (line 5), to 111,111: its first alias is the culprit
    assert problems("\n".join(lines) + "\n") == [
        "f.yaml:5:5: document expands to more than 100000 values (aliases?)"
    ]


def test_recursive_alias_is_rejected_where_the_alias_stands() -> None:
    (message,) = problems("apiVersion: tfs-reconciler/v1\nmodels: &m\n  m: *m\n")
    assert message == "f.yaml:3:3: document nests deeper than 64 levels"


@pytest.mark.parametrize("depth", [100, 1000, 100_000])
def test_deeply_nested_document_is_rejected_with_a_line(depth: int) -> None:
    (message,) = problems("apiVersion: x\nmodels: " + "[" * depth + "]" * depth)
    assert message.startswith("f.yaml:2:")
    assert "nest" in message


def test_deep_block_nesting_is_rejected_where_it_passes_the_limit() -> None:
    text = "apiVersion: x\nmodels:\n" + "".join("  " * i + "a:\n" for i in range(1, 100))
    assert problems(text) == ["f.yaml:67:131: document nests deeper than 64 levels"]


def test_oversized_file_is_rejected() -> None:
    raw = LAB_YAML.encode() + b"#" * MAX_FILE_BYTES
    assert problems(raw) == [f"f.yaml: file is larger than the limit of {MAX_FILE_BYTES} bytes"]


@pytest.mark.timeout(15)
def test_long_list_of_mappings_is_rejected_in_linear_time() -> None:
    # jsonschema's own uniqueItems compares mappings pairwise: 5,000 took about a minute.
    items = ", ".join(f"{{a: {i}}}" for i in range(5000))
    reported = problems(model_doc(f"versions: [{items}]"))
    assert len(reported) == 5000
    assert reported[0] == "f.yaml:4:16: models.m.versions[0]: a mapping is not an integer"


@pytest.mark.parametrize(
    "tagged",
    ["!!timestamp soon", "!!int one", "!!int ''", "!!float one", "!!bool maybe", "!foo 1"],
)
def test_explicitly_tagged_value_that_does_not_construct_is_rejected(tagged: str) -> None:
    (message,) = problems(model_doc(f"versions: [{tagged}]"))
    assert message.startswith("f.yaml:4:16: models.m.versions[0]: bad value:")


# --- files and folders ---------------------------------------------------------------------------


def test_folder_reads_every_yaml_and_yml_file_but_hidden_ones(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: tfs-reconciler/v1\nmodels: {a: {versions: [1]}}")
    (tmp_path / "b.yml").write_text("apiVersion: tfs-reconciler/v1\nmodels: {b: {versions: [1]}}")
    (tmp_path / "notes.txt").write_text("not yaml")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.yaml").write_text("broken: [")
    state = load_desired(tmp_path)
    assert [m.name for m in state.models] == ["a", "b"]


def test_folder_without_yaml_files_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        read_documents(tmp_path)
    assert str(caught.value) == f"{tmp_path}: no *.yaml or *.yml files here"


def test_missing_path_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        read_documents(tmp_path / "nope")
    assert str(caught.value) == f"{tmp_path / 'nope'}: no such file or folder"


def test_verify_request_must_exist(tmp_path: Path) -> None:
    file = tmp_path / "m.yaml"
    file.write_text(model_doc("versions: [1]\nverify: {request: missing.json}\n"))
    with pytest.raises(InputError) as caught:
        load_desired(file)
    assert str(caught.value) == (
        f"{file}:5:23: models.m.verify.request: no such file: {tmp_path}/missing.json"
    )


def test_verify_request_must_hold_a_predict_body(tmp_path: Path) -> None:
    (tmp_path / "body.json").write_text('{"signature_name": "x"}')
    file = tmp_path / "m.yaml"
    file.write_text(model_doc("versions: [1]\nverify: {request: body.json}\n"))
    with pytest.raises(InputError) as caught:
        load_desired(file)
    assert str(caught.value).endswith(
        "models.m.verify.request: must hold a predict body with 'instances' or 'inputs'"
    )


def test_unreadable_file_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.yaml").write_text(LAB_YAML)

    def denied(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("reconciler.regular_file.os.open", denied)
    with pytest.raises(InputError) as caught:
        read_documents(tmp_path)
    assert str(caught.value) == f"{tmp_path / 'a.yaml'}: cannot read: Permission denied"


def test_verify_request_nested_too_deeply_is_reported(tmp_path: Path) -> None:
    (tmp_path / "body.json").write_text("[" * 100_000 + "]" * 100_000)
    file = tmp_path / "m.yaml"
    file.write_text(model_doc("versions: [1]\nverify: {request: body.json}\n"))
    with pytest.raises(InputError) as caught:
        load_desired(file)
    assert f"models.m.verify.request: cannot read {tmp_path}/body.json:" in str(caught.value)


# --- hostile files: links to secrets, FIFOs, devices ------------------------------------------

SECRET = "DB_PASSWORD=hunter2-correct-horse-battery-staple\n"


def test_a_link_to_a_file_outside_the_desired_folder_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "secrets.env").write_text(SECRET)
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "animals.yaml").symlink_to(tmp_path / "secrets.env")
    (desired / "inside.yaml").symlink_to(desired / "real.txt")
    (desired / "real.txt").write_text(LAB_YAML.replace("animals", "plants"))
    with pytest.raises(InputError) as caught:
        read_documents(desired)
    assert str(caught.value) == (
        f"{desired / 'animals.yaml'}: a link to a file outside {desired}: not read"
        " (desired-state files must lie in it)"
    )
    (desired / "animals.yaml").unlink()
    assert [m.name for m in load_desired(desired).models] == ["plants"]


def test_an_invalid_document_is_never_quoted_whole(tmp_path: Path) -> None:
    (tmp_path / "secrets.yaml").write_text(SECRET)
    with pytest.raises(InputError) as caught:
        load_desired(tmp_path / "secrets.yaml")
    assert "hunter2" not in str(caught.value)
    assert str(caught.value).endswith("got a string of 48 characters")


def test_a_long_value_is_quoted_only_as_a_clearly_cut_excerpt() -> None:
    secret = "x" * 20 + "hunter2-correct-horse-battery-staple"
    reported = problems(
        f"apiVersion: {secret}\nmodels:\n  m: {{versions: [1], base_path: ../{secret}}}\n"
        f"{secret}: 1\n"
    )
    assert len(reported) == 3
    for message in reported:
        assert "staple" not in message.split(": ", 2)[2]
        assert "more characters cut]" in message


@pytest.mark.timeout(20)
def test_a_fifo_or_device_is_refused_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.yaml")
    with pytest.raises(InputError) as caught:
        read_documents(tmp_path / "fifo.yaml")
    assert str(caught.value) == f"{tmp_path / 'fifo.yaml'}: cannot read: not a regular file"
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "kmsg.yaml").symlink_to("/proc/kmsg")
    with pytest.raises(InputError) as caught:
        read_documents(desired)
    assert "a link to a file outside" in str(caught.value)


@pytest.mark.parametrize("request_path", ["../secret.json", "/etc/passwd", "link.json"])
def test_a_verify_request_outside_the_desired_folder_is_not_read(
    tmp_path: Path, request_path: str
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    (tmp_path / "secret.json").write_text('{"instances": ["hunter2"]}')
    (desired / "link.json").symlink_to(tmp_path / "secret.json")
    (desired / "m.yaml").write_text(
        model_doc(f"versions: [1]\nverify: {{request: '{request_path}'}}\n")
    )
    with pytest.raises(InputError) as caught:
        load_desired(desired)
    assert str(caught.value).endswith(f"is outside {desired}: not read")


@pytest.mark.timeout(20)
def test_a_verify_request_that_is_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "body.json")
    file = tmp_path / "m.yaml"
    file.write_text(model_doc("versions: [1]\nverify: {request: body.json}\n"))
    with pytest.raises(InputError) as caught:
        load_desired(file)
    assert str(caught.value).endswith(f"cannot read {tmp_path}/body.json: not a regular file")


# --- no input ever crashes -----------------------------------------------------------------------


def _parses_or_reports(raw: bytes) -> None:
    try:
        parse_documents([("f.yaml", raw)])
    except InputError as error:
        assert error.problems, "an InputError always carries at least one problem"
        for problem in error.problems:
            assert "\n" not in str(problem), "every problem prints as one line"
            assert problem.location.file == "f.yaml" and problem.location.line >= 1, problem


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_no_byte_string_crashes_validation(raw: bytes) -> None:
    _parses_or_reports(raw)


# fmt: off
_YAML_PIECES = st.sampled_from(
    [
        "apiVersion: tfs-reconciler/v1\n", "models:\n", "  m:\n", "    versions: ", "[1, 2]",
        "{latest: 2}", "all", "    labels: ", "{stable: 2}", "\n", "- ", "&a ", "*a", "!!int ",
        "!!timestamp ", "!!bool ", "!!binary ", "!!float ", "!!str ", "!!map ", "!!seq ", "{",
        "}", "[", "]", ":", ",", "'", '"', "? ", "<<: ", "---\n", "...\n", "%YAML 1.1\n", "|\n",
        ">\n", "#", "~", "null", "true", "2.0", "-1", "0x1f", "1_000", "2001-12-14", ".inf",
        "\t", "\xff", "\u2028", "\ufeff", "\x00", "prune: ", "base_path: ", "../x", "verify: ",
        "\U0001f600" * 64, "e\u0301" * 90, "k" * 300, '"\\0"', "- " * 70,
    ]
)
# fmt: on


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_YAML_PIECES, max_size=40).map("".join))
def test_no_yaml_like_text_crashes_validation(text: str) -> None:
    _parses_or_reports(text.encode("utf-8", "surrogatepass"))


_base_paths = st.lists(
    st.sampled_from(["a", "/", "..", ".", "\U0001f600" * 16, "e\u0301", " ", "\x00", "\u202e"]),
    min_size=1,
    max_size=12,
).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_base_paths)
def test_no_base_path_crashes_a_plan(base_path: str) -> None:
    """As a commit is judged: validated, its folders scanned, planned (an emoji base_path
    made the scan raise ENAMETOOLONG in-process)."""
    document = model_doc(f"versions: [1]\nbase_path: {json.dumps(base_path)}\n")
    try:
        state = parse(document)
    except InputError as error:
        assert all(p.location.line >= 1 for p in error.problems)
        return
    with tempfile.TemporaryDirectory() as models:
        disk = scan_disk({m.name: m.base_path for m in state.models}, "/models", Path(models))
        plan_text(plan(state, Observed(disk, None)), "models.config")


_scalars = st.one_of(
    st.integers(-3, 5), st.text(max_size=4), st.booleans(), st.none(), st.floats(0, 3)
)
_versions = st.one_of(
    st.lists(_scalars, max_size=3),
    st.dictionaries(st.sampled_from(["latest", "x"]), _scalars, max_size=2),
    st.sampled_from(["all", "some"]),
    _scalars,
)
_model_specs = st.dictionaries(
    st.sampled_from(["versions", "labels", "base_path", "platform", "verify", "extra"]),
    st.one_of(_versions, st.dictionaries(st.text(max_size=6), _scalars, max_size=2)),
    max_size=4,
)
_documents = st.fixed_dictionaries(
    {"apiVersion": st.sampled_from(["tfs-reconciler/v1", "v0"])},
    optional={
        "models": st.dictionaries(st.text(max_size=8), _model_specs, max_size=3),
        "prune": _scalars,
    },
)


@settings(max_examples=300, deadline=None)
@given(_documents)
def test_the_schema_with_references_inlined_finds_the_same_errors(document: object) -> None:
    inlined = validator()
    plain = type(inlined)(schema())

    def found(validator: Draft202012Validator) -> list[tuple[str, str]]:
        errors = validator.iter_errors(document)
        return sorted((str(list(e.absolute_path)), e.message) for e in errors)

    assert found(inlined) == found(plain)
    without_defs = {k: v for k, v in inline_refs(schema()).items() if k != "$defs"}
    assert "$ref" not in json.dumps(without_defs)


def test_an_unknown_key_hides_no_other_problem_of_its_model() -> None:
    reported = problems(
        model_doc(
            """\
            versions: [1, 2]
            labels: {stable: 9}
            extra: 1
            base_path: ../x
            """
        )
        + "  n:\n    versions: [1]\n    labels: {stable: 9}\n"
    )
    assert [message.split(": ")[1] for message in reported] == [
        "models.m.labels.stable",
        "models.m.extra",
        "models.m.base_path",
        "models.n",
        "models.n.labels.stable",
    ]


@pytest.mark.parametrize(
    ("base_path", "why"),
    [
        ("\U0001f600" * 64, "a folder name in it is longer than 255 bytes (in UTF-8)"),
        ("e\u0301" * 90, "a folder name in it is longer than 255 bytes (in UTF-8)"),
        ("a/" * 2100, "it is longer than 4095 bytes"),
        ("a\\0b", "it holds a NUL character"),
    ],
    ids=["emoji", "combining-marks", "long", "nul"],
)
def test_a_base_path_no_file_system_can_hold_is_rejected(base_path: str, why: str) -> None:
    (message,) = problems(model_doc(f'versions: [1]\nbase_path: "{base_path}"\n'))
    assert message.startswith("f.yaml:5:16: models.m.base_path: '")
    assert message.endswith(f" is not a path a file system can hold: {why}")


def test_a_base_path_of_emoji_within_the_limits_is_taken(tmp_path: Path) -> None:
    name = "\U0001f600" * 63 + "\u0301"  # 254 bytes
    state = parse(model_doc(f'versions: [1]\nbase_path: "{name}"\n'))
    assert state.models[0].base_path == "/models/" + name
    scan_disk({"m": state.models[0].base_path}, "/models", tmp_path)


_names = st.one_of(st.text(max_size=6), st.sampled_from(["m", "a.b", "-x", "9", "x" * 129]))


@settings(max_examples=500, deadline=None)
@given(_names, st.one_of(_model_specs, _scalars))
def test_the_quick_model_check_agrees_with_the_schema(name: str, spec: object) -> None:
    """A model the quick check passes skips jsonschema: it must be exactly the valid ones."""
    errors = list(
        validator().iter_errors({"apiVersion": "tfs-reconciler/v1", "models": {name: spec}})
    )
    assert valid_model(name, spec) == (not errors)


def test_past_the_explained_limit_each_flawed_model_still_gets_a_line() -> None:
    count = MAX_EXPLAINED_MODELS + 3
    lines = [f"  m{i}: {{versions: [0], labels: {{stable: 1}}}}" for i in range(count)]
    reported = problems("apiVersion: tfs-reconciler/v1\nmodels:\n" + "\n".join(lines) + "\n")
    assert len(reported) == count
    assert (
        reported[0]
        == "f.yaml:3:19: models.m0.versions[0]: 0 is not a valid version: must be 1 or more"
    )
    assert reported[-1] == (
        f"f.yaml:{count + 2}:{len(str(count - 1)) + 6}: models.m{count - 1}: has problems, not"
        f" listed: more than {MAX_EXPLAINED_MODELS} models in this file have some; fix those first"
    )


def test_judging_leaves_the_garbage_collector_as_it_found_it() -> None:
    assert gc.isenabled()
    problems("apiVersion: 1\n")
    parse(LAB_YAML)
    assert gc.isenabled()
    gc.disable()
    try:
        parse(LAB_YAML)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_long_key_is_cut_in_the_field_too() -> None:
    (message,) = problems(LAB_YAML + "k" * 500 + ": 1\n")
    assert message.startswith("f.yaml:9:1: " + "k" * 160 + "[... 340 more characters cut]: ")
    assert "k" * 161 not in message
