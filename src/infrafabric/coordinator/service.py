"""The coordinator service: the only way a swarm in another process reaches the control plane.

Why: a swarm handed the etcd and NATS addresses could read every task, complete others' work, revoke
their leases and forge blockers, whatever credentials it shared with the platform. As Temporal workers
talk to its frontend and never to its database, a swarm here holds one credential of its own
(``credentials.py``) and talks HTTP to this service, which alone holds the engines' credentials. The
service takes the swarm id from the verified credential for every call, keeps the fencing tokens on its
side, allows one live session per swarm id, and validates everything it delivers.

Routes (JSON; ``Authorization: Bearer <credential>``; after ``POST /v1/session`` also ``X-Session``):

=========================  =================================================================
``POST /v1/session``       open the swarm's session: ``{"capabilities": [...]}``
``DELETE /v1/session``     close it (``?release=false`` keeps claims until their lease expires)
``GET /v1/inbox``          pushed tasks, long-polled: ``?wait=SECONDS&max=N``; also a heartbeat
``POST /v1/heartbeat``     keep the session (and its claims) alive without polling
``POST /v1/claims``        ``{"task_ids": [...]}`` → ``{"claims": [{"task_id", "won", "revision"}]}``
``POST /v1/progress``      ``{"task_id", "progress"}`` fenced by this swarm's claim
``POST /v1/complete``      ``{"task_id", "result"}`` fenced by this swarm's claim, or
                           ``{"results": [{"task_id", "result"}, ...]}`` → one outcome per task
``POST /v1/blockers``      ``{"blocker_info": {...}}``: the event names the caller, never another swarm
``POST /v1/tasks``         operator credential only: ``{"swarm_id", "tasks": [{...}, ...]}`` pushed
                           into that swarm's inbox (an orchestrator in another process)
=========================  =================================================================

Errors answer ``{"error": {"code", "message"}}`` with the InfraFabric error code.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from backends.errors import BackendError, BackendUnavailable, LeaseNotFound
from backends.kv import Compare, Delete, Put
from backends.serving import AsgiApp, fixed_routes
from infrafabric.coordinator import keys
from infrafabric.coordinator.coordinator import IFCoordinator
from infrafabric.coordinator.core import Claim
from infrafabric.coordinator.credentials import CredentialVerifier, Identity, bearer_token
from infrafabric.coordinator.metrics import CoordinatorMetrics
from infrafabric.errors import (
    CredentialError,
    InfraFabricError,
    NotTaskOwnerError,
    PermissionDeniedError,
    StaleClaimError,
    SwarmAlreadyConnectedError,
    ValidationError,
)
from infrafabric.httpjson import json_object
from infrafabric.ids import validate_swarm_id, validate_task_id, validate_task_ids

MAX_BODY_BYTES = 1 << 20
MAX_WAIT_SECONDS = 30.0
MAX_BATCH = 1000


def session_key(swarm_id: str) -> str:
    return f"/swarms/{swarm_id}/session"


class SessionError(InfraFabricError):
    """The call names no live session of this swarm (closed, expired, or opened by someone else)."""

    error_code = "IF_ERR_NO_SESSION"
    http_status = 409


@dataclass
class Session:
    swarm_id: str
    session_id: str
    inbox: asyncio.Queue[dict[str, Any]]
    last_seen: float = field(default_factory=time.monotonic)
    claims: dict[str, Claim] = field(default_factory=dict)  # fencing tokens: never leave the service
    lease: int | None = None  # the session's lease: its claims and blockers live on it, and only on it


class SwarmGateway:
    """Sessions of remote swarms over one ``IFCoordinator`` (which holds the engines)."""

    def __init__(self, coordinator: IFCoordinator, verifier: CredentialVerifier, *,
                 session_ttl: float | None = None, metrics: CoordinatorMetrics | None = None) -> None:
        self.coordinator = coordinator
        self.verifier = verifier
        self.metrics = metrics if metrics is not None else CoordinatorMetrics()
        self.session_ttl = session_ttl if session_ttl is not None else float(coordinator.core.claim_ttl)
        self._sessions: dict[str, Session] = {}
        self._open_lock = asyncio.Lock()  # opens, closes and expiries one at a time: none sees another's half
        self._reaper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ identity and sessions
    async def identify(self, authorization: str | None, role: str = "swarm") -> Identity:
        token = bearer_token(authorization)
        if token is None:
            raise CredentialError(f"a {role} credential is required (Authorization: Bearer ...)")
        return await self.verifier.verify(token, role=role)

    def session_of(self, identity: Identity, session_id: str | None) -> Session:
        session = self._sessions.get(identity.name)
        if session is None or not session_id or not secrets.compare_digest(session.session_id, session_id):
            raise SessionError(f"no live session {session_id!r} for swarm {identity.name}")
        session.last_seen = time.monotonic()
        return session

    async def open_session(self, identity: Identity, capabilities: list[str]) -> Session:
        swarm_id = identity.name
        if swarm_id == keys.ORCHESTRATOR:  # its inbox also hears every swarm's blocker events
            raise PermissionDeniedError(f"swarm id {swarm_id!r} is the platform's own orchestrator")
        async with self._open_lock:
            if swarm_id in self._sessions:
                raise SwarmAlreadyConnectedError(f"swarm {swarm_id} already has a live session here")
            if swarm_id in self.coordinator.swarm_connections:  # a swarm registered inside this process
                raise SwarmAlreadyConnectedError(f"swarm {swarm_id} is connected to this coordinator already")
            lease = await self.coordinator.core.session_lease(swarm_id)
            session_id = secrets.token_urlsafe(24)
            key = session_key(swarm_id)
            res = await self.coordinator.kv.txn([Compare.missing(key)], [Put(key, session_id, lease)])
            if not res.succeeded:  # another replica (or an earlier life) holds a live session
                await self.coordinator.core.end_session(swarm_id, release=False)
                self.coordinator.core.audit("swarm_session_refused", {"swarm_id": swarm_id, "jti": identity.jti},
                                            "WARN")
                raise SwarmAlreadyConnectedError(
                    f"swarm {swarm_id} already has a live session; it ends when that one closes or expires")
            try:
                inbox = await self.coordinator.register_swarm(swarm_id, capabilities)
            except BaseException:
                await self.coordinator.kv.delete(key)
                await self.coordinator.core.end_session(swarm_id, release=False)
                raise
            session = Session(swarm_id, session_id, inbox, lease=lease)
            self._sessions[swarm_id] = session
            self.metrics.sessions.set(len(self._sessions))
        self.coordinator.core.audit("swarm_session_opened", {"swarm_id": swarm_id, "jti": identity.jti})
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap())
        return session

    async def close_session(self, session: Session, *, release: bool) -> None:
        """End the session: its inbox, its lease (with ``release``, its claims free up now; without, when the
        lease expires) and its key. The lease stops being kept even if closing the inbox fails (the error is
        raised after), and the key is deleted only while it still names this session."""
        async with self._open_lock:
            if not self._drop(session):
                return
            try:
                if release:
                    await self.coordinator.deregister_swarm(session.swarm_id, release_claims=True)
                else:
                    await self.coordinator.abandon_swarm(session.swarm_id)
            finally:
                key = session_key(session.swarm_id)
                await self.coordinator.kv.txn([Compare.value(key, session.session_id)], [Delete(key)])

    def _drop(self, session: Session) -> bool:
        """Forget a live session here (False if it is not the live one any more)."""
        if self._sessions.get(session.swarm_id) is not session:
            return False
        del self._sessions[session.swarm_id]
        self.metrics.sessions.set(len(self._sessions))
        for task_id in list(session.claims):
            self.coordinator.core.claims.pop(task_id, None)
        return True

    async def _abandon(self, session: Session) -> None:
        """The session is over without a close (silent, or its lease gone): stop keeping its lease."""
        async with self._open_lock:
            if self._drop(session):
                await self.coordinator.abandon_swarm(session.swarm_id)

    async def _reap(self) -> None:
        """A session not heard from for its TTL is abandoned: its lease (and claims) expire as a crash's.
        A failure to abandon one (the bus away) is audited and never stops the reaper."""
        while True:
            await asyncio.sleep(max(self.session_ttl / 4, 0.05))
            now = time.monotonic()
            for session in list(self._sessions.values()):
                if now - session.last_seen > self.session_ttl:
                    self.coordinator.core.audit("swarm_session_expired", {"swarm_id": session.swarm_id}, "WARN")
                    try:
                        await self._abandon(session)
                    except Exception as exc:  # noqa: BLE001 - its lease is not kept either way (abandon_swarm)
                        self.coordinator.core.audit("swarm_session_expiry_failed", {
                            "swarm_id": session.swarm_id, "error": type(exc).__name__}, "WARN")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for session in list(self._sessions.values()):
            await self.close_session(session, release=False)

    # ------------------------------------------------------------------ work
    async def inbox(self, session: Session, wait: float, limit: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        deadline = time.monotonic() + wait
        while len(items) < limit:
            try:
                items.append(session.inbox.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if items or remaining <= 0:
                break
            try:
                items.append(await asyncio.wait_for(session.inbox.get(), min(remaining, self.session_ttl / 2)))
            except asyncio.TimeoutError:
                session.last_seen = time.monotonic()  # a poll that waits is alive
        session.last_seen = time.monotonic()
        return items

    async def claim(self, session: Session, task_ids: list[str]) -> list[Claim | None]:
        core = self.coordinator.core
        started = time.perf_counter()
        # one task: one transaction (the batch path gathers its transactions, which costs a single one more)
        try:
            claims = [await core.claim(session.swarm_id, task_ids[0], lease=session.lease)] \
                if len(task_ids) == 1 else await core.claim_many(session.swarm_id, task_ids, lease=session.lease)
        except LeaseNotFound:
            raise await self._lost(session) from None
        self.metrics.claim_seconds.observe(time.perf_counter() - started)
        won = 0
        for claim in claims:
            if claim is not None:
                session.claims[claim.task_id] = claim
                won += 1
        self.metrics.claims.labels("won").inc(won)
        self.metrics.claims.labels("lost").inc(len(claims) - won)
        return claims

    async def _lost(self, session: Session) -> SessionError:
        """The session's lease is gone (closed meanwhile, or expired): so is the session."""
        await self._abandon(session)
        return SessionError(f"the session of {session.swarm_id} ended (closed, or its lease expired)")

    def _claim_for(self, session: Session, task_id: str) -> Claim:
        validate_task_id(task_id)
        claim = session.claims.get(task_id)
        if claim is None:
            self.coordinator.core.audit("foreign_task_write_refused", {"swarm_id": session.swarm_id,
                                                                       "task_id": task_id}, "WARN")
            raise NotTaskOwnerError(f"{session.swarm_id} holds no claim on task {task_id}")
        return claim

    async def complete(self, session: Session, task_id: str, result: Any) -> int:
        claim = self._claim_for(session, task_id)
        revision = await self.coordinator.core.complete(session.swarm_id, task_id, result, claim)
        session.claims.pop(task_id, None)
        self.metrics.completed.inc()
        return revision

    async def progress(self, session: Session, task_id: str, progress: Any) -> int:
        return await self.coordinator.core.update_progress(session.swarm_id, task_id, progress,
                                                           self._claim_for(session, task_id))

    async def report_blocker(self, session: Session, blocker_info: Any) -> dict[str, Any]:
        if not isinstance(blocker_info, dict):
            raise ValidationError("blocker_info must be an object")
        try:
            event = await self.coordinator.core.report_blocker(session.swarm_id, blocker_info, lease=session.lease)
        except LeaseNotFound:
            raise await self._lost(session) from None
        self.metrics.blockers.inc()
        return event

    async def push(self, operator: Identity, swarm_id: str, tasks: list[dict[str, Any]]) -> int:
        """An operator's orchestrator pushes work into one swarm's inbox (audited with the operator's name)."""
        validate_swarm_id(swarm_id)
        pushed = await self.coordinator.push_tasks_to_swarm(swarm_id, tasks)
        self.metrics.pushed.inc(pushed)
        self.coordinator.core.audit("tasks_pushed_by_operator", {"operator": operator.name, "swarm_id": swarm_id,
                                                                 "tasks": pushed})
        return pushed


