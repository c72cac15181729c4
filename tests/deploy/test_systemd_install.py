"""The README's systemd steps, run as written by a newcomer on a fresh machine.

The machine is a container with systemd as PID 1 (``docker_bed.systemd_container``) and an
empty ``/srv``, holding a git checkout of this work tree. The README's shell block runs there
line by line, as root, from the checkout, except its ``docker run`` line (no engine inside):
that one is checked for the mount, ports and flags the environment file expects, then run
beside it with ``tfs-sim:local`` in TFS's place, sharing the machine's network instead of
publishing ports (so ``127.0.0.1:8500``/``8501`` inside the machine are TFS, as on a host).
``pip install .`` installs from wheels built here (``PIP_NO_INDEX``, ``PIP_FIND_LINKS``).
Then a promotion is committed to the clone, and TFS must serve it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from configparser import ConfigParser
from pathlib import Path

import docker
import docker.errors
import pytest
from docker.models.containers import Container
from docker.types import Mount

from reconciler.testing import docker_bed

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
ENV_FILE = REPO / "deploy" / "tfs-reconciler.env"
IMAGE = "tensorflow/serving"


def readme_systemd_commands() -> list[str]:
    """The commands of the shell block in the README's systemd section, continuations joined."""
    text = README.read_text()
    section = text[text.index("### systemd\n") :]
    section = section[: section.index("\n#", len("### systemd\n"))]
    found = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert found is not None, "no ```sh block in the README's systemd section"
    commands: list[str] = []
    current = ""
    for line in found.group(1).splitlines():
        current += line + "\n"
        if not line.endswith("\\"):
            commands.append(current)
            current = ""
    return commands


