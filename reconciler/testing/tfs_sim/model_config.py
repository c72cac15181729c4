"""The model server config: parse the text format, validate a ModelConfigList as TFS does.

The simulator keeps a ``ModelServerConfig`` proto (TFS's own message, from reconciler.proto)
as "the config" and reads each model from it as a frozen :class:`ModelSpec`. The checks and
their texts are those of ``model_servers/server_core.cc`` (``ValidateModelConfigList``,
``GetPlatform``, ``ValidateNoModelsChangePlatforms``, ``CreateStoragePathRoutes``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf import text_format

from reconciler.proto import tensorflow_serving_pb2 as pb
from reconciler.testing.tfs_sim.errors import Code, TfsError

TRANSITION_ERROR = (
    "Cannot transition to requested config. It is only legal to transition from one "
    "ModelConfigList to another."
)
# The platforms of the default PlatformConfigMap (servables/tensorflow: "tensorflow" only).
SUPPORTED_PLATFORMS = ("tensorflow",)
_URI_SCHEME = re.compile(r"[a-zA-Z][0-9a-zA-Z.]*://")


@dataclass(frozen=True)
class VersionPolicy:
    """``ServableVersionPolicy``: ``kind`` is "latest", "all" or "specific"."""

    kind: str
    num_versions: int = 1
    versions: frozenset[int] = frozenset()


LATEST_ONE = VersionPolicy("latest", 1)


@dataclass(frozen=True)
class ModelSpec:
    """One ``ModelConfig`` entry, as the simulator uses it."""

    name: str
    base_path: str
    platform: str
    policy: VersionPolicy
    labels: dict[str, int]


def policy_of(config: pb.ModelConfig) -> VersionPolicy:
    """The version policy of a model; none set means latest 1."""
    policy = config.model_version_policy
    which = policy.WhichOneof("policy_choice") if config.HasField("model_version_policy") else None
    if which == "all":
        return VersionPolicy("all")
    if which == "specific":
        return VersionPolicy(
            "specific", versions=frozenset(int(v) for v in policy.specific.versions)
        )
    if which == "latest":
        # AspireLatestVersions: max(num_versions, 1).
        return VersionPolicy("latest", num_versions=max(int(policy.latest.num_versions), 1))
    return LATEST_ONE


def get_platform(config: pb.ModelConfig) -> str:
    """``GetPlatform`` (server_core.cc): model_platform, or the deprecated model_type."""
    if config.model_type != pb.MODEL_TYPE_UNSPECIFIED:
        if config.model_platform:
            raise TfsError(
                Code.INVALID_ARGUMENT,
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {config.name}",
            )
        if config.model_type != pb.TENSORFLOW:
            raise TfsError(
                Code.INVALID_ARGUMENT,
                f"ModelServerConfig::model_type choice {int(config.model_type)} not supported.",
            )
        return "tensorflow"
    if not config.model_platform:
        raise TfsError(
            Code.INVALID_ARGUMENT,
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {config.name}",
        )
    return config.model_platform


def model_spec(config: pb.ModelConfig) -> ModelSpec:
    return ModelSpec(
        name=config.name,
        base_path=config.base_path,
        platform=config.model_platform,
        policy=policy_of(config),
        labels={str(k): int(v) for k, v in config.version_labels.items()},
    )


def specs_of(config: pb.ModelServerConfig) -> list[ModelSpec]:
    return [model_spec(entry) for entry in config.model_config_list.config]


def parse_config_text(text: str, path: str = "") -> pb.ModelServerConfig:
    """Parse a models.config as ``ParseProtoTextFile`` (util/proto_util.h) does: a syntax error
    is INVALID_ARGUMENT ``Invalid protobuf file: 'PATH'``; protobuf's own text-format error
    (``Error parsing text-format tensorflow.serving.ModelServerConfig: LINE:COL: ...``) is
    what the server logs, and :attr:`TfsError.detail` carries it."""
    config = pb.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        where = f"{e.GetLine()}:{e.GetColumn()}"
        message = str(e)
        if message.startswith(where + " : "):
            message = message[len(where) + 3 :]
        error = TfsError(Code.INVALID_ARGUMENT, f"Invalid protobuf file: '{path}'")
        error.detail = (
            f"Error parsing text-format tensorflow.serving.ModelServerConfig: {where}: {message}"
        )
        raise error from e
    return config


def uri_is_relative_path(uri: str) -> bool:
    """``UriIsRelativePath``: no ``scheme://`` and not an absolute path."""
    return _URI_SCHEME.match(uri) is None and not uri.startswith("/")


def validate_model_config_list(config_list: pb.ModelConfigList) -> None:
    """``ValidateModelConfigList``: unique names, absolute base paths."""
    seen: set[str] = set()
    for entry in config_list.config:
        if entry.name in seen:
            raise TfsError(
                Code.INVALID_ARGUMENT,
                f"Illegal to list model {entry.name} multiple times in config list",
            )
        seen.add(entry.name)
    for entry in config_list.config:
        if uri_is_relative_path(entry.base_path):
            raise TfsError(
                Code.INVALID_ARGUMENT,
                f"Expected model {entry.name} to have an absolute path or URI; got "
                f"base_path()={entry.base_path}",
            )


def validate_no_models_change_platforms(old: pb.ModelConfigList, new: pb.ModelConfigList) -> None:
    """``ValidateNoModelsChangePlatforms``: GetPlatform of every old model and of every model
    in both lists, and the platform kept."""
    old_platforms = {entry.name: get_platform(entry) for entry in old.config}
    for entry in new.config:
        before = old_platforms.get(entry.name)
        if before is None:
            continue
        platform = get_platform(entry)
        if platform != before:
            raise TfsError(
                Code.INVALID_ARGUMENT,
                f"Illegal to change a model's platform. For model {entry.name} platform was "
                f"{before} and new platform requested is {platform}",
            )


def check_storage_path_routes(config_list: pb.ModelConfigList) -> None:
    """``CreateStoragePathRoutes``: every model's platform must be one the server has. Runs
    after the config and the labels were replaced (inside ``AddModelsViaModelConfigList``)."""
    for entry in config_list.config:
        platform = get_platform(entry)
        if platform not in SUPPORTED_PLATFORMS:
            raise TfsError(
                Code.INVALID_ARGUMENT,
                f"Model {entry.name} requests unsupported platform {platform}",
            )
