"""The stack's state directory: one place for every engine's data, key, credential, log and port.

``up`` again on the same directory resumes: ports chosen on the first ``up`` are kept in ``ports.json``,
keys and certificates are created once, engines find their data where they left it.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from backends.servers.ports import free_port, port_is_free
from stack.topology import TopologyError

__all__ = ["StackState"]


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only (created 0600, replaced atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class StackState:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        # root and engines/ may be traversed (not listed) by others: PostgreSQL runs as its own user when we
        # are root; everything holding a secret is 0700 below them
        os.chmod(self.root, 0o711)
        for sub in ("engines", "logs", "pki", "credentials", "secrets", "data"):
            (self.root / sub).mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.root / "engines", 0o711)
        self._ports_file = self.root / "ports.json"
        self._ports: dict[str, int] = json.loads(self._ports_file.read_text()) if self._ports_file.exists() else {}

    # -- paths ------------------------------------------------------------------------------------
    def engine_dir(self, name: str) -> Path:
        path = self.root / "engines" / name
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def log(self, service: str) -> Path:
        return self.root / "logs" / f"{service}.log"

    @property
    def mesh_ca(self) -> Path:
        return self.root / "pki" / "mesh"

    @property
    def jwks(self) -> Path:
        return self.root / "pki" / "jwks.json"

    def jwt_key(self, service: str) -> Path:
        return self.root / "pki" / "jwt" / f"{service}.pem"

    @property
    def authority(self) -> Path:
        return self.root / "pki" / "authority"

    def credential(self, name: str) -> Path:
        return self.root / "credentials" / f"{name}.cred"

    def secret_file(self, name: str) -> Path:
        return self.root / "secrets" / name

    @property
    def status_file(self) -> Path:
        return self.root / "status.json"

    @property
    def pid_file(self) -> Path:
        return self.root / "supervisor.pid"

    @property
    def supervisor_log(self) -> Path:
        return self.root / "supervisor.log"

    # -- ports ------------------------------------------------------------------------------------
    def port(self, key: str, wanted: int = 0) -> int:
        """The port for ``key``: the topology's when it fixes one, else the one chosen on the first ``up``."""
        taken = {port for other, port in self._ports.items() if other != key}
        if wanted:
            self._ports[key] = wanted
        elif key not in self._ports or self._ports[key] in taken or not port_is_free(self._ports[key]):
            # first up, or another program took the kept port meanwhile. A port chosen for a service that
            # has not started yet is still free to the OS, which may offer it again: never hand it out twice.
            port = free_port()
            while port in taken:
                port = free_port()
            self._ports[key] = port
        self._save_ports()
        return self._ports[key]

    def _save_ports(self) -> None:
        tmp = self._ports_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._ports, indent=1, sort_keys=True))
        os.replace(tmp, self._ports_file)

    def ports(self) -> dict[str, int]:
        return dict(self._ports)

    # -- secrets ----------------------------------------------------------------------------------
    def secret(self, name: str, nbytes: int = 32) -> str:
        """A random secret made once and kept (0600); its value is never printed or logged."""
        path = self.secret_file(name)
        if not path.exists():
            _write_private(path, secrets.token_urlsafe(nbytes).encode())
        if path.stat().st_mode & 0o077:
            raise TopologyError(f"{path} is readable by group or others; chmod 600 it")
        return path.read_text().strip()

    def write_secret(self, name: str, value: str) -> Path:
        path = self.secret_file(name)
        _write_private(path, value.encode())
        return path
