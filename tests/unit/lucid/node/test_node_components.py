"""Unit tests of the seed's remaining test files (auth, rate limiter, validators, resource monitor,
pool service), mocks only where a collaborator is isolated."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from unittest.mock import AsyncMock

import pytest

from lucid.node.api.auth import JWTVerifier, Principal, ROLE_PERMISSIONS, mint_token
from lucid.node.api.rate_limit import RateLimiter
from lucid.node.api.settings import NodeAPISettings
from lucid.node.errors import (
    AuthenticationError, InvalidAllocationError, PermissionDeniedError, PoolNotFoundError, RateLimitExceededError,
    ResourceLimitError, ValidationError,
)
from lucid.node.models.node_models import Node, NodeCreateRequest
from lucid.node.models.pool_models import AddNodeToPoolRequest, NodePoolCreateRequest
from lucid.node.services import PoolService, ResourceMonitor
from lucid.node.validators import NodeValidator, from_micros, to_micros, validate_amount
from tests.fixtures.node_fixtures import sample_hardware_info, sample_node_create_request


class TestRateLimiter:
    def test_bucket_allows_limit_then_refuses_with_retry_after(self) -> None:
        rl = RateLimiter()
        for _ in range(60):
            rl.check("node", "alice", 60)
        with pytest.raises(RateLimitExceededError) as exc:
            rl.check("node", "alice", 60)
        assert exc.value.error_code == "LUCID_ERR_4291" and exc.value.retry_after == 1
        rl.check("node", "bob", 60)  # identities are independent
        rl.check("poot", "alice", 60)  # and so are tiers

    def test_refills_over_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The clock is driven by the test: on a loaded machine 6,000 real checks took long enough to refill
        # a token, and the refusal below did not happen.
        clock = [1000.0]
        rl = RateLimiter(clock=lambda: clock[0])
        for _ in range(6000):
            rl.check("t", "x", 6000)  # 100 tokens per second
        with pytest.raises(RateLimitExceededError):
            rl.check("t", "x", 6000)
        clock[0] += 0.005  # half a token
        with pytest.raises(RateLimitExceededError):
            rl.check("t", "x", 6000)
        clock[0] += 0.01
        rl.check("t", "x", 6000)

    def test_keys_are_bounded(self) -> None:
        rl = RateLimiter(max_keys=100)
        for i in range(1000):
            rl.check("public", f"10.0.{i // 256}.{i % 256}", 100)
        assert len(rl) == 100


class TestJWT:
    secret = "s" * 40

    def verifier(self) -> JWTVerifier:
        return JWTVerifier(NodeAPISettings(jwt_secret=self.secret, db_url="sqlite+aiosqlite://"))

    def test_role_permissions_and_narrowing(self) -> None:
        p = self.verifier().verify(mint_token(self.secret, role="admin", permissions=["node:read", "payout:process",
                                                                                      "root:everything"]))
        assert p.permissions == {"node:read", "payout:process"}  # a claim narrows, never widens
        p.require("node:read")
        with pytest.raises(PermissionDeniedError):
            p.require("node:write")

    def test_worker_matrix(self) -> None:
        p = self.verifier().verify(mint_token(self.secret, role="worker", node_id="node_abc_1"))
        assert p.permissions == ROLE_PERMISSIONS["worker"] == {"node:read", "resource:read", "poot:validate"}
        p.require_node("node_abc_1")
        with pytest.raises(PermissionDeniedError):
            p.require_node("node_xyz_1")

    def test_other_secret_is_rejected(self) -> None:
        with pytest.raises(AuthenticationError) as exc:
            self.verifier().verify(mint_token("t" * 40, role="admin"))
        assert exc.value.error_code == "LUCID_ERR_1203"

    @pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
    def test_unconfigured_secret_accepts_nothing(self) -> None:
        v = JWTVerifier(NodeAPISettings(jwt_secret=None, jwt_public_key=None, db_url="sqlite+aiosqlite://"))
        for guess in ("", "secret", "changeme", self.secret):
            with pytest.raises(AuthenticationError):
                v.verify(mint_token(guess or "x", role="admin"))

    def test_weak_configured_secret_refused(self) -> None:
        with pytest.raises(ValueError, match="32"):
            JWTVerifier(NodeAPISettings(jwt_secret="short", db_url="sqlite+aiosqlite://"))

    def test_verified_tokens_are_reused_until_they_expire(self, monkeypatch: pytest.MonkeyPatch) -> None:
        v = self.verifier()
        token = mint_token(self.secret, role="validator", ttl_seconds=60)
        decoded = 0
        real = v._decode

        def counting(t: str):  # type: ignore[no-untyped-def]
            nonlocal decoded
            decoded += 1
            return real(t)

        monkeypatch.setattr(v, "_decode", counting)
        first = v.verify(token)
        assert v.verify(token) is first and decoded == 1  # the signature is checked once
        with pytest.raises(AuthenticationError):
            v.verify(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))  # other bytes: checked, refused
        assert decoded == 2
        later = time.time() + 61
        monkeypatch.setattr("lucid.node.api.auth.time.time", lambda: later)
        v.verify(token)  # past its exp the cached entry is not served: the token is decoded (and checked) again
        assert decoded == 3

    def test_verified_token_cache_is_bounded(self) -> None:
        v = self.verifier()
        v._max_cached = 5
        for i in range(12):
            v.verify(mint_token(self.secret, role="worker", subject=f"w-{i}"))
        assert len(v._verified) == 5

    def test_principal_node_unbound(self) -> None:
        """An admin token is bound to no node: it may act for any; a node-bound token only for its own."""
        Principal("admin", "admin", frozenset()).require_node("node_any_1")  # must not raise
        bound = Principal("worker", "worker", frozenset(), node_id="node_mine_1")
        bound.require_node("node_mine_1")
        with pytest.raises(PermissionDeniedError):
            bound.require_node("node_other_1")


class TestValidators:
    async def test_reserved_name(self) -> None:
        with pytest.raises(ValidationError, match="reserved"):
            await NodeValidator().validate_create_request(NodeCreateRequest(name="admin"))

    async def test_limits_must_fit_hardware(self) -> None:
        req = sample_node_create_request()
        req["configuration"]["resource_limits"]["memory_bytes"] = 64 * 1024**3  # more than the 16 GiB installed
        with pytest.raises(ValidationError, match="Invalid hardware info"):
            await NodeValidator().validate_create_request(NodeCreateRequest(**req))
        await NodeValidator().validate_create_request(NodeCreateRequest(**sample_node_create_request()))

    @pytest.mark.parametrize("field,value", [("cores", 0), ("cores", 129)])
    def test_hardware_limits(self, field: str, value: int) -> None:
        hw = sample_hardware_info()
        hw["cpu"][field] = value
        with pytest.raises(Exception, match="cores"):
            NodeCreateRequest(name="hw-node", hardware_info=hw)

    def test_network_required(self) -> None:
        hw = sample_hardware_info()
        hw["network"] = []
        with pytest.raises(Exception, match="network"):
            NodeCreateRequest(name="hw-node", hardware_info=hw)

    def test_micros_round_trip(self) -> None:
        for v in ("0.000001", "1", "100.5", "999999.999999"):
            assert from_micros(to_micros(validate_amount(v))) == validate_amount(v)

    def test_status_assignment_validated(self) -> None:
        node = Node(status="active")
        with pytest.raises(Exception):
            node.status = "bogus"


class TestResourceMonitor:
    async def test_sampling_and_allocation(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        from lucid.node.db import NodeDatabase
        from lucid.node.db.resource_repo import SAMPLE_FIELDS, SqlResourceSampleRepository

        db = NodeDatabase(f"sqlite+aiosqlite:///{tmp_path / 'nodes.db'}")
        await db.create_all()
        mon = ResourceMonitor(SqlResourceSampleRepository(db))
        node = Node(**{"name": "res", "hardware_info": sample_hardware_info(),
                       "configuration": {"resource_limits": {"cpu_percent": 80}}})
        await mon.initialize_node(node)
        await mon.start_monitoring(node.node_id)
        assert (await mon.get_node_resources(node.node_id, "1h"))["current"] is None
        await mon.record(node.node_id, {k: 7 for k in SAMPLE_FIELDS})
        res = await mon.get_node_resources(node.node_id, "1h")
        assert res["monitoring"] and res["current"]["memory_total_bytes"] == 7
        later = datetime.now(UTC) + timedelta(seconds=1)
        assert await mon.samples.prune(later) == 1  # retention: older samples go
        assert (await mon.get_node_resources(node.node_id, "1h"))["current"] is None
        await mon.record(node.node_id, {k: 7 for k in SAMPLE_FIELDS})
        assert await mon.allocate(node.node_id, {"cpu_percent": 50}) == {"cpu_percent": 50}
        with pytest.raises(ResourceLimitError):
            await mon.allocate(node.node_id, {"cpu_percent": 31})
        with pytest.raises(InvalidAllocationError):
            await mon.allocate(node.node_id, {"cpu_percent": -1})
        await mon.set_thresholds(node.node_id, {"memory_percent": 0})
        assert (await mon.get_node_resources(node.node_id))["alerts"]  # any usage is above 0 %
        await mon.stop_monitoring(node.node_id)
        assert not mon.is_monitoring(node.node_id)
        await db.dispose()


class TestPoolService:
    async def test_create_and_add_node(self) -> None:
        pools, nodes = AsyncMock(), AsyncMock()
        svc = PoolService(pools, nodes)
        pool = await svc.create_pool(NodePoolCreateRequest(pool_id="pool_gpu_1", name="gpu", max_nodes=5))
        assert pool.pool_id == "pool_gpu_1" and pool.max_nodes == 5
        pools.create.assert_called_once()
        pools.get_by_id.return_value = pool
        await svc.add_node("pool_gpu_1", AddNodeToPoolRequest(node_id="node_abc_1", priority=70))
        nodes.assign_pool.assert_called_once_with("node_abc_1", "pool_gpu_1", 70)

    async def test_missing_pool(self) -> None:
        pools = AsyncMock()
        pools.get_by_id.return_value = None
        with pytest.raises(PoolNotFoundError):
            await PoolService(pools, AsyncMock()).get_pool("pool_nope_1")

    def test_reserved_pool_prefix(self) -> None:
        with pytest.raises(Exception, match="reserved"):
            NodePoolCreateRequest(pool_id="pool_system_x", name="sys")


class TestHotPathCaches:
    """The race guards: a read that began before a write must not install what it read."""

    def test_node_snapshot_read_racing_a_write_is_not_cached(self) -> None:
        from lucid.node.db.caches import NodeSnapshotCache

        cache = NodeSnapshotCache(max_entries=2)
        node = Node(node_id="node_race_001", name="race", status="active")
        generation = cache.generation
        cache.invalidate("node_race_001")  # a write landed while the read was in flight
        cache.put(node, generation)
        assert cache.get("node_race_001") is None
        cache.put(node, cache.generation)
        assert cache.get("node_race_001") is node
        for i in range(3):
            cache.put(Node(node_id=f"node_race_10{i}", name=f"r{i}", status="active"), cache.generation)
        assert len(cache) == 2 and cache.get("node_race_001") is None  # bounded, least recent out

    def test_history_load_racing_an_append_is_dropped(self) -> None:
        from lucid.node.db.caches import PoOTHistoryCache
        from lucid.node.db.poot_repo import ValidationSummary

        cache = PoOTHistoryCache(capacity=3, ttl=60)
        version = cache.version("node_h_001")
        cache.append("node_h_001", ValidationSummary(True, 50.0))
        cache.load("node_h_001", [], version)
        assert cache.get("node_h_001", 3) is None  # the read may have missed the append: not installed
        cache.load("node_h_001", [ValidationSummary(True, float(i)) for i in range(5)], cache.version("node_h_001"))
        cache.append("node_h_001", ValidationSummary(False, 0.0))
        got = cache.get("node_h_001", 3)
        assert got is not None and [h.score for h in got] == [0.0, 0.0, 1.0]  # newest first, capped
        assert cache.get("node_h_001", 4) is None  # more than it holds: the caller reads the database

    def test_history_load_racing_commits_with_ids_is_merged(self) -> None:
        """A reload that overlaps this process's commits keeps them, once each, newest first."""
        from lucid.node.db.caches import PoOTHistoryCache
        from lucid.node.db.poot_repo import ValidationSummary as V

        cache = PoOTHistoryCache(capacity=4, ttl=60)
        old = [V(True, 10.0, validation_id="a"), V(True, 9.0, validation_id="b")]
        version = cache.version("node_m_001")
        seen_by_read, missed_by_read = V(True, 11.0, validation_id="c"), V(False, 0.0, validation_id="d")
        cache.append("node_m_001", seen_by_read)  # committed before the read's snapshot
        cache.append("node_m_001", missed_by_read)  # committed after it
        cache.load("node_m_001", [seen_by_read, *old], version)
        got = cache.get("node_m_001", 4)
        assert got is not None and [h.validation_id for h in got] == ["d", "c", "a", "b"]
        window = cache.window("node_m_001")
        assert window is not None and window.reliability() == pytest.approx(0.7 * 3 / 4 + 0.3 * 30 / 4 / 100)
        # a read that failed leaves nothing behind: the next one starts clean
        cache.invalidate("node_m_001")
        cache.version("node_m_001")
        cache.abandon("node_m_001")
        assert cache._loading == {}
        version = cache.version("node_m_001")
        cache.load("node_m_001", old, version)
        assert [h.validation_id for h in cache.get("node_m_001", 4) or []] == ["a", "b"]

    def test_history_reload_period_stretches_while_nothing_foreign_shows_up(self) -> None:
        """A reload finding only what this process appended doubles the node's period (capped); one
        finding another writer's validation brings it back to ttl."""
        from lucid.node.db.caches import PoOTHistoryCache
        from lucid.node.db.poot_repo import ValidationSummary as V

        cache = PoOTHistoryCache(capacity=4, ttl=10, max_stretch=8)
        own = [V(True, 50.0, validation_id=f"own-{i}") for i in range(3)]
        cache.load("node_s_001", own, cache.version("node_s_001"))
        assert cache.stretch("node_s_001") == 1
        stretches = []
        for i in range(4):
            mine = V(True, 60.0, validation_id=f"mine-{i}")
            cache.append("node_s_001", mine)
            own = [mine, *own][:4]
            cache.load("node_s_001", own, cache.version("node_s_001"))  # the database holds just ours
            stretches.append(cache.stretch("node_s_001"))
        assert stretches == [2, 4, 8, 8]
        window, overdue = cache.aged_window("node_s_001") or (None, 0.0)
        assert window is not None and -80 <= overdue < -79  # expires after ttl x 8
        cache.load("node_s_001", [V(False, 0.0, validation_id="theirs"), *own], cache.version("node_s_001"))
        assert cache.stretch("node_s_001") == 1
        assert [h.validation_id for h in cache.get("node_s_001", 2) or []] == ["theirs", "mine-3"]
        cache.ttl = 0.0
        assert cache.window("node_s_001") is None  # ttl 0 still expires every entry


