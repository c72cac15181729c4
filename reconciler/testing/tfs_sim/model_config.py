"""The model server config: parse the text format, validate a ModelConfigList as TFS does.

The simulator keeps a ``ModelServerConfig`` proto (TFS's own message, from reconciler.proto)
as "the config" and reads each model from it as a frozen :class:`ModelSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import text_format

from reconciler.proto import tensorflow_serving_pb2 as pb
from reconciler.testing.tfs_sim.errors import Code, TfsError

TRANSITION_ERROR = (
    "Cannot transition to requested config. It is only legal to transition from one "
    "ModelConfigList to another."
)
SUPPORTED_PLATFORMS = ("tensorflow",)


@dataclass(frozen=True)
class VersionPolicy:
    """``ServableVersionPolicy``: ``kind`` is "latest", "all" or "specific"."""

    kind: str
    num_versions: int = 1
    versions: frozenset[int] = frozenset()

    def choose(self, on_disk: set[int]) -> set[int]:
        """The versions to serve among those found on disk."""
        if self.kind == "all":
            return set(on_disk)
        if self.kind == "specific":
            return on_disk & self.versions
        return set(sorted(on_disk, reverse=True)[: max(self.num_versions, 1)])


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
        # TFS treats num_versions 0 as 1 (a Latest policy always serves at least one).
        return VersionPolicy("latest", num_versions=max(int(policy.latest.num_versions), 1))
    return LATEST_ONE


def model_spec(config: pb.ModelConfig) -> ModelSpec:
    return ModelSpec(
        name=config.name,
        base_path=config.base_path,
        platform=config.model_platform or "tensorflow",
        policy=policy_of(config),
        labels={str(k): int(v) for k, v in config.version_labels.items()},
    )


def parse_config_text(text: str) -> pb.ModelServerConfig:
    """Parse a models.config (protobuf text format). Raises TfsError(INVALID_ARGUMENT)."""
    config = pb.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise TfsError(Code.INVALID_ARGUMENT, f"Invalid protobuf file: {e}") from e
    return config


def validate_config_list(config_list: pb.ModelConfigList) -> list[ModelSpec]:
    """Check a ModelConfigList as ServerCore does; return its models in order."""
    seen: set[str] = set()
    specs: list[ModelSpec] = []
    for entry in config_list.config:
        if not entry.name:
            raise TfsError(Code.INVALID_ARGUMENT, "Illegal to specify a model with an empty name")
        if entry.name in seen:
            raise TfsError(
                Code.INVALID_ARGUMENT,
                f"Illegal to list model {entry.name} multiple times in config list",
            )
        seen.add(entry.name)
        spec = model_spec(entry)
        if spec.platform not in SUPPORTED_PLATFORMS:
            raise TfsError(
                Code.INVALID_ARGUMENT,
                f"Model {spec.name} requested unsupported platform {spec.platform}",
            )
        specs.append(spec)
    return specs


def validate_transition(
    old: pb.ModelServerConfig | None, new: pb.ModelServerConfig
) -> list[ModelSpec]:
    """Check that ``new`` may replace ``old``; return the new models.

    Only ModelConfigList -> ModelConfigList (or a first config) is legal, and a model keeps
    its platform.
    """
    new_case = new.WhichOneof("config")
    old_case = old.WhichOneof("config") if old is not None else None
    if new_case != "model_config_list" or old_case not in (None, "model_config_list"):
        if old_case is None and new_case == "custom_model_config":
            raise TfsError(
                Code.UNIMPLEMENTED, "custom_model_config is not supported by the simulator"
            )
        raise TfsError(Code.FAILED_PRECONDITION, TRANSITION_ERROR)
    specs = validate_config_list(new.model_config_list)
    if old is not None:
        old_platforms = {s.name: s.platform for s in validate_config_list(old.model_config_list)}
        for spec in specs:
            before = old_platforms.get(spec.name)
            if before is not None and before != spec.platform:
                raise TfsError(
                    Code.INVALID_ARGUMENT,
                    f"Illegal to change a model's platform. For model {spec.name} platform was "
                    f"{before} and new platform requested is {spec.platform}",
                )
    return specs
