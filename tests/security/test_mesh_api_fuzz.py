"""Schema-driven fuzzing of the discovery API (schemathesis): no input may cause a server error."""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from backends.kv import open_kv
from lucid.service_mesh.api import create_app
from lucid.service_mesh.discovery import AsyncServiceDiscoveryClient, AsyncServiceRegistry
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider

pytestmark = pytest.mark.security

ISSUER = ServiceAuthProvider()
_KV = open_kv(f"memory://fuzz-{uuid.uuid4().hex}")
APP = create_app(AsyncServiceRegistry(_KV), AsyncServiceDiscoveryClient(_KV, cache=False),
                 ServiceAuthProvider.verifier_from_jwks(ISSUER.jwks()))
TOKEN = ISSUER.generate_service_token("admin-interface", "fuzz", "admin-interface", "ops", permissions=["mesh:admin"])
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case) -> None:
    case.call_and_validate(headers={"authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error])