def env_file() -> dict[str, str]:
    parser = ConfigParser(delimiters=("=",), comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string("[env]\n" + ENV_FILE.read_text())
    return dict(parser["env"])


def split_docker_run(commands: list[str]) -> tuple[list[str], list[str], list[str]]:
    """The commands before the ``docker run`` line, its words, and the commands after it."""
    runs = [i for i, c in enumerate(commands) if c.lstrip().startswith("docker run ")]
    assert len(runs) == 1, "the systemd steps must say how TFS runs: one `docker run` line"
    index = runs[0]
    words = shlex.split(commands[index].replace("\\\n", " "), comments=True)
    return commands[:index], words, commands[index + 1 :]


def docker_run_options(words: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``docker run`` options (name -> values) and the server's arguments after the image."""
    options: dict[str, list[str]] = {}
    position = 2
    while words[position] != IMAGE:
        name = words[position]
        if name == "-d":
            options[name] = []
            position += 1
        else:
            options.setdefault(name, []).append(words[position + 1])
            position += 2
    return options, words[position + 1 :]


def test_the_tfs_line_serves_the_layout_the_environment_file_expects() -> None:
    _, words, _ = split_docker_run(readme_systemd_commands())
    options, args = docker_run_options(words)
    env = env_file()
    assert tuple(args) == docker_bed.LAB_ARGS
    models_dir = env["TFS_RECONCILER_MODELS_DIR"]
    serving_root = env["TFS_RECONCILER_SERVING_ROOT"]
    assert options["--mount"] == [f"type=bind,source={models_dir},target={serving_root}"]
    assert f"--model_config_file={serving_root}/models.config" in args
    assert env["TFS_RECONCILER_CONFIG"] == f"{models_dir}/models.config"
    rest = env["TFS_RECONCILER_REST_URL"].removeprefix("http://")
    grpc = env["TFS_RECONCILER_GRPC_TARGET"]
    assert sorted(options["-p"]) == sorted([f"{grpc}:8500", f"{rest}:8501"])
    assert all(p.startswith("127.0.0.1:") for p in options["-p"])


def test_the_steps_create_every_folder_they_use_before_using_it() -> None:
    before, _, after = split_docker_run(readme_systemd_commands())
    script = "".join(before + after)
    made = script.index("mkdir -p /srv/tfs/models /srv/tfs/desired")
    assert made < script.index("chown -R tfs-reconciler: /srv/tfs/models")
    assert made < script.index("/srv/tfs/desired")


def checkout_copy(destination: Path) -> Path:
    """The work tree's files (tracked and new, as they are now), to become a fresh checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def run_as_root(machine: Container, commands: list[str], **env: str) -> str:
    script = "set -euxo pipefail\ncd /src\n" + "".join(commands)
    status, output = docker_bed.exec_text(
        machine, ["bash", "-c", script], environment=env, workdir="/src"
    )
    assert status == 0, f"exit {status}:\n{output[-6000:]}\n{journal(machine)}"
    return output


def journal(machine: Container) -> str:
    _, text = docker_bed.exec_text(
        machine, ["journalctl", "-u", "tfs-reconciler", "--no-pager", "-n", "60"]
    )
    return "journal of tfs-reconciler:\n" + text


@contextlib.contextmanager
def tfs_beside(
    client: docker.DockerClient, machine: Container, words: list[str], srv: Path
) -> Iterator[Container]:
    """The README's ``docker run`` line on this engine: tfs-sim:local in TFS's place, the
    mount's /srv/ on the host folder the machine's /srv is, and the machine's network."""
    options, args = docker_run_options(words)
    fields = dict(item.split("=", 1) for item in options["--mount"][0].split(","))
    assert fields["type"] == "bind"
    source = srv / Path(fields["source"]).relative_to("/srv")
    container: Container = client.containers.run(
        docker_bed.ensure_sim_image(client).tag,
        args,
        name=f"tfs-bed-{options['--name'][0]}-{secrets.token_hex(4)}",
        detach=True,
        network_mode=f"container:{machine.id}",
        mounts=[Mount(fields["target"], str(source), type="bind")],
        labels={docker_bed.LABEL_BED: str(os.getpid())},
    )
    try:
        yield container
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)


def wait_for_stable(machine: Container, version: str, timeout: float = 90.0) -> None:
    probe = (
        "import json, urllib.request\n"
        "url = 'http://127.0.0.1:8501/v1/models/animals/labels/stable/metadata'\n"
        "print(json.load(urllib.request.urlopen(url, timeout=5))['model_spec']['version'])\n"
    )
    deadline = time.monotonic() + timeout
    answer = ""
    while time.monotonic() < deadline:
        status, answer = docker_bed.exec_text(machine, ["python3", "-c", probe])
        if status == 0 and answer.strip() == version:
            return
        time.sleep(0.5)
    raise AssertionError(f"stable is not {version}: {answer[-800:]}\n{journal(machine)}")


def test_the_readme_steps_install_a_running_service_that_follows_commits(
    tmp_path: Path,
) -> None:
    try:
        client = docker_bed.ensure_engine()
    except docker_bed.EngineUnavailableError as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI and no Docker engine: {error}")
        pytest.skip(f"no Docker engine: {error}")
    docker_bed.ensure_systemd_image(client)
    before, docker_run, after = split_docker_run(readme_systemd_commands())
    source = checkout_copy(tmp_path / "src")
    wheels = tmp_path / "wheels"
    docker_bed.build_wheels(source, wheels, "setuptools>=68", "wheel")
    srv = tmp_path / "srv"
    srv.mkdir()
    mounts = [
        Mount("/src", str(source), type="bind"),
        Mount("/wheels", str(wheels), type="bind", read_only=True),
        Mount("/srv", str(srv), type="bind"),
    ]
    with docker_bed.systemd_container(client, mounts) as machine:
        # A fresh checkout: the work tree as it is, committed.
        run_as_root(
            machine,
            [
                "git init -q && git add -A\n",
                "git -c user.name=t -c user.email=t@example.invalid commit -qm checkout\n",
            ],
        )
        assert not (srv / "tfs").exists()
        run_as_root(machine, before)
        with tfs_beside(client, machine, docker_run, srv):
            run_as_root(machine, after, PIP_NO_INDEX="1", PIP_FIND_LINKS="/wheels")
            _, state = docker_bed.exec_text(machine, ["systemctl", "is-active", "tfs-reconciler"])
            assert state.strip() == "active", journal(machine)
            wait_for_stable(machine, "2")
            run_as_root(
                machine,
                [
                    "cd /srv/tfs/desired\n",
                    "sed -i 's/stable: 2/stable: 3/' desired_state/animals.yaml\n",
                    "git -c user.name=t -c user.email=t@example.invalid commit -qam promote\n",
                ],
            )
            wait_for_stable(machine, "3")
            _, state = docker_bed.exec_text(machine, ["systemctl", "is-active", "tfs-reconciler"])
            assert state.strip() == "active", journal(machine)