# ---------------------------------------------------------------------- HTTP


def _error(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="infrafabric"'} if status == 401 else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def _body(request: Request) -> dict[str, Any]:
    return await json_object(request, MAX_BODY_BYTES)


Handler = Callable[[SwarmGateway, Request, Identity], Awaitable[Any]]


def _route(gateway: SwarmGateway, handler: Handler, role: str = "swarm") -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            identity = await gateway.identify(request.headers.get("authorization"), role)
            answer = await handler(gateway, request, identity)
            return answer if isinstance(answer, Response) else JSONResponse(answer)
        except InfraFabricError as exc:
            status = exc.http_status
            gateway.metrics.refused.labels(exc.error_code).inc()
            if status in (401, 403):
                gateway.coordinator.core.audit("swarm_call_refused", {
                    "path": request.url.path, "error_code": exc.error_code}, "WARN")
            return _error(status, exc.error_code, exc.message)
        except (TypeError, ValueError) as exc:
            return _error(400, "IF_ERR_VALIDATION", str(exc))
        except BackendUnavailable as exc:
            return _error(503, getattr(exc, "error_code", "IF_ERR_UNAVAILABLE"), str(exc))
        except BackendError as exc:
            return _error(503, getattr(exc, "error_code", "IF_ERR_BACKEND"), str(exc))

    return endpoint


def _session(gateway: SwarmGateway, request: Request, identity: Identity) -> Session:
    return gateway.session_of(identity, request.headers.get("x-session"))


async def _open(gateway: SwarmGateway, request: Request, identity: Identity) -> Any:
    body = await _body(request)
    caps = body.get("capabilities", [])
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps) or len(caps) > 256:
        raise ValidationError("capabilities must be a list of at most 256 strings")
    session = await gateway.open_session(identity, caps)
    return {"swarm_id": session.swarm_id, "session": session.session_id, "ttl": gateway.session_ttl}


