"""`make demo`, Lucid part: the service mesh and node management on the embedded default, then a summary.

The mesh registers the Lucid services with certificates, makes an allowed and a denied cross-plane call
over mTLS + JWT, shows a breaker opening and recovering and services messaging each other by priority;
node management registers and starts nodes,
takes their signed PoOT and pays a batch on the local TRON ledger. Exits 1 if any check fails.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()


async def _messages() -> tuple[list[str], list[dict]]:
    """api-gateway and session-management message blockchain-core; it reads them by priority."""
    from lucid.service_mesh.communication import AsyncMessageQueueClient

    async with AsyncMessageQueueClient("memory://lucid-demo") as mq:
        sent = [
            await mq.send_message("api-gateway", "blockchain-core", {"step": "report"}, priority="low"),
            await mq.send_message("api-gateway", "blockchain-core", {"step": "open-session"}, priority="normal"),
            await mq.send_message("session-management", "blockchain-core", {"step": "alert"}, priority="critical"),
        ]
        received = []
        while (m := await mq.receive_message("blockchain-core", timeout=0.2)) is not None:
            console.print(f"  blockchain-core <- {m['source']}: {m['payload']} ({m['priority']})")
            received.append(m)
    return sent, received


def main() -> None:
    from lucid.node.demo import run_demo
    from lucid.service_mesh.policy.demo import demo as mesh_demo

    checks: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="lucid-demo-") as tmp:
        console.rule("[bold]Lucid service mesh — embedded registry")
        mesh = asyncio.run(mesh_demo("memory://lucid-demo", Path(tmp), console))
        results = {(src, dst, method): result for src, dst, method, result in mesh["calls"]}
        checks.append(("ops -> chain GET allowed (read-only plane access)",
                       results[("api-gateway", "blockchain-core", "GET")].startswith("allowed")))
        checks.append(("ops -> chain POST denied (read-only)",
                       "LUCID_ERR_1203" in results[("api-gateway", "blockchain-core", "POST")]))
        checks.append(("wallet -> chain denied", "LUCID_ERR_1203" in results[("tron-payment", "blockchain-core", "GET")]))
        checks.append(("only api-gateway may call tron-payment",
                       "LUCID_ERR_1203" in results[("node-management", "tron-payment", "POST")]
                       and results[("api-gateway", "tron-payment", "POST")].startswith("allowed")))
        states = mesh["breaker_states"]
        checks.append(("breaker opened while the service was down", "open" in states))
        checks.append(("breaker closed again after recovery", states[-1] == "closed"))

        console.rule("[bold]Lucid inter-service messages — embedded queue")
        sent, received = asyncio.run(_messages())
        checks.append(("messages delivered critical first, each once",
                       [m["payload"]["step"] for m in received] == ["alert", "open-session", "report"]
                       and sorted(m["message_id"] for m in received) == sorted(sent)))

        console.rule("[bold]Lucid node management — SQLite and the local TRON ledger")
        workdir = Path(tmp) / "nodes"
        workdir.mkdir()
        nodes = asyncio.run(run_demo(workdir, nodes=3, log=console.print))
        checks.append(("3 nodes registered, started and sent valid PoOT",
                       len(nodes["nodes"]) == 3 and all(s["is_valid"] for s in nodes["scores"].values())))
        paid = [p for p in nodes["payouts"] if p["status"] == "completed"]
        checks.append(("payout batch completed for every node", len(paid) == 3))

    table = Table("check", "result", title="Lucid checks")
    for what, ok in checks:
        table.add_row(what, "[green]ok[/green]" if ok else "[red]FAILED[/red]")
    console.print(table)
    failed = [what for what, ok in checks if not ok]
    if failed:
        console.print(f"[red]{len(failed)} check(s) failed[/red]")
        sys.exit(1)
    console.print(f"[green]all {len(checks)} checks passed[/green]")


if __name__ == "__main__":
    main()
