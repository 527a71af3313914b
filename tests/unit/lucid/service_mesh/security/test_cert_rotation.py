"""Renewal before expiry on a live service: new handshakes present the renewed certificate."""

from __future__ import annotations

import asyncio

from cryptography import x509

from lucid.service_mesh.security.cert_manager import CertificateManager
from lucid.service_mesh.security.mtls_manager import MTLSManager
from lucid.service_mesh.security.rotation import CertificateRenewer


async def _server_serial(port: int, client_ctx) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                   server_hostname="blockchain-core.lucid.internal")
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der).serial_number


async def test_renewer_reloads_live_server_context(cert_manager: CertificateManager) -> None:
    mtls = MTLSManager(cert_manager)
    cert, key = cert_manager.generate_service_certificate("blockchain-core", "b1", "blockchain-core", "chain",
                                                          validity_days=10)  # inside the 30-day window
    server_ctx = mtls.server_context(cert, key)
    client_ctx = mtls.client_context(*cert_manager.generate_service_certificate("api-gateway", "g", "api-gateway",
                                                                                "ops"))

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        before = await _server_serial(port, client_ctx)
        renewer = CertificateRenewer(cert_manager, cert, [server_ctx], check_interval=0.05).start()
        try:
            for _ in range(200):
                if renewer.renewals:
                    break
                await asyncio.sleep(0.05)
        finally:
            await renewer.stop()
        assert renewer.renewals == 1  # renewed once, then out of the window
        after = await _server_serial(port, client_ctx)
    assert after != before
    assert cert_manager.needs_renewal(cert) is False
    assert renewer.check_once() is False
