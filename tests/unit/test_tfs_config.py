"""models.config: anything TFS accepts parses, what is not managed survives, rendering is
canonical and round-trips."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.policy import AllVersions, Latest, Specific, VersionPolicy
from reconciler.problems import InputError
from reconciler.tfs_config import (
    HEADER,
    ConfigModel,
    ServingConfig,
    _escape,
    _parse_rendered,
    parse_config,
    parse_with_text_format,
    render_config,
    to_proto,
)

LAB_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "models" / "models.config"

LAB_STATE = ServingConfig(
    models=(
        ConfigModel(
            name="animals",
            base_path="/models/animals/",
            platform="tensorflow",
            policy=Specific((1, 2, 3)),
            labels=(("canary", 3), ("deprecated", 1), ("stable", 2)),
        ),
    )
)


def test_labs_hand_written_config_parses_into_the_labs_state() -> None:
    assert parse_config(LAB_CONFIG.read_text()) == LAB_STATE


def test_labs_state_renders_to_a_config_that_parses_back() -> None:
    assert parse_config(render_config(LAB_STATE)) == LAB_STATE


def test_rendering_starts_with_the_managed_header() -> None:
    assert render_config(LAB_STATE).startswith(HEADER)


def test_comments_quotes_and_field_order_do_not_matter() -> None:
    text = """
    # the lab, written differently
    model_config_list {
      config {
        version_labels { value: 3 key: "canary" }  # trailing comment
        model_version_policy { specific { versions: 3 versions: 1 versions: 2 } }
        model_platform: "tensorflow"
        version_labels { key: 'deprecated' value: 1 }
        base_path: "/models/animals/"
        version_labels: { key: "stable", value: 2 }
        name: 'animals'
      }
    }
    """
    assert parse_config(text) == LAB_STATE


def test_other_text_format_spellings_tfs_accepts_parse() -> None:
    # Colons before messages, list syntax, angle brackets, ';' and ',' separators, hex
    # numbers, adjacent string literals, an enum by number.
    text = """
    model_config_list: {
      config: [{ name: "ani" 'mals' base_path: '/models/animals/' model_platform: "tensorflow"
        model_type: 1
        version_labels: [{key: "stable", value: 0x2}, {key: "canary" value: 3}];
        version_labels < key: 'deprecated' value: 1 >
        model_version_policy < specific < versions: [1, 2, 3] > >
      }]
    }
    """
    (model,) = parse_config(text).models
    assert model == replace(LAB_STATE.models[0], unmanaged=model.unmanaged)
    assert model.unmanaged  # model_type: TENSORFLOW, kept


def test_unmanaged_fields_survive_parse_and_render() -> None:
    text = """
    model_config_list {
      config {
        name: 'animals'
        base_path: '/models/animals'
        model_platform: 'tensorflow'
        model_type: TENSORFLOW
        logging_config {
          log_collector_config { type: 'file' filename_prefix: '/logs/animals' }
          sampling_config { sampling_rate: 0.25 attributes: 3 }
        }
      }
    }
    """
    rendered = render_config(parse_config(text))
    assert "model_type: TENSORFLOW" in rendered
    assert 'filename_prefix: "/logs/animals"' in rendered
    assert "sampling_rate: 0.25" in rendered
    message = to_proto(parse_config(rendered)).model_config_list.config[0]
    assert message.logging_config.sampling_config.attributes == 3
    assert message.model_type == 1


def test_unmanaged_fields_survive_a_managed_change() -> None:
    text = "model_config_list { config { name: 'a' base_path: '/models/a' model_type: OTHER } }"
    (model,) = parse_config(text).models
    changed = ServingConfig(
        (ConfigModel("a", "/models/a", policy=Latest(2), labels=(), unmanaged=model.unmanaged),)
    )
    assert "model_type: OTHER" in render_config(changed)


def test_missing_policy_means_latest_one() -> None:
    (model,) = parse_config("model_config_list { config { name: 'a' base_path: '/m/a' } }").models
    assert model.policy is None
    assert model.effective_policy == Latest(1)


@pytest.mark.parametrize(
    ("written", "policy"),
    [
        ("latest { num_versions: 2 }", Latest(2)),
        ("all {}", AllVersions()),
        ("specific { versions: 2 versions: 1 }", Specific((1, 2))),
    ],
)
def test_each_version_policy_parses(written: str, policy: VersionPolicy) -> None:
    text = f"model_config_list {{ config {{ name: 'a' model_version_policy {{ {written} }} }} }}"
    assert parse_config(text).models[0].policy == policy


def test_empty_file_is_an_empty_config() -> None:
    assert parse_config("") == ServingConfig()
    assert parse_config("# nothing yet\n") == ServingConfig()


def test_custom_model_config_is_flagged() -> None:
    text = "custom_model_config { type_url: 'type.googleapis.com/x.Y' value: 'abc' }"
    assert parse_config(text).custom is True


def test_text_that_is_not_a_model_server_config_names_line_and_column() -> None:
    with pytest.raises(InputError) as caught:
        parse_config("model_config_list {\n  config { nmae: 'a' }\n}\n", "models.config")
    (problem,) = caught.value.problems
    assert str(problem).startswith("models.config:2:")
    assert "not a valid ModelServerConfig" in problem.message


def test_duplicate_model_names_are_rejected() -> None:
    text = "model_config_list { config { name: 'a' } config { name: 'a' } }"
    with pytest.raises(InputError) as caught:
        parse_config(text, "models.config")
    assert str(caught.value) == "models.config: config[a]: duplicate model name"


def test_equal_configs_render_byte_identically() -> None:
    reordered = parse_config(
        "model_config_list { config { version_labels { key: 'stable' value: 2 }"
        " version_labels { key: 'canary' value: 3 } version_labels { key: 'deprecated' value: 1 }"
        " name: 'animals' base_path: '/models/animals/' model_platform: 'tensorflow'"
        " model_version_policy { specific { versions: 3 versions: 2 versions: 1 } } } }"
    )
    assert render_config(reordered) == render_config(LAB_STATE)


# --- properties -------------------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
_int64 = st.integers(-(2**63), 2**63 - 1)
_policies: st.SearchStrategy[VersionPolicy | None] = st.one_of(
    st.none(),
    st.builds(AllVersions),
    st.builds(Latest, st.integers(0, 2**32 - 1)),
    st.lists(_int64, unique=True, max_size=5).map(lambda v: Specific(tuple(sorted(v)))),
)
_unmanaged = st.sampled_from(
    [
        b"",
        to_proto(parse_config("model_config_list { config { model_type: TENSORFLOW } }"))
        .model_config_list.config[0]
        .SerializeToString(deterministic=True),
        to_proto(
            parse_config(
                "model_config_list { config { logging_config { sampling_config"
                " { sampling_rate: 0.5 } log_collector_config { type: 'x' } } } }"
            )
        )
        .model_config_list.config[0]
        .SerializeToString(deterministic=True),
    ]
)
_models = st.builds(
    ConfigModel,
    name=_text,
    base_path=_text,
    platform=_text,
    policy=_policies,
    labels=st.dictionaries(_text, _int64, max_size=4).map(lambda d: tuple(sorted(d.items()))),
    unmanaged=_unmanaged,
)
_configs = st.lists(_models, max_size=4, unique_by=lambda m: m.name).map(
    lambda ms: ServingConfig(tuple(ms))
)


@settings(max_examples=100, deadline=None)
@given(_configs)
def test_any_config_round_trips_through_its_rendering(config: ServingConfig) -> None:
    assert parse_config(render_config(config)) == config


@settings(max_examples=300, deadline=None)
@given(_configs)
def test_rendering_is_byte_for_byte_protobufs_text_format(config: ServingConfig) -> None:
    expected = HEADER + text_format.MessageToString(to_proto(config), as_utf8=True)
    assert render_config(config) == expected


@settings(max_examples=100, deadline=None)
@given(_configs)
def test_rendering_is_a_fixed_point(config: ServingConfig) -> None:
    once = render_config(config)
    assert render_config(parse_config(once)) == once


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_no_text_makes_parse_config_crash(text: str) -> None:
    try:
        parse_config(text)
    except InputError as error:
        assert error.problems


_CONFIG_PIECES = st.sampled_from(
    [
        "model_config_list",
        "config",
        "{",
        "}",
        "name:",
        "'a'",
        '"a"',
        "base_path:",
        "version_labels",
        "key:",
        "value:",
        "model_version_policy",
        "specific",
        "latest",
        "all",
        "versions:",
        "num_versions:",
        "-1",
        "9223372036854775808",
        "4294967296",
        "1",
        "model_type:",
        "TENSORFLOW",
        "7",
        "logging_config",
        "custom_model_config",
        "type_url:",
        "'\\xff'",
        "'\\377'",
        "#",
        "\n",
        " ",
        ":",
        "<",
        ">",
        ",",
        ";",
        "[",
        "]",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_CONFIG_PIECES, max_size=40).map(" ".join))
def test_no_config_like_text_makes_parse_config_crash(text: str) -> None:
    try:
        parse_config(text)
    except InputError as error:
        assert error.problems


# --- the line parser: equal to text_format wherever it answers --------------------------------


def _both(text: str) -> tuple[object, object]:
    """What parse_config and text_format alone make of `text` (a value, or the problems)."""

    def run(parse: Callable[[str], ServingConfig]) -> object:
        try:
            return parse(text)
        except InputError as error:
            return [str(p) for p in error.problems]

    return run(lambda t: parse_config.__wrapped__(t)), run(parse_with_text_format)


_plain = st.text("ab-_./0é 'x\"\\", max_size=6)  # mostly no escapes: the line parser's case
_plain_configs = st.lists(
    st.builds(
        ConfigModel,
        name=_plain,
        base_path=_plain,
        platform=_plain,
        policy=_policies,
        labels=st.dictionaries(_plain, _int64, max_size=3).map(lambda d: tuple(sorted(d.items()))),
    ),
    max_size=3,
).map(lambda ms: ServingConfig(tuple(ms)))
_LAYOUT = st.sampled_from(["", " ", "  ", "\t", "   \r"])


@st.composite
def _rendered_and_reshaped(draw: st.DrawFn) -> str:
    """A rendered config, its lines re-indented, some commented, some duplicated, dropped or
    swapped, blank lines and stray pieces put in: text the line parser may or may not take."""
    lines = render_config(draw(st.one_of(_plain_configs, _configs))).split("\n")
    out: list[str] = []
    for line in lines:
        action = draw(
            st.sampled_from(["keep"] * 8 + ["twice", "drop", "comment", "blank", "piece"])
        )
        body = draw(_LAYOUT) + line.strip() + draw(_LAYOUT)
        if action == "twice":
            out += [body, body]
        elif action == "comment":
            out += ["# " + line, body]
        elif action == "blank":
            out += ["", body]
        elif action == "piece":
            out += [body, draw(_CONFIG_PIECES)]
        elif action == "keep":
            out.append(body)
    if len(out) > 2 and draw(st.booleans()):
        i = draw(st.integers(0, len(out) - 2))
        out[i], out[i + 1] = out[i + 1], out[i]
    return "\n".join(out)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_rendered_and_reshaped(), _plain_configs.map(render_config)))
def test_the_line_parser_equals_text_format_wherever_it_answers(text: str) -> None:
    fast, slow = _both(text)
    assert fast == slow


@settings(max_examples=300, deadline=None)
@given(st.lists(_CONFIG_PIECES, max_size=40).map(" ".join))
def test_the_line_parser_equals_text_format_on_config_like_text(text: str) -> None:
    fast, slow = _both(text.replace(" { ", " {\n").replace(" } ", "\n}\n"))
    assert fast == slow


@settings(max_examples=100, deadline=None)
@given(st.one_of(_configs, _plain_configs))
def test_what_render_config_writes_takes_the_line_parser(config: ServingConfig) -> None:
    """The fast path is the one taken for the reconciler's own files (else it is no use)."""
    if not any(m.unmanaged or _escaped(m) for m in config.models):
        assert _parse_rendered(render_config(config)) is not None


def _escaped(model: ConfigModel) -> bool:
    texts = [model.name, model.base_path, model.platform, *(label for label, _ in model.labels)]
    return any(_escape(t) != t for t in texts)
