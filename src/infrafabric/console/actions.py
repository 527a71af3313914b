"""Operator actions. Each takes the verified operator identity of the session (never a typed name), is
validated before anything changes, and is written to the witness log with the operator's name."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from infrafabric.console.platform import Platform
from infrafabric.coordinator.credentials import Identity
from infrafabric.errors import InfraFabricError, UnknownSwarmError, ValidationError
from infrafabric.ids import is_valid_id

COMPONENT = "IF.console"
MAX_BUDGET = Decimal("1000000000")
_SERVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_PAYOUT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class NotFound(InfraFabricError):
    error_code = "IF_ERR_NOT_FOUND"
    http_status = 404


class ActionFailed(InfraFabricError):
    """The platform refused or could not complete the action (the message says which part)."""

    error_code = "IF_ERR_ACTION_FAILED"
    http_status = 502


def _audit(platform: Platform, operation: str, who: Identity, params: dict[str, Any]) -> None:
    platform.witness.log(COMPONENT, operation, {**params, "operator": who.name, "credential": who.jti}, "WARN")


def _swarm(platform: Platform, swarm_id: object) -> str:
    if not isinstance(swarm_id, str) or not is_valid_id(swarm_id) or swarm_id not in platform.governor.swarm_registry:
        raise UnknownSwarmError(f"no swarm {str(swarm_id)[:80]!r} is registered")
    return swarm_id


def parse_budget(value: object) -> Decimal:
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValidationError("the budget must be a number of dollars, e.g. 25.00") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_BUDGET or amount.as_tuple().exponent < -6:  # type: ignore[operator]
        raise ValidationError(f"the budget must be from 0 to {MAX_BUDGET} dollars with at most 6 decimals")
    return amount


async def reset_breaker(platform: Platform, who: Identity, swarm_id: object, reason: object = "") -> str:
    sid = _swarm(platform, swarm_id)
    text = str(reason or "")[:200]
    platform.governor.reset_circuit_breaker(sid, operator=who, reason=f"console: {text}" if text else "console")
    await platform.governor.flush()
    return f"breaker of {sid} reset"


async def set_budget(platform: Platform, who: Identity, swarm_id: object, amount: object) -> str:
    sid = _swarm(platform, swarm_id)
    budget = parse_budget(amount)
    platform.governor.set_budget(sid, float(budget), operator=who)
    await platform.governor.flush()
    return f"budget of {sid} set to ${budget}"


async def deregister_service(platform: Platform, who: Identity, service_id: object) -> str:
    if platform.mesh_kv is None:
        raise ActionFailed("this console has no service registry configured")
    if not isinstance(service_id, str) or not _SERVICE_ID.match(service_id):
        raise ValidationError("not a service id")
    from lucid.service_mesh.discovery.registry_core import AsyncServiceRegistry

    removed = await AsyncServiceRegistry(platform.mesh_kv).deregister_service(service_id)
    if not removed:
        raise NotFound(f"no service {service_id!r} is registered")
    _audit(platform, "service_deregistered", who, {"service_id": service_id})
    return f"service {service_id} deregistered"


async def retry_payout(platform: Platform, who: Identity, payout_id: object) -> str:
    """Pay a failed payout again, through the node API (the only payer). The new payout's idempotency key
    is derived from the failed one, so a retry clicked twice (or by two operators) pays once."""
    if platform.nodes is None:
        raise ActionFailed("this console has no node API configured")
    if not isinstance(payout_id, str) or not _PAYOUT_ID.match(payout_id):
        raise ValidationError("not a payout id")
    failed = None
    page = 1
    while failed is None:
        listing = await platform.nodes.get("/api/v1/nodes/payouts/history", status="failed", page=page, limit=100)
        failed = next((p for p in listing.get("payouts", []) if p.get("payout_id") == payout_id), None)
        if page >= int(listing.get("pagination", {}).get("pages", 1)):
            break
        page += 1
    if failed is None:
        raise NotFound(f"no failed payout {payout_id!r}: only a failed payout can be retried")
    digest = hashlib.sha256(payout_id.encode()).hexdigest()[:40]
    body = {"batch_id": f"batch_retry_{digest}", "payout_requests": [{
        "node_id": failed["node_id"], "amount": str(failed["amount"]), "wallet_address": failed["wallet_address"],
        "idempotency_key": f"retry:{payout_id}"}]}
    r = await platform.nodes.post("/api/v1/nodes/payouts/batch", body)
    if r.status_code >= 400:
        raise ActionFailed(f"the node API refused the retry: {r.status_code} {r.text[:200]}")
    _audit(platform, "payout_retry_requested", who, {"payout_id": payout_id, "node_id": failed["node_id"],
                                                      "amount": str(failed["amount"]),
                                                      "batch_id": body["batch_id"]})
    return f"payout {payout_id} queued again as batch {body['batch_id']}"