async def _close(gateway: SwarmGateway, request: Request, identity: Identity) -> Any:
    session = _session(gateway, request, identity)
    release = request.query_params.get("release", "true") != "false"
    await gateway.close_session(session, release=release)
    return {"closed": True}


def _number(text: str | None, default: float, low: float, high: float, name: str) -> float:
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValidationError(f"{name} must be a number") from None
    if not low <= value <= high:
        raise ValidationError(f"{name} must be from {low} to {high}")
    return value


async def _inbox(gateway: SwarmGateway, request: Request, identity: Identity) -> Any:
    session = _session(gateway, request, identity)
    wait = _number(request.query_params.get("wait"), 0.0, 0.0, MAX_WAIT_SECONDS, "wait")
    limit = int(_number(request.query_params.get("max"), 100, 1, MAX_BATCH, "max"))
    return {"tasks": await gateway.inbox(session, wait, limit)}


async def _heartbeat(gateway: SwarmGateway, request: Request, identity: Identity) -> Any:
    _session(gateway, request, identity)
    return {"ok": True}


async def _claims(gateway: SwarmGateway, request: Request, identity: Identity) -> Any:
    session = _session(gateway, request, identity)
    task_ids = (await _body(request)).get("task_ids")
    if not isinstance(task_ids, list) or not 1 <= len(task_ids) <= MAX_BATCH:
        raise ValidationError(f"task_ids must be a list of 1 to {MAX_BATCH} task ids")
    validate_task_ids(task_ids)
    claims = await gateway.claim(session, task_ids)
    return {"claims": [{"task_id": t, "won": c is not None, "revision": c.revision if c else None}
                       for t, c in zip(task_ids, claims)]}


