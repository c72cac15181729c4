"""A Docker test bed: the engine, the ``tfs-sim:local`` image, and one container per test.

The TFS simulator packaged as a drop-in for the ``tensorflow/serving`` image, so that tests
(and people) can run the lab's own ``docker run`` line against it, with no registry access:

- :func:`ensure_engine` returns a client of a Docker engine that answers, starting ``dockerd``
  (logging to a file) when none does and none is starting.
- :func:`ensure_base_image` builds ``tfs-reconciler-base:bookworm`` with
  ``deploy/tfs-sim/build-base-image.sh`` (debootstrap + ``docker import``) when it is missing or
  was built by another version of that script.
- :func:`ensure_sim_image` builds ``tfs-sim:local`` from ``deploy/tfs-sim/Dockerfile`` and wheels
  of the project built on the host, only when no image carries the hash of the current sources.
- :func:`running_container` runs one simulator container on free loopback ports with a host
  folder bind-mounted at ``/models``, and removes it afterwards whatever happened.
- :func:`ensure_systemd_image` and :func:`systemd_container`: the base image with systemd and
  git, run with systemd as PID 1 (a fresh machine, to try the unit's install steps on).

The same steps from a shell: ``python -m reconciler.testing.docker_bed engine|base-image|image``,
which prints one line per stage with the seconds elapsed (a first build takes minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.images import Image
from docker.types import Mount

BASE_IMAGE = "tfs-reconciler-base:bookworm"
SIM_IMAGE = "tfs-sim:local"
SYSTEMD_IMAGE = "tfs-reconciler-systemd:bookworm"
LABEL_RECIPE_HASH = "org.tfs-reconciler.recipe-hash"
LABEL_SOURCE_HASH = "org.tfs-reconciler.source-hash"
LABEL_BED = "org.tfs-reconciler.docker-bed"
CONTAINER_GRPC_PORT = 8500
CONTAINER_REST_PORT = 8501
CONTAINER_MODELS_DIR = "/models"
LOOPBACK = "127.0.0.1"

#: The lab's server flags (``../shared/lab/README.md``), after the image name.
LAB_ARGS: tuple[str, ...] = (
    "--model_config_file=/models/models.config",
    "--model_config_file_poll_wait_seconds=60",
    "--allow_version_labels_for_unavailable_models=true",
)

_DEFAULT_SOCKET = "/var/run/docker.sock"
_DOCKERD_PIDFILE = Path("/var/run/docker.pid")
_IMAGE_DIR = Path("deploy") / "tfs-sim"
_SYSTEMD_IMAGE_DIR = Path("tests") / "deploy" / "systemd-image"
_IMAGE_PYTHON = (3, 11)
_STARTED_DAEMONS: list[subprocess.Popen[bytes]] = []
# Requests to the containers' loopback ports never go through an http_proxy from the env.
_LOOPBACK_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_SKIPPED_SUFFIXES = (".pyc", ".pyo", "~")


#: Told one line of text at the start or end of each stage of a build.
Progress = Callable[[str], None]


def _silent(_line: str) -> None:
    """The default :data:`Progress`: tell nobody."""


class StageClock:
    """A :data:`Progress` printing ``docker_bed [  12.3 s] line``, seconds since it was made.

    Plain text, flushed at once: readable in a terminal and in a CI log alike.
    """

    def __init__(self, stream: IO[str], clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._clock = clock
        self._started = clock()

    def __call__(self, line: str) -> None:
        elapsed = self._clock() - self._started
        print(f"docker_bed [{elapsed:6.1f} s] {line}", file=self._stream, flush=True)


class DockerBedError(RuntimeError):
    """The test bed could not be set up; the message says what failed and where to look."""


class EngineUnavailableError(DockerBedError):
    """No Docker engine answers, and none could be started here."""


def project_root() -> Path:
    """The source tree this module belongs to (the folder holding ``pyproject.toml``)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / _IMAGE_DIR).is_dir():
        raise DockerBedError(
            f"{root} is not a tfs-reconciler source tree (no pyproject.toml or {_IMAGE_DIR}): "
            "the Docker test bed builds images from a checkout, not from an installed package"
        )
    return root


