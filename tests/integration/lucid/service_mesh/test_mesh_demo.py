"""The mesh demo (make demo): allowed call, denied cross-plane calls, breaker opening and recovering."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

from rich.console import Console

from lucid.service_mesh.policy.demo import demo
from tests.fixtures.mesh_fixtures import copy_ca


async def test_demo_story(mesh_ca_template: Path, tmp_path: Path) -> None:
    copy_ca(mesh_ca_template, tmp_path)
    out = io.StringIO()
    outcome = await demo(f"memory://demo-{uuid.uuid4().hex}", tmp_path, Console(file=out, width=200),
                         recovery_timeout=0.5)
    calls = {(s, d, m): r for s, d, m, r in outcome["calls"][:5]}
    assert calls[("api-gateway", "blockchain-core", "GET")].startswith("allowed")
    assert "LUCID_ERR_1203" in calls[("api-gateway", "blockchain-core", "POST")]
    assert "LUCID_ERR_1203" in calls[("tron-payment", "blockchain-core", "GET")]
    assert "LUCID_ERR_1203" in calls[("node-management", "tron-payment", "POST")]
    assert calls[("api-gateway", "tron-payment", "POST")].startswith("allowed")
    assert outcome["breaker_states"] == ["closed", "closed", "open", "open", "open", "closed"]
    assert outcome["calls"][-1][3].startswith("allowed")
    assert "spiffe://lucid.onion/wallet/tron-payment/tron-payment" in out.getvalue()
