"""Helpers of the contract tests: the TFS under test, configs, waiting (see conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import requests
from google.protobuf import text_format

from reconciler.proto import tensorflow_serving_pb2 as pb
from reconciler.proto import tensorflow_serving_pb2_grpc as pb_grpc
from reconciler.testing import SimulatorProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SOURCE_MODEL = EXAMPLES / "models" / "animals"
DOG = json.loads((EXAMPLES / "dog_example.json").read_text())

SIM_LOAD_SECONDS = 0.2
SIM_FS_POLL_SECONDS = 0.2
SIM_CONFIG_POLL_SECONDS = 0.3
SIM_RETRY_ARGS = ("--max_num_load_retries=1", "--load_retry_interval_micros=200000")

T = TypeVar("T")


def model_config(
    name: str,
    base_path: str,
    *,
    latest: int | None = None,
    all_versions: bool = False,
    specific: Sequence[int] | None = None,
    labels: dict[str, int] | None = None,
) -> pb.ModelConfig:
    """One ``config { ... }`` entry; no policy argument means no policy (latest 1)."""
    entry = pb.ModelConfig(name=name, base_path=base_path, model_platform="tensorflow")
    policy = entry.model_version_policy
    if latest is not None:
        policy.latest.num_versions = latest
    elif all_versions:
        policy.all.SetInParent()
    elif specific is not None:
        policy.specific.versions.extend(specific)
    for label, version in (labels or {}).items():
        entry.version_labels[label] = version
    return entry


def server_config(*entries: pb.ModelConfig) -> pb.ModelServerConfig:
    config = pb.ModelServerConfig()
    config.model_config_list.config.extend(entries)
    return config


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Tfs:
    """The TensorFlow Serving under test (the simulator or a real one), and its models folder."""

    rest_url: str
    grpc_target: str
    models_dir: Path  # the host folder TFS sees as container_dir
    container_dir: str
    config_file: Path
    poll_seconds: float
    fs_poll_seconds: float
    allow_labels: bool
    sim: SimulatorProcess | None = None
    token: str = ""
    original_config: str | None = None  # a real TFS's config file before the test
    created: list[Path] = field(default_factory=list)  # model folders the test made
    _channel: grpc.Channel | None = field(default=None, repr=False)

    @property
    def is_simulator(self) -> bool:
        return self.sim is not None

    @property
    def settle_seconds(self) -> float:
        """Generous time for a config poll, a file-system poll and a load to happen."""
        return 3 * (self.poll_seconds + self.fs_poll_seconds) + 5

    def name(self, base: str) -> str:
        """A model name of this test's own."""
        return f"{base}{self.token}"

    def base_path(self, model: str) -> str:
        return f"{self.container_dir}/{model}"

    # --- the models folder ------------------------------------------------------------

    def add_version(
        self, model: str, version: int | str, *, source: int = 1, saved_model: bytes | None = None
    ) -> Path:
        """Put a copy of examples' animals/``source`` at MODEL/VERSION (renamed into place).

        ``saved_model`` replaces saved_model.pb's bytes; ``b""`` leaves it out.
        """
        target = self.models_dir / model / str(version)
        staging = self.models_dir / model / f".{version}.{uuid.uuid4().hex[:6]}.tmp"
        for src in (SOURCE_MODEL / str(source)).rglob("*"):
            dst = staging / src.relative_to(SOURCE_MODEL / str(source))
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
        if saved_model is not None:
            (staging / "saved_model.pb").unlink()
            if saved_model:
                (staging / "saved_model.pb").write_bytes(saved_model)
        staging.rename(target)
        return target

    def add_model(self, model: str, versions: Sequence[int] = (1, 2, 3)) -> None:
        self.created.append(self.models_dir / model)
        for version in versions:
            self.add_version(model, version, source=version if version in (1, 2, 3) else 1)

    def remove_version(self, model: str, version: int) -> None:
        shutil.rmtree(self.models_dir / model / str(version))

    # --- config -----------------------------------------------------------------------

    def write_config(self, config: pb.ModelServerConfig | str) -> None:
        text = config if isinstance(config, str) else text_format.MessageToString(config)
        staging = self.config_file.with_name(f".{self.config_file.name}.tmp")
        staging.write_text(text)
        staging.replace(self.config_file)

    @property
    def model_service(self) -> pb_grpc.ModelServiceStub:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.grpc_target)
        return pb_grpc.ModelServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def push(self, config: pb.ModelServerConfig, timeout: float = 30) -> pb.ReloadConfigResponse:
        """HandleReloadConfigRequest; raises grpc.RpcError when refused."""
        response: pb.ReloadConfigResponse = self.model_service.HandleReloadConfigRequest(
            pb.ReloadConfigRequest(config=config), timeout=timeout
        )
        return response

    def apply(self, config: pb.ModelServerConfig) -> None:
        """Write the config file, then push the same config (so a later poll keeps it)."""
        self.write_config(config)
        self.push(config)

    def close(self) -> None:
        """Against a real TFS, put its config back and remove the test's model folders."""
        if self.original_config is not None:
            self.write_config(self.original_config)
            with contextlib.suppress(grpc.RpcError, text_format.ParseError):
                # (if this fails, the next config poll puts it back)
                self.push(text_format.Parse(self.original_config, pb.ModelServerConfig()))
            for folder in self.created:
                shutil.rmtree(folder, ignore_errors=True)
        if self._channel is not None:
            self._channel.close()

    # --- REST -------------------------------------------------------------------------

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.rest_url}{path}", timeout=10)

    def post(self, path: str, body: Any = None) -> requests.Response:
        return requests.post(
            f"{self.rest_url}{path}", json=DOG if body is None else body, timeout=10
        )

    def states(self, model: str) -> dict[int, str]:
        """Version -> state name from REST status ({} for an unknown model)."""
        response = self.get(f"/v1/models/{model}")
        if response.status_code == 404:
            return {}
        response.raise_for_status()
        return {int(s["version"]): s["state"] for s in response.json()["model_version_status"]}

    def available(self, model: str) -> set[int]:
        return {v for v, s in self.states(model).items() if s == "AVAILABLE"}

    def wait_states(
        self, model: str, expected: dict[int, str], timeout: float | None = None
    ) -> None:
        """Wait until each listed version is in the given state (others may exist)."""

        def reached() -> bool:
            states = self.states(model)
            return all(states.get(v) == s for v, s in expected.items())

        wait_until(reached, timeout or self.settle_seconds, f"{model} states {expected}")

    def wait_available(self, model: str, versions: set[int], timeout: float | None = None) -> None:
        """Wait until exactly ``versions`` of ``model`` are AVAILABLE."""
        wait_until(
            lambda: self.available(model) == versions,
            timeout or self.settle_seconds,
            f"{model} AVAILABLE == {sorted(versions)}",
        )

    def answer(self, path: str) -> list[float]:
        """The first prediction of the dog example at ``/v1/models/...{path}:predict``."""
        response = self.post(f"{path}:predict")
        assert response.status_code == 200, response.text
        first: list[float] = response.json()["predictions"][0]
        return first

    def label_version(self, model: str, label: str) -> int | None:
        """Where ``label`` points, from its metadata (None when it does not resolve)."""
        response = self.get(f"/v1/models/{model}/labels/{label}/metadata")
        return int(response.json()["model_spec"]["version"]) if response.ok else None


