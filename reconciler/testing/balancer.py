"""A real load balancer in front of TFS replicas: nginx (Debian's ``nginx``) as a process on
loopback, for tests and the benchmark that send traffic to a fleet the way users do.

::

    with Balancer(["127.0.0.1:8501", "127.0.0.1:9501"]) as balancer:
        requests.post(f"{balancer.url}/v1/models/animals/labels/stable:predict", ...)
        balancer.reconfigure(["127.0.0.1:8501"])  # nginx -s reload, waits until it is in force

Round robin over ``upstreams`` (``host:port`` of each TFS's REST API), HTTP/1.1 with
keep-alive to them. A request that meets a connection error, a timeout, or a 502/503/504
from one upstream is tried on the next (``proxy_next_upstream``, also for POST: predict,
classify and regress change nothing), and that upstream is left alone for ``fail_timeout``
seconds (``max_fails=1``). ``timeout`` bounds connecting to, writing to and reading from one
upstream, so a paused container costs a request ``timeout`` seconds, not forever.

Every answer carries ``X-Balancer-Upstream`` (the upstream(s) nginx tried, ``$upstream_addr``)
so a test sees where it went. ``GET /__balancer/generation`` is answered by nginx itself with
the number of the configuration in force (0 at start, +1 per :meth:`Balancer.reconfigure`,
which returns once that configuration answers and the old workers are gone).

nginx's files (config, pid, logs, temp folders) live in a private temporary folder: nothing is
written outside it, and no system nginx is touched.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

GENERATION_PATH = "/__balancer/generation"
UPSTREAM_HEADER = "X-Balancer-Upstream"
PORT_ATTEMPTS = 5
PORT_IN_USE = "Address already in use"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


class BalancerError(RuntimeError):
    """nginx did not start, reload or stop as expected; the message ends with its error log."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_config(
    upstreams: Sequence[str],
    *,
    port: int,
    generation: int,
    fail_timeout: int,
    timeout: float,
) -> str:
    """The nginx.conf of a balancer (pure; paths are relative to nginx's ``-p`` prefix)."""
    if not upstreams:
        raise ValueError("a balancer needs at least one upstream")
    servers = "\n".join(
        f"        server {u} max_fails=1 fail_timeout={max(fail_timeout, 1)}s;" for u in upstreams
    )
    return f"""\
worker_processes 1;
worker_shutdown_timeout {_ms(timeout * 2)};
pid nginx.pid;
error_log error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    upstream tfs {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location = {GENERATION_PATH} {{
            default_type text/plain;
            return 200 "{generation}";
        }}
        location / {{
            proxy_pass http://tfs;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout {_ms(timeout)};
            proxy_send_timeout {_ms(timeout)};
            proxy_read_timeout {_ms(timeout)};
            proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;
            add_header {UPSTREAM_HEADER} $upstream_addr always;
        }}
    }}
}}
"""


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


class Balancer:
    """nginx on a free loopback port in front of ``upstreams``; a context manager.

    Args:
        upstreams: ``host:port`` of each TFS's REST API.
        fail_timeout: seconds an upstream that failed a request is left out (nginx takes
            whole seconds).
        timeout: seconds to connect to, write to, or read from one upstream.
        startup_timeout: seconds to wait for nginx to answer (start) or to put a new config
            in force (reconfigure).
    """

    def __init__(
        self,
        upstreams: Sequence[str],
        *,
        fail_timeout: int = 1,
        timeout: float = 2.0,
        startup_timeout: float = 10.0,
        nginx: str = "nginx",
    ) -> None:
        self.upstreams = tuple(upstreams)
        self.fail_timeout = fail_timeout
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.nginx = shutil.which(nginx) or shutil.which(nginx, path="/usr/sbin:/sbin") or nginx
        self.port = _free_port()
        self.generation = 0
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> str:
        if self._dir is None:
            return ""
        path = self._dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> Self:
        """Start nginx and wait until it answers. A port found free can be taken before nginx
        binds it; such a start is tried again on a new port, a few times."""
        for attempt in range(PORT_ATTEMPTS):
            try:
                return self._start_once()
            except BalancerError as error:
                if PORT_IN_USE not in str(error) or attempt == PORT_ATTEMPTS - 1:
                    raise
                self.port = _free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> Self:
        if self._process is not None:
            raise BalancerError("the balancer is already started")
        self._dir = Path(tempfile.mkdtemp(prefix="tfs-balancer-"))
        (self._dir / "tmp").mkdir()
        self._write_config()
        self._process = subprocess.Popen(
            [*self._command(), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            self._wait_for_generation()
        except BaseException:
            self.stop()
            raise
        return self

    def reconfigure(self, upstreams: Sequence[str]) -> None:
        """Put ``upstreams`` in force (``nginx -s reload``); returns once nginx answers with
        the new configuration. Requests under way finish on the old one."""
        if self._process is None:
            raise BalancerError("the balancer is not started")
        self.upstreams = tuple(upstreams)
        self.generation += 1
        self._write_config()
        reload = subprocess.run(
            [*self._command(), "-s", "reload"], capture_output=True, text=True, check=False
        )
        if reload.returncode != 0:
            raise BalancerError(f"nginx -s reload failed: {reload.stderr.strip()}")
        self._wait_for_generation()
        self._wait_for_old_workers()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop nginx (SIGQUIT: graceful; SIGKILL after ``timeout``) and remove its folder.
        Safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stderr is not None:
            process.stderr.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _command(self) -> list[str]:
        assert self._dir is not None
        prefix = f"{self._dir}/"
        return [self.nginx, "-p", prefix, "-c", f"{prefix}nginx.conf", "-e", f"{prefix}error.log"]

    def _write_config(self) -> None:
        assert self._dir is not None
        text = render_config(
            self.upstreams,
            port=self.port,
            generation=self.generation,
            fail_timeout=self.fail_timeout,
            timeout=self.timeout,
        )
        (self._dir / "nginx.conf").write_text(text)

    def _wait_for_generation(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        wanted = str(self.generation)
        while self._answered_generation() != wanted:
            process = self._process
            if process is not None and process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise BalancerError(
                    f"nginx exited with code {process.returncode}: {stderr.strip()}\n"
                    f"{self.error_log}"
                )
            if time.monotonic() > deadline:
                raise BalancerError(
                    f"nginx did not answer with configuration {wanted} within "
                    f"{self.startup_timeout}s\n{self.error_log}"
                )
            time.sleep(0.05)

    def _wait_for_old_workers(self) -> None:
        """Until the workers of the old configuration are gone: they keep accepting
        connections until they read nginx's QUIT, so a new connection could still reach one
        after the new configuration first answered."""
        assert self._process is not None
        pid = self._process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children")
        deadline = time.monotonic() + self.startup_timeout
        while len(children.read_text().split()) > 1:
            if time.monotonic() > deadline:
                raise BalancerError(
                    f"nginx's old workers did not exit within {self.startup_timeout}s\n"
                    f"{self.error_log}"
                )
            time.sleep(0.05)

    def _answered_generation(self) -> str | None:
        try:
            with _OPENER.open(f"{self.url}{GENERATION_PATH}", timeout=2) as answer:
                return bytes(answer.read()).decode()
        except OSError:  # not listening yet, or an HTTP error (urllib's are OSErrors)
            return None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
