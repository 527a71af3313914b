"""The seed's API tests made real: in-process ASGI app, SQLite, local ledger, minted JWTs."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from lucid.node.models.node_models import Node
from lucid.node.models.pool_models import NodePool
from tests.fixtures.node_fixtures import TEST_WALLET, sample_hardware_info, sample_node_data


@pytest.fixture
async def node_app(node_app_factory, node_db_url: str) -> Any:  # type: ignore[no-untyped-def]
    """The API on each engine: SQLite (default) and PostgreSQL (started by a fixture)."""
    return await node_app_factory(db_url=node_db_url)


@pytest.fixture
async def seeded(node_app: Any, api_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """pool_workers and an active node_test_001 (the ids the seed's tests use)."""
    c = node_app.state.container
    await c.pool_repo.create(NodePool(pool_id="pool_workers", name="workers"))
    await c.node_repo.create(Node(**sample_node_data()))
    return api_client


def _hdr(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_create_node_endpoint(seeded: httpx.AsyncClient, auth_headers: dict) -> None:
    node_data = {"name": "test-node-api", "node_type": "worker", "hardware_info": sample_hardware_info(),
                 "location": {"country": "US", "region": "CA"}, "initial_pool_id": "pool_workers",
                 "configuration": {"max_sessions": 10}}
    response = await seeded.post("/api/v1/nodes", json=node_data, headers=auth_headers)
    assert response.status_code == 201
    data = response.json()
    assert data["name"] == "test-node-api"
    assert data["node_type"] == "worker"
    assert data["status"] == "inactive"
    assert data["pool_id"] == "pool_workers"
    dup = await seeded.post("/api/v1/nodes", json=node_data, headers=auth_headers)
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "LUCID_ERR_5007"
    pool = await seeded.get("/api/v1/nodes/pools/pool_workers", headers=auth_headers)
    assert pool.json()["node_count"] == 2


async def test_get_node_endpoint(seeded: httpx.AsyncClient, auth_headers: dict) -> None:
    response = await seeded.get("/api/v1/nodes/node_test_001", headers=auth_headers)
    assert response.status_code == 200
    assert response.json()["node_id"] == "node_test_001"
    missing = await seeded.get("/api/v1/nodes/node_missing_1", headers=auth_headers)
    assert missing.status_code == 404
    err = missing.json()["error"]
    assert err["code"] == "LUCID_ERR_5001" and err["request_id"] == missing.headers["x-request-id"]
    assert set(err) == {"code", "message", "details", "request_id", "timestamp"}


async def test_start_stop_restart_lifecycle(seeded: httpx.AsyncClient, auth_headers: dict) -> None:
    created = (await seeded.post("/api/v1/nodes", json={"name": "life-node"}, headers=auth_headers)).json()
    nid = created["node_id"]
    r = await seeded.post(f"/api/v1/nodes/{nid}/start", headers=auth_headers)
    assert r.status_code == 200 and r.json()["status"] == "active" and r.json()["node_id"] == nid
    again = await seeded.post(f"/api/v1/nodes/{nid}/start", headers=auth_headers)
    assert again.json()["message"] == "Node is already active"
    assert (await seeded.post(f"/api/v1/nodes/{nid}/restart", headers=auth_headers)).json()["status"] == "active"
    busy = await seeded.delete(f"/api/v1/nodes/{nid}", headers=auth_headers)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "LUCID_ERR_5003"
    assert (await seeded.post(f"/api/v1/nodes/{nid}/stop", headers=auth_headers)).json()["status"] == "inactive"
    upd = await seeded.put(f"/api/v1/nodes/{nid}", json={"status": "error"}, headers=auth_headers)
    assert upd.status_code == 200
    bad = await seeded.post(f"/api/v1/nodes/{nid}/start", headers=auth_headers)
    assert bad.status_code == 409 and bad.json()["error"]["code"] == "LUCID_ERR_5003"
    assert (await seeded.delete(f"/api/v1/nodes/{nid}", headers=auth_headers)).status_code == 200
    assert (await seeded.get(f"/api/v1/nodes/{nid}", headers=auth_headers)).status_code == 404


async def test_list_nodes_with_pagination(seeded: httpx.AsyncClient, auth_headers: dict) -> None:
    for i in range(3):
        await seeded.post("/api/v1/nodes", json={"name": f"page-node-{i}"}, headers=auth_headers)
    response = await seeded.get("/api/v1/nodes?page=1&limit=10&status=active", headers=auth_headers)
    assert response.status_code == 200
    data = response.json()
    assert "nodes" in data and "pagination" in data
    assert data["pagination"] == {"page": 1, "limit": 10, "total": 1, "pages": 1}
    assert [n["node_id"] for n in data["nodes"]] == ["node_test_001"]
    p2 = (await seeded.get("/api/v1/nodes?page=2&limit=2", headers=auth_headers)).json()
    assert p2["pagination"]["total"] == 4 and p2["pagination"]["pages"] == 2 and len(p2["nodes"]) == 2


async def test_poot_validation_endpoint(seeded: httpx.AsyncClient, mint) -> None:
    hdr = _hdr(mint("worker", node_id="node_test_001"))
    poot = {"output_data": "base64_encoded_data", "timestamp": datetime.now(UTC).isoformat(),
            "nonce": "unique_nonce_12345"}
    response = await seeded.post("/api/v1/nodes/node_test_001/poot/validate", json=poot, headers=hdr)
    assert response.status_code == 200
    data = response.json()
    assert "is_valid" in data and "score" in data and "confidence" in data
    assert data["is_valid"] is True and "output_data" not in data
    replay = await seeded.post("/api/v1/nodes/node_test_001/poot/validate", json=poot, headers=hdr)
    assert replay.status_code == 409 and replay.json()["error"]["code"] == "LUCID_ERR_5005"
    other = await seeded.post("/api/v1/nodes/node_other_1/poot/validate", json=poot, headers=hdr)
    assert other.status_code == 403  # a worker token acts only for its own node
    old = dict(poot, nonce="n2-abc", timestamp=(datetime.now(UTC) - timedelta(hours=25)).isoformat())
    r = await seeded.post("/api/v1/nodes/node_test_001/poot/validate", json=old, headers=hdr)
    assert r.status_code == 400 and r.json()["error"]["message"] == "Timestamp out of valid range"
    vhdr = _hdr(mint("validator"))
    score = (await seeded.get("/api/v1/nodes/node_test_001/poot/score", headers=vhdr)).json()
    assert score["validation_status"] == "invalid"  # the latest attempt was the replay
    assert score["score"] == data["score"] and score["output_hash"] == data["output_hash"]
    hist = (await seeded.get("/api/v1/nodes/node_test_001/poot/history", headers=vhdr)).json()
    assert hist["pagination"]["total"] == 2 and sum(v["is_valid"] for v in hist["validations"]) == 1


async def test_poot_batch_validate(seeded: httpx.AsyncClient, mint) -> None:
    now = datetime.now(UTC).isoformat()
    body = {"validations": [
        {"node_id": "node_test_001", "output_data": "data1", "timestamp": now, "nonce": "nonce1"},
        {"node_id": "node_test_002", "output_data": "data2", "timestamp": now, "nonce": "nonce2"}]}
    r = await seeded.post("/api/v1/nodes/poot/batch-validate", json=body, headers=_hdr(mint("validator")))
    assert r.status_code == 200
    assert r.json()["summary"] == {"total": 2, "valid": 1, "invalid": 0, "errors": 1}
    denied = await seeded.post("/api/v1/nodes/poot/batch-validate", json=body, headers=_hdr(mint("worker")))
    assert denied.status_code == 403


async def _wait_batch(client: httpx.AsyncClient, batch_id: str, hdr: dict, want: str = "completed") -> dict:
    for _ in range(200):
        st = (await client.get(f"/api/v1/nodes/payouts/batch/{batch_id}", headers=hdr)).json()
        if st["status"] == want:
            return st
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch {batch_id} stuck: {st}")


async def test_batch_payout_endpoint(seeded: httpx.AsyncClient, auth_headers: dict, node_app: Any) -> None:
    payout_data = {"batch_id": "batch_test_001", "payout_requests": [
        {"node_id": "node_test_001", "amount": 100.0, "currency": "USDT", "wallet_address": TEST_WALLET}]}
    response = await seeded.post("/api/v1/nodes/payouts/batch", json=payout_data, headers=auth_headers)
    assert response.status_code == 202
    data = response.json()
    assert data["batch_id"] == "batch_test_001"
    assert data["status"] in ["processing", "queued"]
    st = await _wait_batch(seeded, "batch_test_001", auth_headers)
    assert st["successful"] == 1 and st["counts"] == {"completed": 1}
    again = await seeded.post("/api/v1/nodes/payouts/batch", json=payout_data, headers=auth_headers)
    assert again.status_code == 202 and again.json()["status"] == "completed"
    changed = dict(payout_data, payout_requests=[dict(payout_data["payout_requests"][0], amount=5)])
    conflict = await seeded.post("/api/v1/nodes/payouts/batch", json=changed, headers=auth_headers)
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "LUCID_ERR_5010"
    ledger = node_app.state.container.tron
    assert str(await ledger.get_balance(TEST_WALLET)) == "100"
    hist = (await seeded.get("/api/v1/nodes/payouts/history", headers=auth_headers)).json()
    assert hist["pagination"]["total"] == 1 and hist["payouts"][0]["amount"] == "100"
    mine = (await seeded.get("/api/v1/nodes/node_test_001/payouts", headers=auth_headers)).json()
    assert mine["payouts"][0]["status"] == "completed"
    unknown = {"payout_requests": [dict(payout_data["payout_requests"][0], node_id="node_ghost_1")]}
    r = await seeded.post("/api/v1/nodes/payouts/batch", json=unknown, headers=auth_headers)
    assert r.status_code == 404 and r.json()["error"]["details"]["missing"] == ["node_ghost_1"]


async def test_scheduled_payout_runs_when_due(seeded: httpx.AsyncClient, auth_headers: dict) -> None:
    when = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    body = {"batch_id": "batch_later", "scheduled_at": when, "payout_requests": [
        {"node_id": "node_test_001", "amount": "2.5", "wallet_address": TEST_WALLET}]}
    r = await seeded.post("/api/v1/nodes/payouts/schedule", json=body, headers=auth_headers)
    assert r.status_code == 202 and r.json()["status"] == "scheduled"
    listed = (await seeded.get("/api/v1/nodes/payouts/schedule", headers=auth_headers)).json()["scheduled"]
    assert [b["batch_id"] for b in listed] == ["batch_later"]
    st = (await seeded.get("/api/v1/nodes/payouts/batch/batch_later", headers=auth_headers)).json()
    assert st["counts"] == {"pending": 1}  # not paid before its time
    assert (await _wait_batch(seeded, "batch_later", auth_headers))["successful"] == 1


async def test_unauthorized_access(seeded: httpx.AsyncClient) -> None:
    response = await seeded.get("/api/v1/nodes")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "LUCID_ERR_1203"
    assert response.headers["x-request-id"]


async def test_wrong_role_is_403(seeded: httpx.AsyncClient, mint) -> None:
    r = await seeded.post("/api/v1/nodes", json={"name": "nope-node"}, headers=_hdr(mint("worker")))
    assert r.status_code == 403 and r.json()["error"]["code"] == "LUCID_ERR_1203"
    narrowed = _hdr(mint("admin", permissions=["node:read"]))
    assert (await seeded.post("/api/v1/nodes/node_test_001/stop", headers=narrowed)).status_code == 403
    assert (await seeded.get("/api/v1/nodes", headers=narrowed)).status_code == 200


async def test_rate_limiting(node_app_factory, mint) -> None:
    from lucid.node.api.settings import RateLimits

    app = await node_app_factory(rate_limits=RateLimits(public=100, node=100, admin=100, poot=100, payout=50))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        hdr = _hdr(mint("validator"))
        responses = [await client.get("/api/v1/nodes", headers=hdr) for _ in range(150)]
    codes = [r.status_code for r in responses]
    assert 429 in codes and 100 <= codes.index(429) <= 110  # bucket of 100, refilling at 100/min
    limited = responses[codes.index(429)]
    assert limited.json()["error"]["code"] == "LUCID_ERR_4291"
    assert int(limited.headers["retry-after"]) >= 1


async def test_request_ids_and_log_lines(seeded: httpx.AsyncClient, auth_headers: dict, caplog) -> None:
    rid = f"req-{uuid.uuid4().hex}"
    with caplog.at_level(logging.INFO, logger="lucid.node"):
        r = await seeded.get("/api/v1/nodes/node_test_001", headers={**auth_headers, "X-Request-ID": rid})
    assert r.headers["x-request-id"] == rid
    lines = [rec for rec in caplog.records if rec.name == "lucid.node.access"]
    assert lines and lines[-1].request_id == rid
    bad = await seeded.get("/api/v1/nodes", headers={**auth_headers, "X-Request-ID": "<bad id>"})
    assert bad.headers["x-request-id"] != "<bad id>" and len(bad.headers["x-request-id"]) == 36
    for path in ("/health", "/nope", "/api/v1/nodes/bad!id"):
        assert (await seeded.get(path, headers=auth_headers)).headers.get("x-request-id")


async def test_health_and_metrics(seeded: httpx.AsyncClient, auth_headers: dict, mint) -> None:
    h = await seeded.get("/health")
    assert h.status_code == 200 and h.json()["checks"]["database"] == "healthy"
    m = await seeded.get("/metrics", headers=auth_headers)
    assert m.status_code == 200 and "lucid_node_http_requests_total" in m.text
    assert (await seeded.get("/metrics", headers=_hdr(mint("worker")))).status_code == 403
    assert (await seeded.get("/metrics")).status_code == 401


async def test_pools_and_membership(seeded: httpx.AsyncClient, auth_headers: dict) -> None:
    r = await seeded.post("/api/v1/nodes/pools", json={"pool_id": "pool_gpu", "name": "gpu", "max_nodes": 1},
                          headers=auth_headers)
    assert r.status_code == 201
    dup = await seeded.post("/api/v1/nodes/pools", json={"pool_id": "pool_gpu", "name": "gpu2"}, headers=auth_headers)
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "LUCID_ERR_5008"
    n1 = (await seeded.post("/api/v1/nodes", json={"name": "gpu-a"}, headers=auth_headers)).json()["node_id"]
    n2 = (await seeded.post("/api/v1/nodes", json={"name": "gpu-b"}, headers=auth_headers)).json()["node_id"]
    add = await seeded.post("/api/v1/nodes/pools/pool_gpu/nodes", json={"node_id": n1, "priority": 80},
                            headers=auth_headers)
    assert add.status_code == 200 and add.json()["node_count"] == 1
    full = await seeded.post("/api/v1/nodes/pools/pool_gpu/nodes", json={"node_id": n2}, headers=auth_headers)
    assert full.status_code == 409 and full.json()["error"]["code"] == "LUCID_ERR_5004"
    busy = await seeded.delete("/api/v1/nodes/pools/pool_gpu", headers=auth_headers)
    assert busy.status_code == 400 and busy.json()["error"]["code"] == "LUCID_ERR_5009"
    rm = await seeded.delete(f"/api/v1/nodes/pools/pool_gpu/nodes/{n1}", headers=auth_headers)
    assert rm.json()["node_count"] == 0
    assert (await seeded.delete("/api/v1/nodes/pools/pool_gpu", headers=auth_headers)).status_code == 200
    assert (await seeded.get("/api/v1/nodes/pools/pool_gpu", headers=auth_headers)).json()["error"]["code"] == \
        "LUCID_ERR_5002"
    listed = (await seeded.get("/api/v1/nodes/pools", headers=auth_headers)).json()
    assert [p["pool_id"] for p in listed["pools"]] == ["pool_workers"]


SAMPLE = {"cpu_percent": 37.5, "memory_percent": 61.0, "memory_used_bytes": 5 << 30,
          "memory_total_bytes": 8 << 30, "disk_percent": 40.0, "disk_used_bytes": 200 << 30,
          "disk_total_bytes": 500 << 30, "network_bytes_sent": 12345, "network_bytes_recv": 67890}


async def test_resources(seeded: httpx.AsyncClient, auth_headers: dict, mint: Any) -> None:
    """A node's charts are its own figures, sent with its heartbeats, kept in the database: never the API
    host's (every node used to report the host's psutil figures)."""
    await seeded.post("/api/v1/nodes/node_test_001/stop", headers=auth_headers)
    await seeded.post("/api/v1/nodes/node_test_001/start", headers=auth_headers)
    r = (await seeded.get("/api/v1/nodes/node_test_001/resources?time_range=1h", headers=auth_headers)).json()
    assert r["monitoring"] is True and r["current"] is None and r["samples"] == []  # nothing reported yet
    worker = {"Authorization": f"Bearer {mint('worker', node_id='node_test_001')}"}
    for cpu in (37.5, 42.0):
        beat = await seeded.post("/api/v1/nodes/node_test_001/heartbeat", headers=worker,
                                 json={"resources": {**SAMPLE, "cpu_percent": cpu}})
        assert beat.status_code == 200 and beat.json()["resources_recorded"] is True, beat.text
    r = (await seeded.get("/api/v1/nodes/node_test_001/resources?time_range=1h", headers=auth_headers)).json()
    assert [s["cpu_percent"] for s in r["samples"]] == [37.5, 42.0]
    assert r["current"]["memory_total_bytes"] == 8 << 30 and r["current"]["cpu_percent"] == 42.0
    other = {"Authorization": f"Bearer {mint('worker', node_id='node_test_002')}"}  # not this node's agent
    assert (await seeded.post("/api/v1/nodes/node_test_001/heartbeat", headers=other,
                              json={"resources": SAMPLE})).status_code == 403
    for bad in ({**SAMPLE, "cpu_percent": 101}, {**SAMPLE, "memory_used_bytes": -1}, {"cpu_percent": 1},
                {**SAMPLE, "extra": 1}, {**SAMPLE, "disk_percent": "NaN"}, {**SAMPLE, "network_bytes_sent": 2**70}):
        refused = await seeded.post("/api/v1/nodes/node_test_001/heartbeat", headers=worker, json={"resources": bad})
        assert refused.status_code == 400 and refused.json()["error"]["code"].startswith("LUCID_ERR_"), bad
    r = (await seeded.get("/api/v1/nodes/node_test_001/resources?time_range=1h", headers=auth_headers)).json()
    assert len(r["samples"]) == 2  # the refused heartbeats recorded nothing
    assert (await seeded.get("/api/v1/nodes/node_test_001/resources?time_range=2y",
                             headers=auth_headers)).status_code == 400
    ok = await seeded.post("/api/v1/nodes/node_test_001/resources/allocate", json={"cpu_percent": 50},
                           headers=auth_headers)
    assert ok.status_code == 200
    over = await seeded.post("/api/v1/nodes/node_test_001/resources/allocate", json={"cpu_percent": 40},
                             headers=auth_headers)
    assert over.status_code == 409 and over.json()["error"]["code"] == "LUCID_ERR_5004"  # limit is 80 %


async def test_partial_updates_refuse_null_for_required_fields_and_change_nothing(seeded: httpx.AsyncClient,
                                                                                  auth_headers: dict) -> None:
    """An explicit null for a field that cannot be empty was a 500 (found by the schema fuzzer: PUT a pool
    with {"auto_scaling": null}); it is a 400 naming the field, and nothing of the request is applied."""
    pool_url, node_url = "/api/v1/nodes/pools/pool_workers", "/api/v1/nodes/node_test_001"
    pool_before = (await seeded.get(pool_url, headers=auth_headers)).json()
    node_before = (await seeded.get(node_url, headers=auth_headers)).json()
    for url, body, field in ((pool_url, {"description": "kept", "auto_scaling": None}, "auto_scaling"),
                             (pool_url, {"max_nodes": 50, "name": None}, "name"),
                             (node_url, {"location": {"country": "FR"}, "name": None}, "name")):
        r = await seeded.put(url, json=body, headers=auth_headers)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert err["code"] == "LUCID_ERR_5000" and err["details"]["errors"][0]["loc"] == ["body", field]
    assert (await seeded.get(pool_url, headers=auth_headers)).json() == pool_before
    assert (await seeded.get(node_url, headers=auth_headers)).json() == node_before
    # nullable fields still clear with null, and valid changes apply
    r = await seeded.put(pool_url, json={"description": "gpu pool", "max_nodes": 50}, headers=auth_headers)
    assert r.status_code == 200 and r.json()["description"] == "gpu pool" and r.json()["max_nodes"] == 50
    r = await seeded.put(pool_url, json={"description": None}, headers=auth_headers)
    assert r.status_code == 200 and r.json()["description"] is None
