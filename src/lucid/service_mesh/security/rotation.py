"""Certificate renewal before expiry, with live TLS contexts reloaded in place.

``ssl.SSLContext.load_cert_chain`` may be called again on a context in use: new handshakes present the
new certificate, established connections keep theirs. So a workload renews without restarting.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence

from backends.periodic import Periodic
from lucid.service_mesh.security.cert_manager import CertificateManager

log = logging.getLogger(__name__)


class CertificateRenewer:
    """Checks one certificate every ``check_interval`` seconds; renews it inside the renewal window."""

    def __init__(self, cert_manager: CertificateManager, cert_path: str, contexts: Sequence[ssl.SSLContext] = (),
                 *, validity_days: int = 90, check_interval: float = 3600.0) -> None:
        self.cert_manager = cert_manager
        self.cert_path = cert_path
        self.contexts = list(contexts)
        self.validity_days = validity_days
        self.check_interval = check_interval
        self.renewals = 0
        self._loop = Periodic(self._check, lambda: self.check_interval, name="cert-renewer", first_delay=0,
                              logger=log)

    def check_once(self) -> bool:
        """Renew and reload when due; returns whether it renewed."""
        if not self.cert_manager.needs_renewal(self.cert_path):
            return False
        cert, key = self.cert_manager.renew_certificate(self.cert_path, self.validity_days)
        for ctx in self.contexts:
            ctx.load_cert_chain(cert, key)
        self.renewals += 1
        log.info("renewed %s", cert)
        return True

    def start(self) -> "CertificateRenewer":
        self._loop.start()
        return self

    async def _check(self) -> None:
        await asyncio.to_thread(self.check_once)  # key generation is CPU work: keep it off the event loop

    async def stop(self) -> None:
        await self._loop.stop()
