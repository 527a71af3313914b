"""Choose a key-value implementation from a URL.

- `memory://` a private in-process store; `memory://NAME` one shared by every handle of that name
- `sqlite:///relative.db`, `sqlite:////abs/path.db` the embedded store persisted to SQLite
  (slashes as in SQLAlchemy URLs)
- `etcd://host:port[,host:port...]` etcd; `etcds://...` with TLS. Query: `username`, `password_file` (a file
  holding the password; or env INFRAFABRIC_ETCD_PASSWORD), `ca`, `cert`, `key` (file paths), `timeout`
  (seconds). A `password` in the URL works but shows wherever the URL does: prefer the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from backends.errors import InvalidBackendURL
from backends.url_scheme import split_scheme
from backends.kv.base import KeyValueStore
from backends.kv.memory import MemoryKV, _MemoryCore, shared_core


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def open_kv(url: str = "memory://") -> KeyValueStore:
    """An unconnected store for url (methods connect lazily; `async with` closes it)."""
    scheme, rest = split_scheme(url)
    if scheme == "memory":
        name = rest.strip("/")
        return MemoryKV(shared_core(f"memory:{name}") if name else _MemoryCore(), url)
    if scheme == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        if not path:
            raise InvalidBackendURL("sqlite URL needs a file path: sqlite:///file.db")
        resolved = str(Path(path).resolve())
        Path(resolved).parent.mkdir(parents=True, exist_ok=True)
        return MemoryKV(shared_core(f"sqlite:{resolved}", resolved), url)
    if scheme in ("etcd", "etcds"):
        from backends.kv.etcd import EtcdKV

        parts = urlsplit(url)
        hosts = [h for h in parts.netloc.rsplit("@", 1)[-1].split(",") if h]
        if not hosts:
            raise InvalidBackendURL(f"etcd URL names no endpoint: {url!r}")
        for host in hosts:
            name, colon, port = host.rpartition(":")
            if not colon or not port.isdigit() or not name:
                raise InvalidBackendURL(f"etcd endpoint must be host:port, got {host!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        username = unquote(parts.username) if parts.username else query.get("username")
        password = unquote(parts.password) if parts.password else query.get("password")
        if username and password is None and query.get("password_file"):
            try:
                password = Path(query["password_file"]).read_text().strip()
            except OSError as exc:
                raise InvalidBackendURL(f"cannot read the etcd password file: {exc}") from exc
        if username and password is None:
            password = os.environ.get("INFRAFABRIC_ETCD_PASSWORD")
        tls = scheme == "etcds"
        if tls and not query.get("ca"):
            raise InvalidBackendURL("etcds:// needs ca=<path to the CA certificate>")
        try:
            timeout = float(query.get("timeout", "5"))
        except ValueError as exc:
            raise InvalidBackendURL(f"bad timeout in {url!r}") from exc
        return EtcdKV(
            hosts,
            username=username,
            password=password,
            ca_cert=_read(query.get("ca")) if tls else None,
            cert_chain=_read(query.get("cert")) if tls else None,
            cert_key=_read(query.get("key")) if tls else None,
            timeout=timeout,
            url=url,
        )
    raise InvalidBackendURL(f"unknown key-value backend {scheme!r} in {url!r}")
