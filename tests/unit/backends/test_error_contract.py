"""The one error contract: every public error class of the project derives from ``PlatformError`` and keeps
its promises (a stable code, a message, details, an HTTP status, ``str()`` as ``CODE: message``).

The classes are found by importing every module of the four packages, so an error class added anywhere
without the base fails here rather than in a client that catches ``PlatformError``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.errors import PlatformError, RateLimited

PACKAGES = ("backends", "infrafabric", "lucid", "stack")
# Private control-flow signals that never leave their module, and a framework exception Starlette handles.
NOT_PLATFORM = {"backends.http_server._Refused",
                "infrafabric.chassis.sandbox._HostAbort", "infrafabric.coordinator.http1._ProtocolError",
                "infrafabric.witness.store.sqlite_append._HeadMoved", "lucid.node.api.observability.BodyTooLarge",
                "lucid.service_mesh.policy.mesh_client._StaleConnection"}


def _project_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for obj in vars(module).values():
                if inspect.isclass(obj) and issubclass(obj, BaseException) and \
                        obj.__module__.split(".")[0] in PACKAGES:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


EXCEPTIONS = _project_exceptions()
PLATFORM = sorted((name, cls) for name, cls in EXCEPTIONS.items() if name not in NOT_PLATFORM)


def test_every_public_error_class_is_a_platform_error() -> None:
    assert len(PLATFORM) > 100  # the walk found the project's errors, not an empty package
    outside = [name for name, cls in PLATFORM if not issubclass(cls, PlatformError)]
    assert outside == []
    assert NOT_PLATFORM <= set(EXCEPTIONS)  # the exceptions listed still exist (else drop them from the list)


@pytest.mark.parametrize("name,cls", PLATFORM, ids=[name for name, _ in PLATFORM])
def test_each_error_class_keeps_the_contract(name: str, cls: type[PlatformError]) -> None:
    assert re.fullmatch(r"[A-Z][A-Z0-9_]+", cls.error_code), cls.error_code
    assert 400 <= cls.http_status <= 599
    params = list(inspect.signature(cls).parameters.values())
    required = [p.name for p in params[1:] if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if params[0].name != "message" or required:  # it needs more than a message (retry_after, amounts...)
        return
    exc = cls("what happened")
    assert exc.message == "what happened" and isinstance(exc.details, dict)
    assert str(exc) == f"{exc.error_code}: what happened"


@given(message=st.text(max_size=200), code=st.from_regex(r"[A-Z][A-Z0-9_]{2,30}", fullmatch=True),
       details=st.dictionaries(st.text(max_size=10), st.integers(), max_size=5))
def test_a_code_named_by_the_call_wins_and_nothing_is_lost(message: str, code: str, details: dict[str, int]) -> None:
    exc = PlatformError(message, code, details)
    assert exc.error_code == code and exc.details == details and exc.details is not details
    assert exc.message == (message or PlatformError.default_message)
    assert str(exc) == f"{code}: {exc.message}"
    assert type(exc).error_code == "PLATFORM_ERROR"  # the class's code is untouched


def test_rate_limit_refusals_of_every_system_are_caught_as_one() -> None:
    from infrafabric.chassis.errors import RateLimitExceeded
    from infrafabric.gateway.app import RateLimitedError as GatewayRateLimited
    from lucid.node.errors import RateLimitExceededError
    from lucid.service_mesh.errors import RateLimitedError as MeshRateLimited

    refusals = [RateLimitExceeded("x", retry_after=1.5), GatewayRateLimited("x", retry_after=2),
                RateLimitExceededError(3), MeshRateLimited("x", 4)]
    assert [r.retry_after for r in refusals] == [1.5, 2, 3, 4]
    assert all(isinstance(r, RateLimited) and r.http_status == 429 for r in refusals)
    assert {r.error_code for r in refusals} == {"IF_ERR_CHASSIS_RATE_LIMITED", "IF_ERR_RATE_LIMITED",
                                                "LUCID_ERR_4291"}  # each system keeps its spec's code


def test_a_code_given_per_call_carries_its_own_status() -> None:
    from infrafabric.errors import InfraFabricError, ValidationError

    assert InfraFabricError("x", error_code="IF_ERR_UPSTREAM_TIMEOUT").http_status == 504
    assert InfraFabricError("x").http_status == 500
    assert ValidationError("x", error_code="IF_ERR_INVALID_POLICY").http_status == 400