def real_tfs(rest_url: str, allow_labels: bool | None) -> Tfs:
    """The real TFS of the environment; skips when it runs with another labels flag than
    ``allow_labels`` needs (None: either will do)."""
    running_allows = os.environ.get("TFS_ALLOW_LABELS", "true").lower() in ("1", "true")
    if allow_labels is not None and allow_labels != running_allows:
        pytest.skip(
            "needs TFS started with --allow_version_labels_for_unavailable_models="
            f"{str(allow_labels).lower()}"
        )
    models_dir = Path(os.environ["TFS_MODELS_DIR"])
    config_file = Path(os.environ.get("TFS_CONFIG_FILE", models_dir / "models.config"))
    return Tfs(
        rest_url=rest_url.rstrip("/"),
        grpc_target=os.environ["TFS_GRPC_TARGET"],
        models_dir=models_dir,
        container_dir=os.environ.get("TFS_CONTAINER_MODELS_DIR", "/models").rstrip("/"),
        config_file=config_file,
        poll_seconds=float(os.environ.get("TFS_CONFIG_POLL_SECONDS", "1")),
        fs_poll_seconds=float(os.environ.get("TFS_FS_POLL_SECONDS", "1")),
        allow_labels=running_allows,
        token="_" + uuid.uuid4().hex[:8],
        original_config=config_file.read_text() if config_file.exists() else None,
    )


StartTfs = Callable[..., Tfs]
"""The ``start_tfs`` fixture's type (see conftest.py)."""
