"""The node demo (``lucid demo-nodes``, part of ``make demo``) runs end to end and pays every node once."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from lucid.node.demo import run_demo


async def test_demo_registers_starts_validates_and_pays(tmp_path: Path) -> None:
    lines: list[str] = []
    result = await run_demo(tmp_path, nodes=3, log=lines.append)
    assert len(result["nodes"]) == 3
    assert all(s["is_valid"] for s in result["scores"].values())
    assert result["batch"]["status"] == "completed" and result["batch"]["successful"] == 3
    assert sorted(p["node_id"] for p in result["payouts"]) == sorted(result["nodes"])
    assert Decimal(result["balance"]) == sum(Decimal(p["amount"]) for p in result["payouts"])
    assert any(line.startswith("paid") for line in lines)
