"""PostgreSQL as deployed: a role per service, each owning one database nobody else may connect to;
every TCP login needs its SCRAM password; the superuser cannot log in over TCP at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from backends.servers.postgres import PostgresServer

pytestmark = [pytest.mark.security, pytest.mark.postgres]


@pytest.fixture(scope="module")
def deployed_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(secured=True).start()
    try:
        yield server
    finally:
        server.stop()


async def _connect(server: PostgresServer, user: str, database: str, password: str | None) -> asyncpg.Connection:
    return await asyncpg.connect(host="127.0.0.1", port=server.port, user=user, database=database,
                                 password=password, timeout=10)


async def test_each_service_reaches_only_its_own_database(deployed_postgres: PostgresServer, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    witness_url = deployed_postgres.create_service_database("witness", "w-secret-1")
    deployed_postgres.create_service_database("lucid_node", "n-'quoted'-secret")  # a quote cannot inject SQL
    assert "w-secret" not in witness_url  # the password goes in PGPASSWORD or .pgpass, not the URL
    node = await _connect(deployed_postgres, "lucid_node", "lucid_node", "n-'quoted'-secret")
    await node.execute("CREATE TABLE payouts (id int)")
    await node.close()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # another service's database: no CONNECT
        await _connect(deployed_postgres, "lucid_node", "witness", "n-'quoted'-secret")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await _connect(deployed_postgres, "witness", "witness", "guess")
    with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
        await _connect(deployed_postgres, "postgres", "postgres", None)  # no superuser over TCP
    # the witness service runs on its role, the password from the environment
    monkeypatch.setenv("PGPASSWORD", "w-secret-1")
    from infrafabric.witness import Witness

    with Witness(witness_url, tmp_path / "keys", publish=()) as w:
        w.log("IF.coordinator", "role_test", {"ok": True})
        w.flush()
        assert w.verify().ok
