"""The registry on a key-value store, with Consul's semantics.

Per instance (one transaction at registration):
- ``services/<name>/<id>``: the registration, on the *registration lease*
  (ttl + deregister_critical_after): an instance that stops reporting is removed after that time;
- ``health/<id>``: the latest check, on the *health lease* (ttl): when it runs out the key vanishes
  and the instance reads as critical (Consul's TTL check);
- ``ids/<id>``: the index (name and lease ids), on the registration lease.
A passing/warning report refreshes both leases; a critical report refreshes only the health lease, so a
critical instance is deregistered ``deregister_critical_after`` seconds later, as in Consul.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from backends.errors import BackendError, LeaseNotFound
from backends.kv import Compare, KeyValueStore, Put

from lucid.service_mesh.discovery.keys import DEFAULT_PREFIX, RegistryKeys
from lucid.service_mesh.discovery.model import CHECK_STATUSES, HealthRecord, Registration, parse_duration
from lucid.service_mesh.errors import (
    InvalidServiceConfigError,
    ServiceAlreadyRegisteredError,
    ServiceNotFoundError,
    ServiceRegistrationError,
)

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _lease_ttl(seconds: float) -> int:
    return max(1, math.ceil(seconds))


class AsyncServiceRegistry:
    """Register, deregister and report health of service instances (asyncio)."""

    def __init__(self, kv: KeyValueStore, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.kv = kv
        self.keys = RegistryKeys(prefix)

    async def register_service(
        self,
        service_name: str,
        cluster: str,
        plane: str,
        host: str,
        port: int,
        version: str,
        health_check_path: str | None = "/health",
        health_check_interval: str | float = "30s",
        health_check_timeout: str | float = "10s",
        metadata: dict[str, Any] | None = None,
        *,
        service_id: str | None = None,
        protocol: str = "https",
        ttl: str | float = "30s",
        deregister_critical_after: str | float = "90s",
        initial_status: str = "passing",
    ) -> str:
        """Register one instance; returns its id (a new UUID4 unless given). 1003 if the id exists."""
        if initial_status not in CHECK_STATUSES:
            raise InvalidServiceConfigError(f"initial_status must be one of {CHECK_STATUSES}")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidServiceConfigError("metadata must be a mapping")
        meta = dict(metadata or {})
        tags = meta.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidServiceConfigError("metadata.tags must be a list of strings")
        reg = Registration(
            service_id=service_id or str(uuid.uuid4()),
            service_name=service_name,
            cluster=cluster,
            plane=plane,
            host=host,
            port=port,
            version=version,
            protocol=protocol,
            health_check_path=health_check_path,
            health_check_interval=parse_duration(health_check_interval, "health_check_interval"),
            health_check_timeout=parse_duration(health_check_timeout, "health_check_timeout"),
            ttl=parse_duration(ttl, "ttl"),
            deregister_critical_after=parse_duration(deregister_critical_after, "deregister_critical_after"),
            metadata=meta,
            tags=[f"cluster:{cluster}", f"plane:{plane}", f"version:{version}", *tags],
            registered_at=_now(),
        ).validate()
        sid = reg.service_id
        granted: list[int] = []
        try:
            reg_lease = await self.kv.grant_lease(_lease_ttl(reg.ttl + reg.deregister_critical_after))
            granted.append(reg_lease)
            health_lease = await self.kv.grant_lease(_lease_ttl(reg.ttl))
            granted.append(health_lease)
            index = json.dumps({"name": reg.service_name, "reg_lease": reg_lease, "health_lease": health_lease})
            health = HealthRecord(initial_status, "registered", _now(), "ttl")
            result = await self.kv.txn(
                [Compare.missing(self.keys.index(sid))],
                [
                    Put(self.keys.index(sid), index, lease=reg_lease),
                    Put(self.keys.service(reg.service_name, sid), reg.to_json(), lease=reg_lease),
                    Put(self.keys.health(sid), health.to_json(), lease=health_lease),
                ],
            )
        except BaseException as exc:
            # whatever failed after a grant (the store, a cancellation, a bug), no lease outlives the attempt
            await self._revoke_quietly(granted)
            if isinstance(exc, BackendError):
                raise ServiceRegistrationError(f"registration of {service_name} failed: {exc.message}") from exc
            raise
        if not result.succeeded:
            await self._revoke_quietly(granted)
            raise ServiceAlreadyRegisteredError(f"service id {sid} is already registered")
        log.info("registered %s/%s at %s:%s", reg.service_name, sid, reg.host, reg.port)
        return sid

    async def _revoke_quietly(self, leases: list[int]) -> None:
        for lease in leases:
            try:
                await self.kv.revoke_lease(lease)
            except (BackendError, asyncio.CancelledError):  # expires with its TTL anyway
                pass

    async def _index(self, service_id: str) -> dict[str, Any]:
        if not isinstance(service_id, str) or not service_id or "/" in service_id:
            raise InvalidServiceConfigError(f"invalid service id {service_id!r}")
        kv = await self.kv.get(self.keys.index(service_id))
        if kv is None:
            raise ServiceNotFoundError(f"service id {service_id} is not registered")
        return json.loads(kv.value)

    async def get_registration(self, service_id: str) -> Registration:
        index = await self._index(service_id)
        kv = await self.kv.get(self.keys.service(index["name"], service_id))
        if kv is None:
            raise ServiceNotFoundError(f"service id {service_id} is not registered")
        return Registration.from_json(kv.value)

    async def deregister_service(self, service_id: str) -> bool:
        """Remove an instance (its leases are revoked, which deletes every key). False if unknown."""
        try:
            index = await self._index(service_id)
        except ServiceNotFoundError:
            return False
        try:
            await self.kv.revoke_lease(index["health_lease"])
            await self.kv.revoke_lease(index["reg_lease"])
            # keys written under a later health lease (after a TTL lapse) are deleted explicitly
            await self.kv.delete(self.keys.health(service_id))
            await self.kv.delete(self.keys.service(index["name"], service_id))
            await self.kv.delete(self.keys.index(service_id))
        except BackendError as exc:
            raise ServiceRegistrationError(f"deregistration of {service_id} failed: {exc.message}") from exc
        log.info("deregistered %s", service_id)
        return True

    async def update_health_status(
        self, service_id: str, status: str, output: str = "", *, source: str = "ttl"
    ) -> bool:
        """Record a check result (passing / warning / critical) and refresh the leases it keeps alive."""
        if status not in CHECK_STATUSES:
            raise InvalidServiceConfigError(f"status must be one of {CHECK_STATUSES}, not {status!r}")
        if not isinstance(output, str) or len(output) > 4096:
            raise InvalidServiceConfigError("output must be a string of at most 4096 characters")
        index = await self._index(service_id)
        try:
            if status != "critical":
                try:
                    await self.kv.refresh_lease(index["reg_lease"])
                except LeaseNotFound as exc:
                    raise ServiceNotFoundError(f"service id {service_id} expired; register again") from exc
            try:
                await self.kv.refresh_lease(index["health_lease"])
                lease = index["health_lease"]
            except LeaseNotFound:
                reg = await self.get_registration(service_id)
                lease = await self.kv.grant_lease(_lease_ttl(reg.ttl))
                index = {**index, "health_lease": lease}
                await self.kv.txn(
                    [Compare.version(self.keys.index(service_id), 0, ">")],
                    [Put(self.keys.index(service_id), json.dumps(index), lease=index["reg_lease"])],
                )
            record = HealthRecord(status, output, _now(), source)
            await self.kv.put(self.keys.health(service_id), record.to_json(), lease=lease)
        except BackendError as exc:
            log.warning("health update for %s not recorded: %s", service_id, exc.message)
            return False
        return True

    async def list_registrations(self) -> list[Registration]:
        return [Registration.from_json(kv.value) for kv in await self.kv.get_prefix(self.keys.services())]

    async def update_registration(self, service_id: str, **changes: Any) -> Registration:
        """Change declared fields (e.g. metadata) of a live instance, keeping its leases."""
        index = await self._index(service_id)
        reg = replace(await self.get_registration(service_id), **changes).validate()
        await self.kv.put(self.keys.service(index["name"], service_id), reg.to_json(), lease=index["reg_lease"])
        return reg
