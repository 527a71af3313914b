"""ServiceRegistry (seed API) on the embedded store and on a real etcd: one contract, both backends."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from lucid.service_mesh.discovery.dns_resolver import ServiceDiscoveryClient
from lucid.service_mesh.discovery.service_registry import ServiceRegistrationError, ServiceRegistry
from lucid.service_mesh.errors import InvalidServiceConfigError, ServiceAlreadyRegisteredError, ServiceNotFoundError

GW = dict(service_name="api-gateway", cluster="api-gateway", plane="ops", host="api-gateway.lucid.internal",
          port=8080, version="1.0.0")


@pytest.fixture
def registry(mesh_kv_url: str, mesh_prefix: str) -> Iterator[ServiceRegistry]:
    reg = ServiceRegistry(mesh_kv_url, prefix=mesh_prefix)
    yield reg
    reg.close()


@pytest.fixture
def discovery(mesh_kv_url: str, mesh_prefix: str) -> Iterator[ServiceDiscoveryClient]:
    client = ServiceDiscoveryClient(mesh_kv_url, prefix=mesh_prefix, cache=False)
    yield client
    client.close()


def _dead_etcd_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"etcd://127.0.0.1:{port}?timeout=0.5"


def test_register_service_success(registry: ServiceRegistry, discovery: ServiceDiscoveryClient) -> None:
    service_id = registry.register_service(**GW)
    assert service_id is not None
    assert uuid.UUID(service_id).version == 4
    [found] = discovery.discover_services()
    assert found["serviceId"] == service_id and found["serviceName"] == "api-gateway"
    assert found["endpoint"] == {"host": "api-gateway.lucid.internal", "port": 8080, "protocol": "https"}
    assert found["status"] == "healthy"


def test_register_service_with_metadata(registry: ServiceRegistry) -> None:
    metadata = {"description": "API Gateway Service", "tags": ["public", "api"]}
    service_id = registry.register_service(**GW, metadata=metadata)
    reg = registry.get_registration(service_id)
    assert reg.metadata == metadata
    assert {"cluster:api-gateway", "plane:ops", "version:1.0.0", "public", "api"} <= set(reg.tags)


def test_register_service_failure_backend_unreachable() -> None:
    registry = ServiceRegistry(_dead_etcd_url())
    try:
        with pytest.raises(ServiceRegistrationError) as exc_info:
            registry.register_service(**GW)
        assert exc_info.value.error_code == "LUCID_ERR_1001"
        assert "Connection refused" in exc_info.value.message
    finally:
        registry.close()


def test_duplicate_id_is_1003_and_keeps_the_first(registry: ServiceRegistry) -> None:
    sid = registry.register_service(**GW, service_id="gw-01")
    with pytest.raises(ServiceAlreadyRegisteredError) as exc_info:
        registry.register_service(**{**GW, "host": "other"}, service_id="gw-01")
    assert exc_info.value.error_code == "LUCID_ERR_1003"
    assert registry.get_registration(sid).host == "api-gateway.lucid.internal"


@pytest.mark.parametrize(
    "change",
    [
        {"service_name": "Bad_Name"},
        {"service_name": "ab"},
        {"plane": "moon"},
        {"port": 0},
        {"port": 70000},
        {"version": "one"},
        {"host": "bad host/x"},
        {"health_check_path": "health"},
    ],
)
def test_invalid_config_is_1004_and_stores_nothing(registry: ServiceRegistry, change: dict,
                                                   discovery: ServiceDiscoveryClient) -> None:
    with pytest.raises(InvalidServiceConfigError) as exc_info:
        registry.register_service(**{**GW, **change})
    assert exc_info.value.error_code == "LUCID_ERR_1004"
    assert discovery.discover_services(status=None) == []


def test_deregister_service_success(registry: ServiceRegistry, discovery: ServiceDiscoveryClient) -> None:
    service_id = registry.register_service(**GW)
    assert registry.deregister_service(service_id) is True
    assert discovery.discover_services(status=None) == []
    assert registry.deregister_service(service_id) is False
    with pytest.raises(ServiceNotFoundError):
        registry.get_registration(service_id)


def test_update_health_status_passing_warning_critical(registry: ServiceRegistry,
                                                       discovery: ServiceDiscoveryClient) -> None:
    service_id = registry.register_service(**GW)
    assert registry.update_health_status(service_id, status="warning", output="slow") is True
    assert discovery.discover_services(status=None)[0]["status"] == "degraded"
    assert discovery.discover_services() == []  # default filter: passing only
    assert registry.update_health_status(service_id, status="critical", output="Service is down") is True
    assert discovery.discover_services(status="critical")[0]["status"] == "unhealthy"
    assert registry.update_health_status(service_id, status="passing", output="Service is healthy") is True
    [found] = discovery.discover_services()
    assert found["status"] == "healthy" and found["lastHealthCheck"]


def test_update_health_bad_status_or_unknown_id(registry: ServiceRegistry) -> None:
    service_id = registry.register_service(**GW)
    with pytest.raises(InvalidServiceConfigError):
        registry.update_health_status(service_id, status="great")
    with pytest.raises(ServiceNotFoundError) as exc_info:
        registry.update_health_status(str(uuid.uuid4()), status="passing")
    assert exc_info.value.error_code == "LUCID_ERR_1002"


def test_ttl_check_goes_critical_then_deregisters(registry: ServiceRegistry,
                                                  discovery: ServiceDiscoveryClient) -> None:
    """Consul TTL semantics: silent for `ttl` -> critical; then `deregister_critical_after` -> gone."""
    service_id = registry.register_service(**GW, ttl=1, deregister_critical_after=2)
    deadline = time.monotonic() + 10
    states = []
    while time.monotonic() < deadline:
        found = discovery.discover_services(status=None)
        state = found[0]["status"] if found else "gone"
        if not states or states[-1] != state:
            states.append(state)
        if state == "gone":
            break
        time.sleep(0.1)
    assert states == ["healthy", "unhealthy", "gone"]
    assert registry.deregister_service(service_id) is False


def test_heartbeats_keep_the_instance(registry: ServiceRegistry, discovery: ServiceDiscoveryClient) -> None:
    service_id = registry.register_service(**GW, ttl=1, deregister_critical_after=1)
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        assert registry.update_health_status(service_id, "passing", "alive") is True
        assert [s["serviceId"] for s in discovery.discover_services()] == [service_id]
        time.sleep(0.3)


def test_critical_reports_do_not_keep_the_instance(registry: ServiceRegistry,
                                                   discovery: ServiceDiscoveryClient) -> None:
    service_id = registry.register_service(**GW, ttl=1, deregister_critical_after=1)
    deadline = time.monotonic() + 8
    gone = False
    while time.monotonic() < deadline:
        try:
            registry.update_health_status(service_id, "critical", "still broken")
        except ServiceNotFoundError:
            pass
        if not discovery.discover_services(status=None):
            gone = True
            break
        time.sleep(0.3)
    assert gone


@pytest.mark.etcd
def test_seed_constructor_arguments_name_the_registry_server(etcd_server) -> None:  # type: ignore[no-untyped-def]
    """ServiceRegistry(consul_host=, consul_port=) as the seed builds it: the registry's server (etcd here)."""
    from lucid.service_mesh.discovery import ServiceDiscoveryClient, ServiceRegistry

    host, port = etcd_server.endpoint.split(":")
    registry = ServiceRegistry(consul_host=host, consul_port=int(port))
    client = ServiceDiscoveryClient(consul_host=host, consul_port=int(port))
    try:
        assert registry.kv_url == f"etcd://{host}:{port}"
        assert client.kv_url == registry.kv_url
    finally:
        registry.close()
        client.close()
