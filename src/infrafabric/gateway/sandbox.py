"""Model calls from sandboxed code take the gateway's path: the chassis' scoped credentials for a task
name only the gateway, with a short-lived credential of the task's swarm as the token. The host injects
it (the guest never sees it), the gateway meters the call against the swarm's budget, and the provider's
key stays with the gateway. A guest cannot reach a provider directly: it is not on the allow-list."""

from __future__ import annotations

from infrafabric.chassis import ScopedCredentials
from infrafabric.coordinator.credentials import CredentialAuthority


def model_call_credentials(authority: CredentialAuthority, swarm_id: str, task_id: str, gateway_url: str,
                           ttl_seconds: int = 300) -> ScopedCredentials:
    base = gateway_url.rstrip("/")
    token = authority.issue("swarm", swarm_id, ttl_seconds)
    return ScopedCredentials(swarm_id=swarm_id, task_id=task_id, api_token=token, ttl_seconds=ttl_seconds,
                             allowed_endpoints=[f"{base}/v1/chat/completions", f"{base}/v1/embeddings",
                                                f"{base}/v1/messages"])
