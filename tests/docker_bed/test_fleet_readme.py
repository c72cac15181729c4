"""The README's fleet walkthrough (section "Fleet"), run as written on a real engine.

The ```sh block after the marker comment is cut into the commands a shell would read one by
one (continuation lines, here-documents and loops kept whole: ``bash -n`` says when a command
is complete) and run by one ``bash``, in order, with a line before and after each that records
its output and exit status. Only the README's fixed names are replaced, so the run cannot clash
with another test or a walkthrough pasted by hand: the folder, the containers' names, their
label, nginx's port (and the image, under ``$TFS_BED_IMAGE``).

Every command must exit 0, except where the comment of a one-line command claims otherwise:
``# exit N`` is checked against its exit status, ``# prints X`` against its output (whitespace
folded). The claims are pinned too (:data:`CLAIMS`), so deleting one does not leave the
walkthrough unchecked. The containers and nginx the run started are removed whatever happens.
nginx's port is found free before the run, Docker's published ports are picked during it: when
Docker took that port first, the run is made again on another one.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest

from reconciler.testing.lab import wait_until

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MARKER = "<!-- the fleet walkthrough: run by tests/docker_bed/test_fleet_readme.py -->"
NGINX = "/usr/sbin/nginx"
TOOLS = ("docker", "curl", "jq", NGINX)

# The README's fixed names, each replaced for the run.
FOLDER = "/tmp/fleet-demo"
NAMES = "tfs-demo-"
LABEL = "tfs-reconciler.fleet=demo"
BALANCER = "127.0.0.1:8080"
IMAGE = "tfs-sim:local"

#: What the walkthrough claims, in order: (command, exit status, output).
CLAIMS: tuple[tuple[str, int | None, str | None], ...] = (
    ("stable; stable; stable", None, "2 2 2"),
    ("tfs-reconciler diff", 2, None),
    ("tfs-reconciler apply", 0, None),
    ("stable; stable; stable", None, "3 3 3"),
    ("tfs-reconciler status", 0, None),
    ("tfs-reconciler rollback", 0, None),
    ("stable; stable; stable", None, "2 2 2"),
    ("tfs-reconciler status", 2, None),
)
_CLAIM = re.compile(r"\s#\s+(?P<kind>exit|prints)\s+(?P<value>[^:]+?)\s*(?::.*)?$")
_BEGIN = "@@walkthrough-begin"
_END = "@@walkthrough-end"
RUN_TIMEOUT = 300.0
PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class Step:
    """One command of the walkthrough and what its comment claims."""

    text: str
    exit: int | None
    prints: str | None

    @property
    def command(self) -> str:
        """The command without its claim (the first line only, for a multi-line command)."""
        first = self.text.splitlines()[0]
        claim = _CLAIM.search(first)
        return (first[: claim.start()] if claim else first).strip()


@dataclass(frozen=True)
class Ran:
    step: Step
    status: int
    output: str

    def report(self) -> str:
        return f"$ {self.step.text}\n(exit {self.status})\n{self.output[-3000:]}"


def walkthrough() -> str:
    """The ```sh block right after the marker comment in the README."""
    text = README.read_text()
    assert text.count(MARKER) == 1, f"the README must hold the marker once: {MARKER}"
    after = text.split(MARKER, 1)[1]
    found = re.match(r"\s*```sh\n(.*?)```", after, re.DOTALL)
    assert found is not None, "no ```sh block right after the walkthrough's marker"
    return found.group(1)


def complete(text: str) -> bool:
    """Whether bash would run ``text`` as it is: no open quote, loop, here-document or
    continuation line."""
    if text.rstrip("\n").endswith("\\"):
        return False
    check = subprocess.run(
        ["bash", "-n", "-c", text], capture_output=True, text=True, timeout=30, check=False
    )
    return check.returncode == 0 and not check.stderr  # an open here-document only warns


def steps(block: str) -> list[Step]:
    """The block's commands, as bash reads them, with their claims."""
    found: list[Step] = []
    current = ""
    for line in block.splitlines(keepends=True):
        current += line
        if current.strip() and complete(current):
            found.append(step_of(current.rstrip("\n")))
            current = ""
    assert not current.strip(), f"the block ends inside a command:\n{current}"
    return found


def step_of(text: str) -> Step:
    claim = _CLAIM.search(text.splitlines()[0]) if "\n" not in text else None
    if claim is None:
        return Step(text, None, None)
    if claim["kind"] == "exit":
        return Step(text, int(claim["value"]), None)
    return Step(text, None, " ".join(claim["value"].split()))


def substitute(block: str, replacements: Mapping[str, str]) -> str:
    for fixed, unique in replacements.items():
        assert fixed in block, f"the walkthrough no longer uses {fixed!r}: update this test"
        block = block.replace(fixed, unique)
    return block


