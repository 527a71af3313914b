"""The seeds' constructor arguments turned into backend URLs, in one place.

The seeds' tests build ``IFCoordinator(etcd_host=..., etcd_port=...)``, ``ServiceRegistry(consul_host=...)``
and ``MessageQueueClient(rabbitmq_host=...)``; everything else in the platform names an engine by URL
(docs/ARCHITECTURE.md). These functions are the whole translation, so the classes keep the seeds'
arguments without each knowing how a URL is spelled.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

__all__ = ["etcd_url", "consul_kv_url", "amqp_url"]


def etcd_url(host: str, port: int = 2379, username: str | None = None, password: str | None = None,
             ca: str | None = None, cert: str | None = None, key: str | None = None) -> str:
    """``etcd://`` (or ``etcds://`` with a CA) with credentials and TLS files as query parameters."""
    query: dict[str, str] = {}
    if username is not None:
        query["username"] = username
    if password is not None:
        query["password"] = password
    if ca:
        query.update({"ca": ca, **({"cert": cert, "key": key} if cert and key else {})})
    scheme = "etcds" if ca else "etcd"
    return f"{scheme}://{quote(host)}:{int(port)}" + (f"?{urlencode(query)}" if query else "")


def consul_kv_url(host: str, port: int | None = None) -> str:
    """The seeds' ``consul_host``/``consul_port`` name the registry's server. Consul cannot run here; the
    registry keeps Consul's semantics on etcd, so they name the etcd endpoint that holds it."""
    return etcd_url(host, port or 2379)


def amqp_url(host: str, port: int = 5672, user: str = "guest", password: str | None = None, vhost: str = "/",
             ssl: bool = False) -> str:
    scheme = "amqps" if ssl else "amqp"
    creds = quote(user, safe="") + (":" + quote(password, safe="") if password is not None else "")
    return f"{scheme}://{creds}@{host}:{int(port)}/{quote(vhost, safe='')}"