def _state_dir() -> Path:
    path = Path(os.environ.get("TFS_BED_STATE_DIR", tempfile.gettempdir()))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _exclusive(name: str) -> Iterator[None]:
    """Serialise a step across processes (parallel pytest sessions share one engine)."""
    with open(_state_dir() / f"tfs-reconciler-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 30, skip: str | None = None) -> str:
    """The last lines of a log, leaving out those that contain ``skip`` (noise)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    kept = [line for line in text.splitlines() if skip is None or skip not in line]
    return "\n".join(kept[-lines:])


# --- the engine ---------------------------------------------------------------------------


def _client_or_none(ping_timeout: int = 5) -> docker.DockerClient | None:
    """A client (with the SDK's default timeouts) if the engine answers a ping in time."""
    try:
        probe = docker.from_env(timeout=ping_timeout)
        try:
            probe.ping()
        finally:
            probe.close()
        return docker.from_env()
    except (docker.errors.DockerException, OSError):
        return None


def _dockerd_pid() -> int | None:
    """The pid of a running dockerd that owns the default pidfile, if any."""
    try:
        pid = int(_DOCKERD_PIDFILE.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "dockerd" else None


def _uses_default_socket() -> bool:
    host = os.environ.get("DOCKER_HOST", "")
    return host in ("", f"unix://{_DEFAULT_SOCKET}")


def ensure_engine(
    *,
    timeout: float = 90.0,
    log_path: Path | None = None,
    dockerd_args: Sequence[str] | None = None,
) -> docker.DockerClient:
    """Return a client of an engine that answers, starting ``dockerd`` if none does.

    Only the default local engine is ever started (not one named by a remote ``DOCKER_HOST``),
    and never a second one: a dockerd that holds the default pidfile is waited for. The started
    daemon logs to ``log_path`` (default ``$TMPDIR/tfs-reconciler-dockerd.log``), outlives this
    process, and its extra arguments come from ``dockerd_args`` or ``$TFS_BED_DOCKERD_ARGS``.
    """
    client = _client_or_none()
    if client is not None:
        return client
    if not _uses_default_socket():
        raise EngineUnavailableError(
            f"no Docker engine answers at DOCKER_HOST={os.environ['DOCKER_HOST']}, "
            "and only the local default engine is started by the test bed"
        )
    log_path = log_path or _state_dir() / "tfs-reconciler-dockerd.log"
    with _exclusive("dockerd"):
        client = _client_or_none()
        if client is not None:
            return client
        process: subprocess.Popen[bytes] | None = None
        if _dockerd_pid() is None:
            process = _start_dockerd(log_path, dockerd_args)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            client = _client_or_none()
            if client is not None:
                return client
            if process is not None and process.poll() is not None:
                raise EngineUnavailableError(
                    f"dockerd exited with status {process.returncode} while starting; "
                    f"its log {log_path} ends with:\n{_tail(log_path)}"
                )
            time.sleep(0.5)
    raise EngineUnavailableError(
        f"no Docker engine answered at {_DEFAULT_SOCKET} within {timeout:.0f} s; "
        f"dockerd's log {log_path} ends with:\n{_tail(log_path)}"
    )


def _start_dockerd(log_path: Path, dockerd_args: Sequence[str] | None) -> subprocess.Popen[bytes]:
    """Start dockerd in its own session (it outlives this process), logging to ``log_path``."""
    dockerd = shutil.which("dockerd") or (
        "/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").exists() else None
    )
    if dockerd is None:
        raise EngineUnavailableError(
            "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
        )
    if os.geteuid() != 0:
        raise EngineUnavailableError(
            f"no Docker engine answers at {_DEFAULT_SOCKET}, and starting dockerd needs root"
        )
    if dockerd_args is None:
        dockerd_args = os.environ.get("TFS_BED_DOCKERD_ARGS", "").split()
    _mount_cgroups_if_missing(log_path)
    # A pidfile left by a dockerd that was killed (its pid maybe reused): dockerd would refuse.
    _DOCKERD_PIDFILE.unlink(missing_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting dockerd ---\n".encode())
        log.flush()
        process = subprocess.Popen(
            [dockerd, *dockerd_args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _STARTED_DAEMONS.append(process)  # kept: it runs on after this process, unwaited for
    return process


def _mount_cgroups_if_missing(log_path: Path) -> None:
    """dockerd needs cgroups; a bare machine may not mount them (``cgroupfs-mount`` does)."""
    try:
        mounts = Path("/proc/mounts").read_text()
    except OSError:
        return
    if " /sys/fs/cgroup" in mounts or shutil.which("cgroupfs-mount") is None:
        return
    with open(log_path, "ab") as log:
        subprocess.run(["cgroupfs-mount"], stdout=log, stderr=log, check=False)


# --- the images ---------------------------------------------------------------------------


def _label(image: Image, key: str) -> str | None:
    labels: Mapping[str, str] | None = image.labels
    return (labels or {}).get(key)


def _image_or_none(client: docker.DockerClient, name: str) -> Image | None:
    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_base_image(
    client: docker.DockerClient,
    root: Path | None = None,
    *,
    tag: str = BASE_IMAGE,
    progress: Progress = _silent,
) -> Image:
    """Return the debootstrapped base image, building it when missing or out of date."""
    script = (root or project_root()) / _IMAGE_DIR / "build-base-image.sh"
    recipe_hash = _sha256_file(script)
    with _exclusive("image-build"):
        image = _image_or_none(client, tag)
        if image is not None and _label(image, LABEL_RECIPE_HASH) == recipe_hash:
            return image
        log_path = _state_dir() / "tfs-reconciler-base-image.log"
        why = "missing" if image is None else "built by another recipe"
        progress(f"base image: {tag} {why}; building it (minutes; log {log_path})")
        returncode = _run_relaying_stages(["bash", str(script), tag], log_path, progress)
        if returncode != 0:
            raise DockerBedError(
                f"{script} failed with status {returncode}; its log {log_path} ends "
                f"with:\n{_tail(log_path)}"
            )
        built = client.images.get(tag)
        progress(f"base image: {tag} built")
        return built


def _run_relaying_stages(command: Sequence[str], log_path: Path, progress: Progress) -> int:
    """Run ``command`` with its output in ``log_path``, telling ``progress`` its stage lines."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert process.stdout is not None
        for raw in process.stdout:
            log.write(raw)
            line = raw.decode(errors="replace").strip()
            if _is_stage_line(line):
                progress(line)
        return process.wait()


def _is_stage_line(line: str) -> bool:
    """The build script's own lines, and debootstrap's phases (not its line per package)."""
    if line.startswith("build-base-image: "):
        return True
    return line.startswith("I: ") and line.endswith(("...", "successfully."))


def image_source_files(root: Path) -> list[Path]:
    """The files an image is built from, relative to ``root``, in a stable order.

    ``pyproject.toml``, the ``reconciler`` package and ``deploy/tfs-sim``, leaving out caches,
    bytecode, hidden files (editor swap files) and backups.
    ``README.md`` is copied when present (the package metadata names it) but is not hashed.
    """
    files = [Path("pyproject.toml")]
    for top in (Path("reconciler"), _IMAGE_DIR):
        for dirpath, dirnames, filenames in os.walk(root / top):
            dirnames[:] = sorted(d for d in dirnames if not _skipped(d) and d != "__pycache__")
            files.extend(
                Path(dirpath, name).relative_to(root)
                for name in sorted(filenames)
                if not _skipped(name)
            )
    return files


def _skipped(name: str) -> bool:
    """Hidden files and folders (caches, editor state), bytecode and backups."""
    return name.startswith(".") or name.endswith(_SKIPPED_SUFFIXES)


def source_hash(root: Path, files: Iterable[Path], *, base_image_id: str = "") -> str:
    """The sha256 of the files' paths and contents, and of the base image they build on."""
    digest = hashlib.sha256(f"base {base_image_id}\n".encode())
    for relative in files:
        data = (root / relative).read_bytes()
        digest.update(f"{relative.as_posix()} {len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


@dataclass(frozen=True)
class SimImage:
    """The simulator image as built or found: its tag, id, source hash, and whether built now."""

    tag: str
    id: str
    source_hash: str
    built: bool
    seconds: float


def ensure_sim_image(
    client: docker.DockerClient,
    root: Path | None = None,
    *,
    tag: str = SIM_IMAGE,
    force: bool = False,
    progress: Progress = _silent,
) -> SimImage:
    """Return the simulator image, building it only when no image has the sources' hash."""
    started = time.monotonic()
    root = root or project_root()
    base = ensure_base_image(client, root, progress=progress)
    files = image_source_files(root)
    wanted = source_hash(root, files, base_image_id=base.id or "")
    with _exclusive("image-build"):
        existing = _image_or_none(client, tag)
        if not force and existing is not None and _label(existing, LABEL_SOURCE_HASH) == wanted:
            return SimImage(tag, existing.id or "", wanted, False, time.monotonic() - started)
        progress(f"image: building {tag} (source hash {wanted[:12]})")
        with tempfile.TemporaryDirectory(prefix="tfs-sim-context-") as tmp:
            progress("image: building the project's wheels")
            context = _build_context(root, files, Path(tmp))
            progress(f"image: docker build of {tag}")
            image = _docker_build(client, context, tag, wanted, progress=progress)
            progress(f"image: {tag} built")
        # Earlier builds, now untagged, unless a container still uses them.
        with contextlib.suppress(docker.errors.APIError):
            client.images.prune(filters={"dangling": True, "label": LABEL_SOURCE_HASH})
        return SimImage(tag, image.id or "", wanted, True, time.monotonic() - started)


def _build_context(root: Path, files: Sequence[Path], context: Path) -> Path:
    """Copy the sources, build the project's wheels and lay out the Docker build context."""
    if sys.version_info[:2] != _IMAGE_PYTHON:
        raise DockerBedError(
            f"the image runs Python {'.'.join(map(str, _IMAGE_PYTHON))} (Debian bookworm), and "
            f"wheels built by this Python {sys.version.split()[0]} may not install there: "
            "build the image from a Python 3.11 environment"
        )
    source = context / "source"
    for relative in [*files, Path("README.md")]:
        if (root / relative).is_file():
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / relative, source / relative)
    build_wheels(source, context / "wheels")
    shutil.rmtree(source)
    for name in ("Dockerfile", "tf_serving_entrypoint.sh"):
        shutil.copy2(root / _IMAGE_DIR / name, context / name)
    return context


def build_wheels(source: Path, wheels: Path, *extra: str) -> None:
    """Wheels of the project in ``source``, its dependencies and ``extra`` (requirements)."""
    log_path = _state_dir() / "tfs-reconciler-wheels.log"
    command = [sys.executable, "-m", "pip", "wheel", "--progress-bar=off", "--wheel-dir"]
    with open(log_path, "wb") as log:
        for _attempt in range(2):  # a second try, for a download that broke off
            result = subprocess.run(
                [*command, str(wheels), str(source), *extra],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=source.parent,
            )
            if result.returncode == 0:
                break
    if result.returncode != 0:
        raise DockerBedError(
            f"building the project's wheels failed with status {result.returncode}; "
            f"{log_path} ends with:\n{_tail(log_path, skip='WARNING: Location')}"
        )


def _docker_build(
    client: docker.DockerClient,
    context: Path,
    tag: str,
    wanted: str,
    *,
    progress: Progress = _silent,
) -> Image:
    """``docker build`` of ``context``, telling ``progress`` each Dockerfile step as it starts."""
    return _stream_build(
        client,
        context,
        tag,
        {"BASE_IMAGE": BASE_IMAGE, "SOURCE_HASH": wanted},
        network_mode="none",
        progress=progress,
        log_name="tfs-reconciler-image-build.log",
    )


def _stream_build(
    client: docker.DockerClient,
    context: Path,
    tag: str,
    buildargs: Mapping[str, str],
    *,
    network_mode: str,
    progress: Progress,
    log_name: str,
) -> Image:
    log_path = _state_dir() / log_name
    failure: str | None = None
    with open(log_path, "w") as log:
        try:
            # The low-level call streams the build; ``client.images.build`` returns at its end.
            chunks = client.api.build(
                path=str(context),
                tag=tag,
                # The label comes from the Dockerfile: a build-level label (``labels=``) makes
                # dockerd 20.10's builder leave a created container behind at every build.
                buildargs=dict(buildargs),
                network_mode=network_mode,
                pull=False,
                rm=True,
                forcerm=True,
                decode=True,
            )
            for chunk in chunks:
                text = _build_log_text(chunk)
                log.write(text)
                log.flush()
                if text.startswith("Step "):
                    step = " ".join(text.split())
                    progress(f"image: {step[:100]}{' ...' if len(step) > 100 else ''}")
                if isinstance(chunk, Mapping) and chunk.get("error"):
                    failure = str(chunk["error"]).strip()
        except docker.errors.APIError as error:
            failure = str(error)
    if failure is not None:
        raise DockerBedError(
            f"docker build of {tag} failed: {failure}; {log_path} ends with:\n{_tail(log_path)}"
        )
    return client.images.get(tag)


def _build_log_text(chunk: Any) -> str:
    if isinstance(chunk, Mapping):
        return str(chunk.get("stream") or chunk.get("error") or "")
    return ""


def ensure_systemd_image(
    client: docker.DockerClient,
    root: Path | None = None,
    *,
    tag: str = SYSTEMD_IMAGE,
    progress: Progress = _silent,
) -> Image:
    """The base image with systemd and git (installed from the Debian mirror: needs network),
    built when missing or when its Dockerfile or the base image changed."""
    root = root or project_root()
    base = ensure_base_image(client, root, progress=progress)
    dockerfile = root / _SYSTEMD_IMAGE_DIR / "Dockerfile"
    wanted = hashlib.sha256(f"{base.id}\n".encode() + dockerfile.read_bytes()).hexdigest()
    with _exclusive("image-build"):
        existing = _image_or_none(client, tag)
        if existing is not None and _label(existing, LABEL_RECIPE_HASH) == wanted:
            return existing
        progress(f"systemd image: building {tag} (apt-get from the Debian mirror)")
        image = _stream_build(
            client,
            dockerfile.parent,
            tag,
            {"BASE_IMAGE": BASE_IMAGE, "RECIPE_HASH": wanted},
            network_mode="default",
            progress=progress,
            log_name="tfs-reconciler-systemd-image-build.log",
        )
        progress(f"systemd image: {tag} built")
        with contextlib.suppress(docker.errors.APIError):
            client.images.prune(filters={"dangling": True, "label": LABEL_RECIPE_HASH})
        return image


def exec_text(container: Container, command: Sequence[str], **options: Any) -> tuple[int, str]:
    """``docker exec``: the exit status and the output (stdout and stderr), as text."""
    result = container.exec_run(list(command), **options)
    output = result.output
    text = output.decode(errors="replace") if isinstance(output, bytes) else ""
    return int(result.exit_code or 0), text


@contextlib.contextmanager
def systemd_container(
    client: docker.DockerClient,
    mounts: Sequence[Mount] = (),
    *,
    image: str = SYSTEMD_IMAGE,
    boot_timeout: float = 120.0,
) -> Iterator[Container]:
    """A container with systemd as PID 1, booted, removed after the block whatever happened.

    It gets the capabilities systemd and a hardened unit's sandboxing use (mount namespaces:
    SYS_ADMIN), not ``--privileged`` (a nested engine may not grant every capability).
    """
    container: Container = client.containers.run(
        image,
        name=f"tfs-bed-systemd-{secrets.token_hex(4)}",
        detach=True,
        cap_add=["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        tmpfs={"/run": "", "/run/lock": "", "/tmp": ""},
        volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}},
        mounts=list(mounts),
        labels={LABEL_BED: str(os.getpid())},
    )
    try:
        deadline = time.monotonic() + boot_timeout
        state = ""
        while time.monotonic() < deadline:
            _, state = exec_text(container, ["systemctl", "is-system-running"])
            state = state.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.5)
        else:
            raise DockerBedError(
                f"systemd in {container.name} is {state!r} after {boot_timeout:.0f} s; "
                f"its logs:\n{container.logs().decode(errors='replace')[-4000:]}"
            )
        yield container
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)


# --- containers ---------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that nothing listens on now (another process may take it before you do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def copy_example_models(destination: Path, root: Path | None = None) -> Path:
    """Copy the lab's models folder (``examples/models``) to ``destination`` and return it."""
    shutil.copytree((root or project_root()) / "examples" / "models", destination)
    return destination


@dataclass(frozen=True)
class TfsContainer:
    """One simulator container, reachable on loopback ports that stay the same across restarts.

    ``models_dir`` is the host folder bind-mounted at ``/models``: change it to change what the
    server sees. ``rest_url`` is ``http://127.0.0.1:PORT`` (no trailing slash) and
    ``grpc_target`` is ``127.0.0.1:PORT``, ready for ``grpc.insecure_channel``.
    """

    container: Container
    name: str
    models_dir: Path
    rest_port: int
    grpc_port: int

    @property
    def rest_url(self) -> str:
        return f"http://{LOOPBACK}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def id(self) -> str:
        return self.container.id or ""

    def status(self) -> str:
        """Docker's word for the container's state: ``running``, ``exited``, ..."""
        self.container.reload()
        return str(self.container.status)

    def logs(self) -> str:
        raw: bytes = self.container.logs(stdout=True, stderr=True)
        return raw.decode(errors="replace")

    def restart(self, *, timeout: int = 10) -> None:
        """``docker restart``: stop (SIGTERM, then SIGKILL after ``timeout`` s) and start."""
        self.container.restart(timeout=timeout)

    def stop(self, *, timeout: int = 10) -> None:
        self.container.stop(timeout=timeout)

    def start(self) -> None:
        self.container.start()

    def wait_for_rest(self, *, timeout: float = 60.0) -> None:
        """Wait until the REST port answers HTTP (any status), or fail with the server's logs."""
        url = f"{self.rest_url}/v1/models/_"
        self._wait(lambda: _http_status(url) is not None, timeout, "REST to answer")

    def wait_for_versions(
        self, model: str, versions: Iterable[int], *, timeout: float = 60.0
    ) -> None:
        """Wait until each of ``versions`` of ``model`` is AVAILABLE in the REST status."""
        wanted = {str(v) for v in versions}

        def ready() -> bool:
            states = model_version_states(self.rest_url, model)
            return all(states.get(v) == "AVAILABLE" for v in wanted)

        self._wait(ready, timeout, f"versions {sorted(wanted)} of {model!r} to be AVAILABLE")

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if ready():
                return
            status = self.status()
            if status not in ("created", "running", "restarting"):
                raise DockerBedError(
                    f"container {self.name} is {status} while waiting for {what}; "
                    f"its logs:\n{self.logs()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise DockerBedError(
                    f"container {self.name}: timed out after {timeout:.0f} s waiting for "
                    f"{what}; its logs:\n{self.logs()[-4000:]}"
                )
            time.sleep(0.2)


def _http_status(url: str) -> int | None:
    try:
        with _LOOPBACK_OPENER.open(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None


def model_version_states(rest_url: str, model: str) -> dict[str, str]:
    """``{version: state}`` from ``GET /v1/models/{model}``; empty while it doesn't answer 200."""
    try:
        with _LOOPBACK_OPENER.open(f"{rest_url}/v1/models/{model}", timeout=2) as response:
            body = json.load(response)
    except (OSError, ValueError):
        return {}
    return {
        str(s.get("version")): str(s.get("state")) for s in body.get("model_version_status", [])
    }


def _is_port_clash(error: docker.errors.APIError) -> bool:
    text = str(error).lower()
    return "port is already allocated" in text or "address already in use" in text


@contextlib.contextmanager
def running_container(
    client: docker.DockerClient,
    models_dir: Path,
    args: Sequence[str] = LAB_ARGS,
    *,
    image: str = SIM_IMAGE,
    environment: Mapping[str, str] | None = None,
    name_prefix: str = "tfs-bed",
    labels: Mapping[str, str] | None = None,
    wait_for_model: str | None = None,
    wait_for_versions: Sequence[int] = (),
    ready_timeout: float = 60.0,
) -> Iterator[TfsContainer]:
    """Run a simulator container for the block, then remove it (also when the block raises).

    Like ``docker run -p 127.0.0.1:R:8501 -p 127.0.0.1:G:8500 --mount type=bind,
    source=MODELS_DIR,target=/models IMAGE ARGS...`` with free ports R and G and a random name.
    Waits for REST to answer, then for ``wait_for_versions`` of ``wait_for_model`` if given.
    ``labels`` are added to the bed's own (e.g. a fleet's label, for discovery by label).
    """
    models_dir = models_dir.resolve()
    container: Container | None = None
    try:
        for attempt in range(5):
            name = f"{name_prefix}-{secrets.token_hex(4)}"
            rest_port, grpc_port = free_port(), free_port()
            try:
                container = client.containers.run(
                    image,
                    list(args),
                    name=name,
                    detach=True,
                    environment=dict(environment or {}),
                    ports={
                        f"{CONTAINER_REST_PORT}/tcp": (LOOPBACK, rest_port),
                        f"{CONTAINER_GRPC_PORT}/tcp": (LOOPBACK, grpc_port),
                    },
                    mounts=[Mount(CONTAINER_MODELS_DIR, str(models_dir), type="bind")],
                    labels={**(labels or {}), LABEL_BED: str(os.getpid())},
                )
                break
            except docker.errors.APIError as error:
                _remove_by_name(client, name)
                if not _is_port_clash(error) or attempt == 4:
                    raise
        assert container is not None
        bed = TfsContainer(container, name, models_dir, rest_port, grpc_port)
        bed.wait_for_rest(timeout=ready_timeout)
        if wait_for_model is not None:
            bed.wait_for_versions(wait_for_model, wait_for_versions, timeout=ready_timeout)
        yield bed
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)


class StartTfsContainer(Protocol):
    """The type of the ``start_tfs_container`` fixture (``tests/docker_bed/conftest.py``).

    ``models_dir=None`` means a fresh copy of the lab's models; ``options`` are those of
    :func:`running_container` (``environment``, ``wait_for_model``, ``image``, ...).
    """

    def __call__(
        self,
        models_dir: Path | None = None,
        args: Sequence[str] = LAB_ARGS,
        **options: Any,
    ) -> TfsContainer: ...


def _remove_by_name(client: docker.DockerClient, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True, v=True)


def bed_containers(client: docker.DockerClient) -> list[Container]:
    """Every container the test bed started (running or not), across processes."""
    found: list[Container] = client.containers.list(all=True, filters={"label": LABEL_BED})
    return found


# --- command line -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reconciler.testing.docker_bed",
        description="Prepare the Docker test bed: engine, base image, tfs-sim image.",
    )
    parser.add_argument(
        "step",
        choices=["engine", "base-image", "image"],
        help="engine: start dockerd if none answers; base-image: also build the debootstrapped "
        f"{BASE_IMAGE} if missing; image: also build {SIM_IMAGE} if its sources changed",
    )
    parser.add_argument("--force", action="store_true", help="rebuild the image even if current")
    options = parser.parse_args(argv)
    started = time.monotonic()
    progress = StageClock(sys.stdout)
    try:
        progress("engine: connecting (dockerd is started if none answers)")
        client = ensure_engine()
        print(f"engine: {client.version().get('Version')} ({time.monotonic() - started:.1f} s)")
        if options.step == "base-image":
            base = ensure_base_image(client, progress=progress)
            print(f"base image: {BASE_IMAGE} {base.short_id} ({time.monotonic() - started:.1f} s)")
        elif options.step == "image":
            sim = ensure_sim_image(client, force=options.force, progress=progress)
            verb = "built" if sim.built else "up to date"
            print(
                f"image: {sim.tag} {sim.id[7:19]} source-hash {sim.source_hash[:12]} {verb} "
                f"({sim.seconds:.1f} s)"
            )
    except DockerBedError as error:
        print(f"docker_bed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
