"""Registry model pieces: durations, validation, key layout, and the cache's replay safety."""

from __future__ import annotations

import pytest

from backends.kv import KeyValue, WatchEvent
from lucid.service_mesh.discovery.cache import ServiceCache
from lucid.service_mesh.discovery.keys import RegistryKeys
from lucid.service_mesh.discovery.model import HealthRecord, Registration, parse_duration
from lucid.service_mesh.errors import InvalidServiceConfigError


@pytest.mark.parametrize("raw, seconds", [("30s", 30), ("2m", 120), ("500ms", 0.5), (10, 10), ("1h", 3600), ("7", 7)])
def test_parse_duration(raw, seconds) -> None:
    assert parse_duration(raw, "x") == seconds


@pytest.mark.parametrize("raw", ["", "ten", "-1s", "0", 0, None, "5 parsecs"])
def test_parse_duration_rejects(raw) -> None:
    with pytest.raises(InvalidServiceConfigError):
        parse_duration(raw, "x")


def _reg(**over) -> Registration:
    base = dict(service_id="id-1", service_name="api-gateway", cluster="api-gateway", plane="ops", host="h",
                port=1, version="1.0.0")
    base.update(over)
    return Registration(**base)


def test_validation_lists_every_problem() -> None:
    with pytest.raises(InvalidServiceConfigError) as exc_info:
        _reg(service_name="X", port=0, version="v1", metadata={"f": object()}).validate()
    problems = exc_info.value.details["problems"]
    assert len(problems) == 4 and exc_info.value.error_code == "LUCID_ERR_1004"


def test_registration_round_trips_json() -> None:
    reg = _reg(metadata={"a": [1, 2]}, tags=["x"]).validate()
    assert Registration.from_json(reg.to_json()) == reg


def test_key_layout_and_foreign_keys() -> None:
    keys = RegistryKeys("/p/")
    assert keys.classify(keys.service("api-gateway", "id-1")) == ("service", "api-gateway", "id-1")
    assert keys.classify(keys.health("id-1")) == ("health", "", "id-1")
    assert keys.classify(keys.index("id-1")) == ("index", "", "id-1")
    assert keys.classify("/other/services/a/b") is None
    assert keys.classify("/p/services/too/many/parts") is None


def test_cache_is_safe_under_event_replay() -> None:
    """Events already contained in the snapshot may be replayed by the watch; the result must not change."""
    keys = RegistryKeys("/p/")
    reg = _reg().validate()
    health = HealthRecord("passing", "ok", "t")
    cache = ServiceCache(keys)
    cache.load(5, [KeyValue(keys.service("api-gateway", "id-1"), reg.to_json(), 3, 3, 1),
                   KeyValue(keys.health("id-1"), health.to_json(), 4, 4, 1)])
    # replay: put (rev 3), health (rev 4), then a newer delete of the health key (rev 6)
    cache.apply(WatchEvent("put", keys.service("api-gateway", "id-1"), reg.to_json(), 3))
    cache.apply(WatchEvent("put", keys.health("id-1"), health.to_json(), 4))
    [inst] = cache.instances("api-gateway")
    assert inst.check_status == "passing"
    cache.apply(WatchEvent("delete", keys.health("id-1"), b"", 6))
    [inst] = cache.instances("api-gateway")
    assert inst.check_status == "critical" and inst.status == "unhealthy"
    cache.apply(WatchEvent("delete", keys.service("api-gateway", "id-1"), b"", 7))
    assert cache.instances("api-gateway") == () and cache.revision == 7
    cache.apply(WatchEvent("put", "/p/unrelated", b"{}", 8))
    assert cache.service_names() == []
