"""Real RabbitMQ launcher: one node on loopback, everything (cookie, mnesia, config, epmd) private to a temp dir.

Runs /usr/lib/rabbitmq/bin/rabbitmq-server directly (the /usr/sbin wrapper switches to the rabbitmq user and
uses /var/lib/rabbitmq). epmd is started by us on its own loopback port as a child we own, because an
``epmd -daemon`` started by Erlang would leave the process group and outlive the node.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from .base import ManagedProcess
from .errors import BinaryNotFoundError, ServerError, ServerStartError
from .ports import free_ports

__all__ = ["RabbitMQServer", "find_rabbitmq_server", "find_epmd"]

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def find_rabbitmq_server() -> str:
    """The rabbitmq-server start script of the Debian package (not the /usr/sbin wrapper)."""
    if os.access(RABBITMQ_SERVER, os.X_OK):
        return str(RABBITMQ_SERVER)
    raise BinaryNotFoundError("RabbitMQ not found at /usr/lib/rabbitmq (apt-get install rabbitmq-server)")


def find_epmd() -> str:
    found = shutil.which("epmd") or shutil.which("epmd", path="/usr/lib/erlang/bin:/usr/bin")
    if not found:
        raise BinaryNotFoundError("epmd not found (apt-get install erlang-base)")
    return found


class RabbitMQServer(ManagedProcess):
    """One RabbitMQ node; guest/guest may connect from loopback (``loopback_users = none``)."""

    name = "rabbitmq"
    poll_interval = 0.05

    def __init__(self, *, startup_timeout: float = 60.0, workdir: str | os.PathLike[str] | None = None,
                 ports: tuple[int, int, int] | None = None) -> None:
        """``ports`` = (AMQP, Erlang distribution, epmd), fixed for a deployment that restarts on its state."""
        super().__init__(startup_timeout=startup_timeout, workdir=workdir)
        self._fixed_ports = ports is not None
        self.port, self.dist_port, self.epmd_port = ports if ports is not None else free_ports(3)
        self._epmd: subprocess.Popen[bytes] | None = None

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def node_name(self) -> str:
        return f"node{self.port}@localhost"

    def _env(self) -> dict[str, str]:
        b = self.workdir
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(b / "home"),
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(b / "mnesia"),
            "RABBITMQ_LOG_BASE": str(b / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(b / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(b / "rabbitmq"),
            "RABBITMQ_CONF_ENV_FILE": str(b / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })
        return env

    def _prepare(self) -> None:
        b = self.workdir
        for sub in ("home", "mnesia", "log"):
            (b / sub).mkdir(exist_ok=True)
        (b / "enabled_plugins").write_text("[].\n")
        (b / "rabbitmq-env.conf").write_text("")
        # An address in the listener matters: a bare port would override NODE_IP_ADDRESS and bind [::].
        (b / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        if self._epmd is None or self._epmd.poll() is not None:
            self._epmd = subprocess.Popen(  # noqa: S603 - fixed argv
                [find_epmd(), "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=self._env(), start_new_session=True,
            )

    def _command(self) -> list[str]:
        return [find_rabbitmq_server()]

    def _reassign_ports(self) -> bool:
        if self._fixed_ports:
            return False
        self.port, self.dist_port, self.epmd_port = free_ports(3)
        shutil.rmtree(self.workdir / "mnesia", ignore_errors=True)  # the node name contains the port
        return True

    def _is_ready(self) -> bool:
        # Each rabbitmq-diagnostics call costs ~1 s, so watch the log instead, then confirm the port.
        if b"Server startup complete" not in self.log_path.read_bytes():
            return False
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    def _after_stop(self) -> None:
        epmd, self._epmd = self._epmd, None
        if epmd is not None and epmd.poll() is None:
            try:
                os.killpg(epmd.pid, signal.SIGTERM)
                epmd.wait(5.0)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(epmd.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                epmd.wait(5.0)
        # Safety net in case Erlang started its own epmd on our port after all.
        try:
            subprocess.run([find_epmd(), "-kill"], env={**os.environ, "ERL_EPMD_PORT": str(self.epmd_port)},
                           capture_output=True, timeout=5, check=False)  # noqa: S603
        except (BinaryNotFoundError, subprocess.TimeoutExpired):
            pass

    def rabbitmqctl(self, *args: str, stdin: str | None = None) -> str:
        """Run rabbitmqctl against this node (same node name, ports and cookie as the server)."""
        ctl = Path(find_rabbitmq_server()).with_name("rabbitmqctl")
        res = subprocess.run([str(ctl), "-n", self.node_name, *args], input=stdin, capture_output=True,  # noqa: S603
                             text=True, env=self._env(), timeout=60, check=False)
        if res.returncode != 0:
            raise ServerError(f"rabbitmqctl {args[0] if args else ''}: {(res.stderr or res.stdout).strip()[-500:]}",
                              error_code="RABBITMQCTL_FAILED")
        return res.stdout

    def add_service_user(self, service: str, password: str) -> str:
        """A broker account for one service of the mesh's topology: it may declare and publish to any
        service's queue (a sender declares the destination's), but read only the exchange and its own
        queue, so it cannot consume another service's messages. Returns its AMQP URL without the password.
        The password goes to rabbitmqctl on stdin, never argv."""
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", service):
            raise ServerError(f"invalid service name {service!r}", error_code="RABBITMQ_INVALID_NAME")
        self.rabbitmqctl("add_user", service, stdin=password + "\n")
        own = re.escape(f"lucid.{service}")
        self.rabbitmqctl("set_permissions", "-p", "/", service, r"^lucid\.", r"^lucid\.",
                         rf"^(lucid\.inter-service|{own})$")
        return f"amqp://{service}@127.0.0.1:{self.port}/"

    def add_observer_user(self, name: str, password: str) -> str:
        """A broker account that may only look: no configure, write or read permission on anything, so it
        cannot create, delete, publish or consume; it can connect and read queue depths (passive declares
        need no permission). The operator console's account. The password goes to rabbitmqctl on stdin."""
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name):
            raise ServerError(f"invalid account name {name!r}", error_code="RABBITMQ_INVALID_NAME")
        self.rabbitmqctl("add_user", name, stdin=password + "\n")
        self.rabbitmqctl("set_permissions", "-p", "/", name, "^$", "^$", "^$")
        return f"amqp://{name}@127.0.0.1:{self.port}/"

    @property
    def epmd_pid(self) -> int | None:
        return self._epmd.pid if self._epmd is not None else None

    def wait_ready(self, timeout: float | None = None) -> None:
        try:
            super().wait_ready(timeout)
        except ServerStartError:
            self._after_stop()
            raise