async def _complete(gateway: SwarmGateway, request: Request, identity: Identity) -> Any:
    session = _session(gateway, request, identity)
    body = await _body(request)
    if "results" not in body:
        return {"revision": await gateway.complete(session, body.get("task_id"), body.get("result"))}  # type: ignore[arg-type]
    results = body["results"]
    if not isinstance(results, list) or not 1 <= len(results) <= MAX_BATCH or \
            not all(isinstance(r, dict) for r in results):
        raise ValidationError(f"results must be a list of 1 to {MAX_BATCH} objects")
    validate_task_ids([r.get("task_id") for r in results])

    async def one(item: dict[str, Any]) -> dict[str, Any]:  # each its own fenced write, all sent at once
        try:
            return {"task_id": item["task_id"],
                    "revision": await gateway.complete(session, item["task_id"], item.get("result"))}
        except InfraFabricError as exc:
            return {"task_id": item["task_id"], "error": {"code": exc.error_code, "message": exc.message}}

    return {"outcomes": await asyncio.gather(*(one(r) for r in results))}


async def _progress(gateway: SwarmGateway, request: Request, identity: Identity) -> Any:
    session = _session(gateway, request, identity)
    body = await _body(request)
    return {"revision": await gateway.progress(session, body.get("task_id"), body.get("progress"))}  # type: ignore[arg-type]


async def _blockers(gateway: SwarmGateway, request: Request, identity: Identity) -> Any:
    session = _session(gateway, request, identity)
    return await gateway.report_blocker(session, (await _body(request)).get("blocker_info"))


async def _push(gateway: SwarmGateway, request: Request, identity: Identity) -> Any:
    body = await _body(request)
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not 1 <= len(tasks) <= MAX_BATCH or not all(isinstance(t, dict) for t in tasks):
        raise ValidationError(f"tasks must be a list of 1 to {MAX_BATCH} objects")
    swarm_id = body.get("swarm_id")
    if not isinstance(swarm_id, str):
        raise ValidationError("swarm_id must be a string")
    return {"pushed": await gateway.push(identity, swarm_id, tasks)}


def create_app(gateway: SwarmGateway) -> AsgiApp:
    """The swarm API: its fixed routes, each answering the error envelope for every failure."""
    return fixed_routes({
        (path, method): _route(gateway, handler, role)
        for path, method, handler, role in (
            ("/v1/session", "POST", _open, "swarm"), ("/v1/session", "DELETE", _close, "swarm"),
            ("/v1/inbox", "GET", _inbox, "swarm"), ("/v1/heartbeat", "POST", _heartbeat, "swarm"),
            ("/v1/claims", "POST", _claims, "swarm"), ("/v1/complete", "POST", _complete, "swarm"),
            ("/v1/progress", "POST", _progress, "swarm"), ("/v1/blockers", "POST", _blockers, "swarm"),
            ("/v1/tasks", "POST", _push, "operator"))}, _error)


__all__ = ["PermissionDeniedError", "Session", "SessionError", "StaleClaimError", "SwarmGateway", "create_app",
           "session_key"]
