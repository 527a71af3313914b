"""Real PostgreSQL launcher: a throw-away cluster (initdb) on a free loopback port, tuned for tests.

initdb refuses to run as root, so as root the data dir is chowned to the ``postgres`` user and initdb and
postgres run as that user (Popen user=/group=); as any other user they run directly.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

from .base import ManagedProcess
from .errors import BinaryNotFoundError, ServerError, ServerStartError
from .ports import free_port

__all__ = ["PostgresServer", "find_postgres_bindir"]

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)


def find_postgres_bindir() -> Path:
    """Highest ``/usr/lib/postgresql/<version>/bin`` holding initdb and postgres."""
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin")
                  if (p / "initdb").exists() and (p / "postgres").exists()]
    if not candidates:
        raise BinaryNotFoundError("PostgreSQL not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    return max(candidates, key=_version_key)


class PostgresServer(ManagedProcess):
    """One PostgreSQL server on 127.0.0.1 (fsync off: tests only).

    Default: trust auth for user ``postgres``. ``secured=True`` is the deployed form: every TCP login needs
    a SCRAM password, the superuser has none (it administers over the server's own Unix socket only), and
    each service gets a role of its own owning one database nobody else may connect to
    (``create_service_database``)."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM ("smart") waits for every client to leave

    def __init__(self, *, startup_timeout: float = 30.0, secured: bool = False,
                 workdir: str | os.PathLike[str] | None = None, port: int | None = None) -> None:
        super().__init__(startup_timeout=startup_timeout, workdir=workdir)
        self.secured = secured
        self.bindir = find_postgres_bindir()
        self._fixed_port = port is not None
        self.port: int = port if port is not None else free_port()
        self._as_postgres = os.geteuid() == 0

    # ------------------------------------------------------------ addresses
    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def dsn(self, db: str = "postgres") -> str:
        """libpq/asyncpg DSN."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def sqlalchemy_url(self, db: str = "postgres") -> str:
        """SQLAlchemy async URL (asyncpg driver)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{db}"

    # ------------------------------------------------------------ ManagedProcess hooks
    def _user_kwargs(self) -> dict[str, Any]:
        return {"user": "postgres", "group": "postgres"} if self._as_postgres else {}

    def _popen_kwargs(self) -> dict[str, Any]:
        return self._user_kwargs()

    def _prepare(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return  # a restart of the same server reuses its cluster
        if self._as_postgres:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise ServerStartError("running as root needs the 'postgres' system user for initdb") from exc
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.workdir, 0o700)
        res = subprocess.run(  # noqa: S603 - fixed argv
            [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
             *(["--auth-host=scram-sha-256", "--auth-local=trust"] if self.secured else ["--auth=trust"]),
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            capture_output=True, text=True, check=False, timeout=120, **self._user_kwargs(),
        )
        if res.returncode != 0:
            raise ServerStartError(f"initdb failed ({res.returncode}): {(res.stderr or res.stdout)[-2000:]}")

    def _command(self) -> list[str]:
        return [
            str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-k", str(self.workdir),
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]

    def _reassign_ports(self) -> bool:
        if self._fixed_port:
            return False
        self.port = free_port()
        return True

    def _postmaster_says_ready(self) -> bool:
        """The 8th line of postmaster.pid turns to "ready" once the postmaster accepts connections.

        Checked first because it is cheap and, unlike a TCP probe, cannot be fooled by another process that
        holds our port (pg_isready would then wait its 2 s minimum connect timeout).
        """
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready" and lines[0].strip() == str(self.pid)

    def _is_ready(self) -> bool:
        if not self._postmaster_says_ready():
            return False
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            pass
        res = subprocess.run(  # noqa: S603
            [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-t", "1"],
            capture_output=True, check=False, timeout=5,
        )
        return res.returncode == 0

    # ------------------------------------------------------------ databases
    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run SQL through psql as the superuser (sync, so fixtures need no event loop). The SQL goes in on
        stdin, never argv; a secured server is administered over its Unix socket only."""
        host = str(self.workdir) if self.secured else "127.0.0.1"
        res = subprocess.run(  # noqa: S603
            [str(self.bindir / "psql"), "-h", host, "-p", str(self.port), "-U", "postgres", "-d", db,
             "-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-f", "-"],
            input=sql, capture_output=True, text=True, check=False, timeout=30,
        )
        if res.returncode != 0:
            raise ServerError(f"psql failed: {res.stderr.strip()}", error_code="POSTGRES_SQL_FAILED")
        return res.stdout

    def create_service_database(self, service: str, password: str) -> str:
        """A login role for one service, owning a database of the same name that no other role may connect
        to; returns its SQLAlchemy URL *without* the password (give it as PGPASSWORD or a .pgpass file)."""
        if not _DB_NAME.match(service):
            raise ServerError(f"invalid service name {service!r}: use [a-z_][a-z0-9_]*",
                              error_code="POSTGRES_INVALID_NAME")
        literal = "'" + password.replace("'", "''") + "'"
        self.psql(f'CREATE ROLE "{service}" LOGIN PASSWORD {literal};')
        self.psql(f'CREATE DATABASE "{service}" OWNER "{service}";')
        self.psql(f'REVOKE ALL ON DATABASE "{service}" FROM PUBLIC;')
        return f"postgresql+asyncpg://{service}@127.0.0.1:{self.port}/{service}"

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh empty database (unique name when None) and return its SQLAlchemy URL."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not _DB_NAME.match(name):
            raise ServerError(f"invalid database name {name!r}: use [a-z_][a-z0-9_]*",
                              error_code="POSTGRES_INVALID_NAME")
        self.psql(f'CREATE DATABASE "{name}"')
        return self.sqlalchemy_url(name)
