"""Hostile values in every field of the node API's request bodies, as an outside client sends them.

Two properties, checked on every generated request:
- never a 500: every refusal is a 4xx with the error envelope (``LUCID_ERR_*``, the request id);
- the hot path (hot_routes.py) and FastAPI answer alike: the same request goes to an app with the hot
  routes and to one without, and status, error code and the stable fields of the body must agree.

The apps run on one event loop in a thread (backends.loop_thread), so hypothesis drives plain sync calls."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.loop_thread import LoopThread
from lucid.node.api import create_app
from lucid.node.api.auth import mint_token
from lucid.node.models.node_models import Node
from lucid.node.models.pool_models import NodePool
from tests.fixtures.node_fixtures import TEST_WALLET, node_api_settings, sample_hardware_info
from tests.integration.lucid.node.test_api_hot_routes import _answer

SECRET = "hostile-" * 4
DEEP = 100_000


class TwoApps:
    """An app with the hot routes and one without, each on its own SQLite file, one loop thread."""

    def __init__(self, tmp: Path) -> None:
        self.loop = LoopThread("node-api-attacks")
        self._cms: list[Any] = []
        self.clients: list[httpx.AsyncClient] = []
        self.loop.run(self._start(tmp), timeout=60)
        self.headers = {"Authorization": f"Bearer {mint_token(SECRET, role='super_admin')}",
                        "Content-Type": "application/json"}

    async def _start(self, tmp: Path) -> None:
        for hot in (True, False):
            app = create_app(node_api_settings(tmp, SECRET, db_url=f"sqlite+aiosqlite:///{tmp / f'{hot}.db'}",
                                               hot_routes=hot))
            cm = app.router.lifespan_context(app)
            await cm.__aenter__()
            self._cms.append(cm)
            c = app.state.container
            await c.pool_repo.create(NodePool(pool_id="pool_workers", name="workers", max_nodes=1000))
            await c.node_repo.create(Node(node_id="node_hostile_1", name="hostile-node-1", status="active"))
            self.clients.append(httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                                  base_url="http://node-mgmt"))

    def post_both(self, path: str, raw: bytes) -> list[httpx.Response]:
        return [self.loop.run(c.post(path, content=raw, headers=self.headers), timeout=60) for c in self.clients]

    def post(self, path: str, raw: bytes) -> httpx.Response:
        return self.loop.run(self.clients[0].post(path, content=raw, headers=self.headers), timeout=60)

    def close(self) -> None:
        async def _stop() -> None:
            for c in self.clients:
                await c.aclose()
            for cm in reversed(self._cms):
                await cm.__aexit__(None, None, None)
        self.loop.run(_stop(), timeout=60)
        self.loop.stop()


@pytest.fixture(scope="module")
def apps() -> Iterator[TwoApps]:
    with tempfile.TemporaryDirectory() as tmp:
        pair = TwoApps(Path(tmp))
        try:
            yield pair
        finally:
            pair.close()


def _check_envelope(r: httpx.Response, what: Any) -> None:
    assert r.status_code < 500, (what, r.status_code, r.text[:300])
    if r.status_code >= 400:
        err = r.json()["error"]
        assert err["code"].startswith("LUCID_ERR_"), (what, r.text[:300])
        assert err["request_id"] == r.headers["x-request-id"]


# ---------------------------------------------------------------- hostile values
_EXTREME_TIMES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00",
                  "9999-12-31T23:59:59.999999", "2026-01-01T00:00:00", "1969-12-31T23:59:59Z",
                  "2026-02-30T00:00:00Z", "", "now", "2026-01-01T00:00:00+25:00"]
_RAW_NUMBERS = ["1e400", "-1e400", "Infinity", "-Infinity", "NaN", "1e-400", "9" * 5000, "-0", "0.1e999999"]

hostile_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
    | st.sampled_from(_EXTREME_TIMES),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8)


def _valid_create(name: str) -> dict[str, Any]:
    return {"name": name, "node_type": "worker", "hardware_info": sample_hardware_info(),
            "location": {"country": "US", "region": "CA"}, "initial_pool_id": "pool_workers"}


def _valid_proof(nonce: str) -> dict[str, Any]:
    return {"output_data": "aGVsbG8=", "timestamp": datetime.now(UTC).isoformat(), "nonce": nonce}


def _set_path(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    cur = doc
    for k in path[:-1]:
        cur = cur.setdefault(k, {}) if isinstance(cur.get(k), dict) else cur.setdefault(k, {})
    cur[path[-1]] = value
    return doc


_CREATE_FIELDS = [("name",), ("node_type",), ("initial_pool_id",), ("location", "country"),
                  ("location", "latitude"), ("hardware_info", "cpu", "cores"),
                  ("hardware_info", "memory", "total_bytes"), ("configuration", "max_sessions"),
                  ("configuration", "resource_limits", "cpu_percent"), ("public_key",), ("extra_field",)]
_PROOF_FIELDS = [("output_data",), ("timestamp",), ("nonce",), ("signature",), ("extra",)]

_counter = iter(range(10**9))


def _raw_number_body(doc: dict[str, Any], path: tuple[str, ...], raw: str) -> bytes:
    """A body whose field is a raw JSON token json.dumps cannot write (1e400, NaN, 9999...)."""
    marker = "__RAW_TOKEN__"
    return json.dumps(_set_path(doc, path, marker)).replace(f'"{marker}"', raw).encode()


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(["create", "proof"]), field=st.integers(0, 20), value=hostile_json,
       raw=st.none() | st.sampled_from(_RAW_NUMBERS))
def test_hostile_field_values_get_the_same_4xx_envelope_on_both_paths(apps: TwoApps, route: str, field: int,
                                                                       value: Any, raw: str | None) -> None:
    n = next(_counter)
    if route == "create":
        path, doc, url = _CREATE_FIELDS[field % len(_CREATE_FIELDS)], _valid_create(f"hostile-{n}"), "/api/v1/nodes"
    else:
        path, doc = _PROOF_FIELDS[field % len(_PROOF_FIELDS)], _valid_proof(f"hostile-nonce-{n}")
        url = "/api/v1/nodes/node_hostile_1/poot/validate"
    body = _raw_number_body(doc, path, raw) if raw is not None else json.dumps(_set_path(doc, path, value)).encode()
    hot, plain = apps.post_both(url, body)
    _check_envelope(hot, (path, value, raw))
    _check_envelope(plain, (path, value, raw))
    assert _answer(hot) == _answer(plain), (path, value, raw, hot.text[:200], plain.text[:200])


@pytest.mark.parametrize("url", ["/api/v1/nodes", "/api/v1/nodes/node_hostile_1/poot/validate",
                                 "/api/v1/nodes/pools", "/api/v1/nodes/payouts/batch",
                                 "/api/v1/nodes/poot/batch-validate",
                                 "/api/v1/nodes/node_hostile_1/resources/allocate"])
@pytest.mark.parametrize("shape", ["list", "object", "mixed"])
def test_deeply_nested_bodies_are_a_400_envelope_on_every_route(apps: TwoApps, url: str, shape: str) -> None:
    body = {"list": "[" * DEEP + "]" * DEEP, "object": '{"a":' * DEEP + "1" + "}" * DEEP,
            "mixed": '{"name":' + '[{"a":' * (DEEP // 2) + "1" + "}]" * (DEEP // 2) + "}"}[shape]
    answers = apps.post_both(url, body.encode())
    for r in answers:
        _check_envelope(r, (url, shape))
        assert r.status_code == 400
    assert _answer(answers[0]) == _answer(answers[1])


@pytest.mark.parametrize("when", _EXTREME_TIMES[:5])
@pytest.mark.parametrize("where", ["batch", "item", "schedule"])
def test_extreme_or_naive_scheduled_at_is_a_400_and_records_nothing(apps: TwoApps, when: str, where: str) -> None:
    item = {"node_id": "node_hostile_1", "amount": "1", "wallet_address": TEST_WALLET}
    body: dict[str, Any] = {"batch_id": f"batch_when_{next(_counter)}", "payout_requests": [item]}
    if where == "item":
        item["scheduled_at"] = when
    else:
        body["scheduled_at"] = when
    url = "/api/v1/nodes/payouts/schedule" if where == "schedule" else "/api/v1/nodes/payouts/batch"
    r = apps.post(url, json.dumps(body).encode())
    _check_envelope(r, (where, when))
    assert r.status_code == 400
    st_ = apps.loop.run(apps.clients[0].get(f"/api/v1/nodes/payouts/batch/{body['batch_id']}",
                                            headers=apps.headers))
    assert st_.status_code == 404


@pytest.mark.parametrize("price", _RAW_NUMBERS[:5] + ['"Infinity"', '"NaN"', "-1"])
def test_non_finite_or_negative_pool_prices_are_refused(apps: TwoApps, price: str) -> None:
    pool_id = f"pool_price_{next(_counter)}"
    body = f'{{"pool_id":"{pool_id}","name":"priced-pool","pricing":{{"cpu_hour":{price}}}}}'.encode()
    r = apps.post("/api/v1/nodes/pools", body)
    _check_envelope(r, price)
    assert r.status_code == 400, r.text
    got = apps.loop.run(apps.clients[0].get(f"/api/v1/nodes/pools/{pool_id}", headers=apps.headers))
    assert got.status_code == 404  # nothing stored, not a pool priced at null
