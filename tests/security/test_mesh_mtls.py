"""mTLS: certificate checks of the seed (1203/1204) and a live handshake on loopback."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from lucid.service_mesh.errors import MTLSVerificationError
from lucid.service_mesh.security.cert_manager import CertificateManager
from lucid.service_mesh.security.mtls_manager import MTLSManager

pytestmark = pytest.mark.security


def test_valid_certificate_accepted(cert_manager: CertificateManager) -> None:
    mtls_manager = MTLSManager(cert_manager)
    cert_path, _ = cert_manager.generate_service_certificate("api-gateway", "test-id", "api-gateway", "ops")
    identity = mtls_manager.verify_client_certificate(cert_path, allowed_planes=["ops"], allowed_clusters=["api-gateway"])
    assert identity["verified"] is True
    assert identity["serviceName"] == "api-gateway"
    assert identity["plane"] == "ops"
    assert identity["cluster"] == "api-gateway"
    assert identity["spiffeId"] == "spiffe://lucid.onion/ops/api-gateway/api-gateway"


def test_wrong_plane_rejected(cert_manager: CertificateManager) -> None:
    mtls_manager = MTLSManager(cert_manager)
    cert_path, _ = cert_manager.generate_service_certificate("blockchain-core", "test-id", "blockchain-core", "chain")
    with pytest.raises(MTLSVerificationError) as exc_info:
        mtls_manager.verify_client_certificate(cert_path, allowed_planes=["ops"], allowed_clusters=["blockchain-core"])
    assert exc_info.value.error_code == "LUCID_ERR_1203"


def test_wrong_cluster_rejected(cert_manager: CertificateManager) -> None:
    mtls_manager = MTLSManager(cert_manager)
    cert_path, _ = cert_manager.generate_service_certificate("node-management", "n", "node-management", "ops")
    with pytest.raises(MTLSVerificationError) as exc_info:
        mtls_manager.verify_client_certificate(cert_path, allowed_planes=["ops"], allowed_clusters=["api-gateway"])
    assert exc_info.value.error_code == "LUCID_ERR_1203"


def test_expired_certificate_rejected(cert_manager: CertificateManager) -> None:
    mtls_manager = MTLSManager(cert_manager)
    cert_path, _ = cert_manager.generate_service_certificate("api-gateway", "test-id", "api-gateway", "ops",
                                                             validity_days=-1)
    with pytest.raises(MTLSVerificationError) as exc_info:
        mtls_manager.verify_client_certificate(cert_path, allowed_planes=["ops"], allowed_clusters=["api-gateway"])
    assert exc_info.value.error_code == "LUCID_ERR_1204"


def test_untrusted_certificate_rejected_1204(cert_manager: CertificateManager, tmp_path: Path) -> None:
    rogue = CertificateManager(str(tmp_path / "r" / "ca.crt"), str(tmp_path / "r" / "ca.key"), str(tmp_path / "r" / "c"),
                               root_key_size=2048, intermediate_key_size=2048)
    cert_path, _ = rogue.generate_service_certificate("api-gateway", "x", "api-gateway", "ops")
    with pytest.raises(MTLSVerificationError) as exc_info:
        MTLSManager(cert_manager).verify_client_certificate(cert_path, allowed_planes=["ops"])
    assert exc_info.value.error_code == "LUCID_ERR_1204"


async def _serve_once(server_ctx: ssl.SSLContext):
    seen: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            seen.set_result(MTLSManager.peer_identity(writer.get_extra_info("ssl_object")))
            writer.write(b"ok")
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=server_ctx)
    return server, server.sockets[0].getsockname()[1], seen


async def test_live_handshake_reads_peer_spiffe_identity(cert_manager: CertificateManager) -> None:
    mtls = MTLSManager(cert_manager)
    srv_cert = cert_manager.generate_service_certificate("blockchain-core", "b1", "blockchain-core", "chain")
    cli_cert = cert_manager.generate_service_certificate("api-gateway", "g1", "api-gateway", "ops")
    server, port, seen = await _serve_once(mtls.server_context(*srv_cert))
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=mtls.client_context(*cli_cert),
            server_hostname=MTLSManager.server_hostname("blockchain-core"),
        )
        server_ident = MTLSManager.peer_identity(writer.get_extra_info("ssl_object"))
        assert await reader.read() == b"ok"
        writer.close()
        client_ident = await asyncio.wait_for(seen, 5)
    assert client_ident.spiffe_id == "spiffe://lucid.onion/ops/api-gateway/api-gateway"
    assert server_ident.spiffe_id == "spiffe://lucid.onion/chain/blockchain-core/blockchain-core"


async def _handshake_fails(port: int, ctx: ssl.SSLContext, hostname: str) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=hostname)
        # TLS 1.3: a refused client certificate surfaces on the first read
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        if not data:
            raise ConnectionError("server closed the connection")


async def test_client_without_certificate_is_refused(cert_manager: CertificateManager) -> None:
    mtls = MTLSManager(cert_manager)
    server, port, seen = await _serve_once(mtls.server_context(*cert_manager.generate_service_certificate(
        "blockchain-core", "b1", "blockchain-core", "chain")))
    anonymous = ssl.create_default_context(cafile=cert_manager.trust_bundle_path)
    async with server:
        await _handshake_fails(port, anonymous, "blockchain-core.lucid.internal")
    assert not seen.done()


async def test_client_from_foreign_ca_is_refused(cert_manager: CertificateManager, tmp_path: Path) -> None:
    mtls = MTLSManager(cert_manager)
    rogue_ca = CertificateManager(str(tmp_path / "r" / "ca.crt"), str(tmp_path / "r" / "ca.key"),
                                  str(tmp_path / "r" / "c"), root_key_size=2048, intermediate_key_size=2048)
    rogue_cert = rogue_ca.generate_service_certificate("api-gateway", "g1", "api-gateway", "ops")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cert_manager.trust_bundle_path)  # trusts our server...
    ctx.load_cert_chain(*rogue_cert)  # ...but presents a certificate of another CA
    server, port, seen = await _serve_once(mtls.server_context(*cert_manager.generate_service_certificate(
        "blockchain-core", "b1", "blockchain-core", "chain")))
    async with server:
        await _handshake_fails(port, ctx, "blockchain-core.lucid.internal")
    assert not seen.done()


async def test_expired_client_certificate_is_refused(cert_manager: CertificateManager) -> None:
    mtls = MTLSManager(cert_manager)
    expired = cert_manager.generate_service_certificate("api-gateway", "g1", "api-gateway", "ops", validity_days=-1)
    server, port, seen = await _serve_once(mtls.server_context(*cert_manager.generate_service_certificate(
        "blockchain-core", "b1", "blockchain-core", "chain")))
    async with server:
        await _handshake_fails(port, mtls.client_context(*expired), "blockchain-core.lucid.internal")
    assert not seen.done()


async def test_client_refuses_server_with_wrong_name(cert_manager: CertificateManager) -> None:
    mtls = MTLSManager(cert_manager)
    impostor = cert_manager.generate_service_certificate("session-management", "s1", "session-management", "ops")
    client = cert_manager.generate_service_certificate("api-gateway", "g1", "api-gateway", "ops")
    server, port, _ = await _serve_once(mtls.server_context(*impostor))
    async with server:
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", port, ssl=mtls.client_context(*client),
                                          server_hostname=MTLSManager.server_hostname("tron-payment"))
