"""The two hot routes (node creation, PoOT validation) served without FastAPI's per-request machinery.

Why: on this 2-core machine FastAPI's routing, dependency solving and request parsing cost ~0.35 ms of
CPU per request (a bare FastAPI endpoint: ~0.4 ms; the same answer as a plain ASGI callable under uvicorn:
~0.1 ms), more than the work of creating a node or scoring a proof. A hundred concurrent creations queue
on that CPU, so their p95 was about twice the issue's 50 ms.

What stays the same: the pydantic models validate the body (parsed with ``json.loads`` as Starlette does,
then ``model_validate`` as FastAPI does), the route functions' own work is shared (``answer_*`` in the
route modules), authentication, permissions and rate limits are the same calls, errors are the same
envelopes, and the FastAPI routes still exist: they describe the API in OpenAPI and serve every request
this path does not take. RequestContextMiddleware (request id, metrics, access log, body size) wraps both.

The rule that keeps the two paths from disagreeing: this path answers only a request that FastAPI would
take past authentication, authorisation and body validation. Anything else (no or bad token, a missing
permission, an unexpected content type, a body or path that does not validate) is handed to FastAPI
untouched, its body replayed, *before* anything with an effect happened here, so FastAPI's answer is the
one given and the rate limiter counts the request once. Tests compare the two paths' answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel

from ..errors import NodeManagementError
from ..models.node_models import NodeCreateRequest
from ..models.poot_models import PoOTValidationRequest
from . import routes_nodes, routes_poot
from .auth import Principal
from .container import NodeContainer
from .deps import bearer_token, charge_rate_limits
from .errors import domain_error_response

__all__ = ["HotRouteMiddleware"]

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# /api/v1/nodes/{node_id}/poot/validate with NodeIdPath's own constraints (8-64 characters, the pattern)
_POOT_PATH = re.compile(r"/api/v1/nodes/(node_[a-zA-Z0-9_-]{3,59})/poot/validate")


@dataclass(frozen=True, slots=True)
class _Hot:
    route: Any  # the FastAPI route it stands in for (scope["route"]: metrics and logs label by its path)
    permission: str
    model: type[BaseModel]
    answer: Callable[[NodeContainer, Principal, str | None, Any], Awaitable[Response]]


def _route(router: Any, path: str) -> Any:
    return next(r for r in router.routes if getattr(r, "path", None) == path and "POST" in r.methods)


_CREATE = _Hot(route=_route(routes_nodes.collection_router, "/api/v1/nodes"),
               permission=routes_nodes.CREATE_NODE_PERMISSION, model=NodeCreateRequest,
               answer=lambda c, p, _node_id, body: routes_nodes.answer_create_node(c, p, body))
_VALIDATE = _Hot(route=_route(routes_poot.router, "/api/v1/nodes/{node_id}/poot/validate"),
                 permission=routes_poot.VALIDATE_PERMISSION, model=PoOTValidationRequest,
                 answer=lambda c, p, node_id, body: routes_poot.answer_validate(c, p, node_id or "", body))


def _is_json(content_type: bytes | None) -> bool:
    """What FastAPI parses as JSON: no content type, or application/json or application/*+json."""
    if content_type is None:
        return True
    mime = content_type.split(b";", 1)[0].strip().lower()
    return mime == b"application/json" or (mime.startswith(b"application/") and mime.endswith(b"+json"))


class HotRouteMiddleware:
    """Serves the hot routes' accepted requests directly; everything else goes to ``app`` (FastAPI)."""

    def __init__(self, app: Any, container: NodeContainer) -> None:
        self.app = app
        self.container = container
        self.served = 0  # requests answered here, and handed to FastAPI (tests read both)
        self.handed_over = 0

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        node_id: str | None = None
        if path == "/api/v1/nodes":
            hot = _CREATE
        elif path.endswith("/poot/validate") and (m := _POOT_PATH.fullmatch(path)) is not None:
            hot, node_id = _VALIDATE, m.group(1)
        else:
            await self.app(scope, receive, send)
            return
        messages, body, complete = await _read_body(receive)
        request = self._accepted(scope, hot, node_id, body) if complete else None
        if request is None:
            self.handed_over += 1
            await self.app(scope, _replay(messages, receive), send)
            return
        principal, model = request
        self.served += 1
        scope["route"] = hot.route
        c = self.container
        try:
            charge_rate_limits(c, principal, path)
            response = await hot.answer(c, principal, node_id, model)
        except NodeManagementError as exc:
            response = domain_error_response(exc)
        await response(scope, receive, send)

    def _accepted(self, scope: dict[str, Any], hot: _Hot, node_id: str | None,
                  body: bytes) -> tuple[Principal, BaseModel] | None:
        """The principal and the validated body if FastAPI would accept the request; None otherwise.
        Nothing here has an effect (the verifier's cache of verified tokens aside)."""
        authorization: bytes | None = None
        content_type: bytes | None = None
        for k, v in scope["headers"]:  # the first of a repeated header, as Starlette's headers.get()
            if k == b"authorization" and authorization is None:
                authorization = v
            elif k == b"content-type" and content_type is None:
                content_type = v
        if authorization is None:
            return None
        token = bearer_token(authorization.decode("latin-1"))
        if token is None or not body or not _is_json(content_type):
            return None
        try:
            principal = self.container.verifier.verify(token)
            principal.require(hot.permission)
            if node_id is not None:
                principal.require_node(node_id)
            return principal, hot.model.model_validate(json.loads(body))
        except (NodeManagementError, ValueError, RecursionError):
            # auth and permission errors; pydantic's, JSON's and Unicode's are ValueErrors; a body nested
            # past the parser's recursion limit is RecursionError. FastAPI answers each with its envelope.
            return None


async def _read_body(receive: Receive) -> tuple[list[Message], bytes, bool]:
    """The request's messages (to replay if FastAPI takes over), its body, and whether it is whole (False:
    the client went away). The size limit is RequestContextMiddleware's: its ``receive`` raises past it."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, b"", False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, b"".join(chunks), True


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives back what was already read, then reads on."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