def script(commands: Sequence[Step]) -> str:
    """The commands, in one shell, each between two lines that mark its output and status."""
    parts = [f"echo {_BEGIN} {i}\n{s.text}\necho {_END} {i} $?\n" for i, s in enumerate(commands)]
    return "".join(parts)


def run(commands: Sequence[Step], cwd: Path, log: Path) -> list[Ran]:
    """Run the commands in one ``bash`` from ``cwd``, as pasted in a shell with the
    virtualenv's ``bin/`` on ``PATH``; what each printed and its exit status."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with log.open("w") as out:  # a file, not a pipe: nothing waits for nginx to close it
        try:
            subprocess.run(
                ["bash", "-c", script(commands)],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=RUN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"the walkthrough took over {RUN_TIMEOUT} s:\n{log.read_text()[-6000:]}")
    return results(commands, log.read_text())


def results(commands: Sequence[Step], output: str) -> list[Ran]:
    ran: list[Ran] = []
    for index, step in enumerate(commands):
        found = re.search(
            rf"^{_BEGIN} {index}\n(.*?)^{_END} {index} (\d+)\n", output, re.DOTALL | re.MULTILINE
        )
        assert found is not None, f"command {index} did not finish:\n{output[-6000:]}"
        ran.append(Ran(step, int(found.group(2)), found.group(1)))
    return ran


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_leftovers(client: docker.DockerClient, label: str, folder: Path) -> list[str]:
    """Remove the containers carrying ``label`` and stop the nginx whose pid file is in
    ``folder``; the names of what was still there."""
    left: list[str] = []
    for container in client.containers.list(all=True, filters={"label": label}):
        left.append(str(container.name))
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    pid_file = folder / "nginx" / "nginx.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        with contextlib.suppress(OSError):  # gone, or a pid now someone else's
            if str(folder) in Path(f"/proc/{pid}/cmdline").read_text():
                left.append(f"nginx {pid}")
                os.kill(pid, signal.SIGTERM)
    return left


@contextlib.contextmanager
def cleaned_up(client: docker.DockerClient, label: str, folder: Path) -> Iterator[None]:
    try:
        yield
    finally:
        stop_leftovers(client, label, folder)


def test_the_walkthrough_claims_what_this_test_checks() -> None:
    claims = [
        (s.command, s.exit, s.prints)
        for s in steps(walkthrough())
        if s.exit is not None or s.prints is not None
    ]
    assert claims == list(CLAIMS)


def require_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        message = f"the walkthrough needs {', '.join(missing)} (apt-get install nginx curl jq)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_the_readme_fleet_walkthrough_runs_as_written(
    docker_client: docker.DockerClient, tfs_image: str, tmp_path: Path
) -> None:
    require_tools()
    unique = f"walk-{secrets.token_hex(4)}"
    label = f"tfs-reconciler.fleet={unique}"
    folder = tmp_path / "fleet-demo"
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        block = substitute(
            walkthrough(),
            {
                FOLDER: str(folder),
                NAMES: f"tfs-{unique}-",
                LABEL: label,
                BALANCER: f"127.0.0.1:{port}",
                IMAGE: tfs_image,
            },
        )
        commands = steps(block)
        with cleaned_up(docker_client, label, folder):
            started = time.monotonic()
            ran = run(commands, REPO, tmp_path / f"walkthrough-{attempt}.log")
            seconds = time.monotonic() - started
            nginx = next(r for r in ran if r.step.text.startswith(NGINX))
            if "Address already in use" in nginx.output and attempt < PORT_ATTEMPTS - 1:
                continue  # another process took the free port first: a new one
            check(ran)
            check_cleanup(docker_client, label, folder, port)
        print(f"the walkthrough ran in {seconds:.1f} s")
        return


def check(ran: Sequence[Ran]) -> None:
    for result in ran:
        step = result.step
        wanted = 0 if step.exit is None else step.exit
        assert result.status == wanted, f"exit {result.status}, not {wanted}:\n{result.report()}"
        if step.prints is not None:
            assert " ".join(result.output.split()) == step.prints, result.report()
    (in_sync,) = [r for r in ran if r.step.command == "tfs-reconciler status" and r.status == 0]
    assert "3 of 3 in sync" in in_sync.output, in_sync.report()


def check_cleanup(client: docker.DockerClient, label: str, folder: Path, port: int) -> None:
    """The walkthrough found three containers by the label, put nginx over their three REST
    ports, and its last line removed them all."""
    servers = re.findall(
        r"server (127\.0\.0\.1:\d+);", (folder / "nginx" / "nginx.conf").read_text()
    )
    assert len(set(servers)) == 3, servers
    assert client.containers.list(all=True, filters={"label": label}) == []
    wait_until(lambda: not answers(port), timeout=30, what="nginx stopped by the last line")