def test_apply_update_is_all_or_nothing() -> None:
    """The services' partial update: the set fields applied to a copy validated as a whole; a field the
    stored model cannot take is a 400-class error naming it, and the current object is not touched."""
    from lucid.node.errors import ValidationError
    from lucid.node.models.pool_models import NodePool, NodePoolUpdateRequest
    from lucid.node.services.updates import apply_update

    pool = NodePool(pool_id="pool_upd_01", name="before", max_nodes=10)
    bad = NodePoolUpdateRequest.model_construct(max_nodes=20, auto_scaling=None,
                                                _fields_set={"max_nodes", "auto_scaling"})
    with pytest.raises(ValidationError) as info:
        apply_update(pool, bad)
    assert info.value.details["errors"][0]["loc"] == ["body", "auto_scaling"]
    assert pool.max_nodes == 10 and pool.auto_scaling is False
    good = apply_update(pool, NodePoolUpdateRequest(max_nodes=20, description=None))
    assert (good.max_nodes, good.description, good.name, pool.max_nodes) == (20, None, "before", 10)


def test_public_json_is_public_dict_as_json() -> None:
    """The hot routes answer with public_json (pydantic writes it); it must parse to public_dict exactly,
    non-ASCII text, small floats and datetimes included."""
    import json
    from datetime import UTC, datetime

    from lucid.node.models.node_models import Location, Node
    from lucid.node.models.poot_models import PoOTValidationResult

    node = Node(name="json-node", location=Location(country="FR", region="Île-de-France", city="Orléans"),
                poot_score=1e-05, last_heartbeat=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    assert json.loads(node.public_json()) == node.public_dict()
    proof = PoOTValidationResult(node_id="node_json_001", output_data="secret output", output_hash="c" * 64,
                                 timestamp=datetime.now(UTC), nonce="nonce-é-1", is_valid=False, score=0.1,
                                 score_parts={"output": 0.1, "nonce": 0.0}, errors=["Score below threshold"])
    assert json.loads(proof.public_json()) == proof.public_dict()
    assert "output_data" not in json.loads(proof.public_json())
