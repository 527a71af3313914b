"""RemoteSwarmClient: a swarm in another process, holding only its own credential.

It speaks to the coordinator service (``service.py``) over HTTP(S); it never sees an engine URL, a
lease or a fencing token. Pushed tasks arrive by long-polling the inbox, which is also the session's
heartbeat: if the process dies, the service stops hearing from it and its claims expire with its lease.
Requests go through a small pooled HTTP/1.1 client (``http1.py``, see there why); an httpx transport can
be given instead (tests run the service in process with ``httpx.ASGITransport``).
"""

from __future__ import annotations

import asyncio
import json as _json
import os
import ssl
from typing import Any, NamedTuple

import httpx

from infrafabric.coordinator.http1 import HTTPError, Http1Pool
from infrafabric.coordinator.credentials import read_credential
from infrafabric.errors import InfraFabricError, ValidationError, error_from_envelope


# Errors after which polling again cannot help: the credential or the session is gone for good.
_FINAL = frozenset({"IF_ERR_AUTH_INVALID", "IF_ERR_AUTH_EXPIRED", "IF_ERR_AUTH_REVOKED", "IF_ERR_FORBIDDEN",
                    "IF_ERR_NO_SESSION", "IF_ERR_VALIDATION"})
_POLL_BACKOFF = (0.05, 1.0)  # first and longest pause between polls that failed for a passing reason


class RemoteClaim(NamedTuple):
    """A won claim as the swarm sees it: the fencing token itself stays in the service."""

    task_id: str
    swarm_id: str
    revision: int


def raise_for_envelope(status: int, body: bytes) -> None:
    if status < 400:
        return
    try:
        error = _json.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "IF_ERR_UNAVAILABLE", f"coordinator answered {status}"
    raise error_from_envelope(code, message, status)


class _HttpxTransport:
    """The same request shape over an httpx transport (in-process tests: ``httpx.ASGITransport``)."""

    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport, headers: dict[str, str],
                 timeout: float) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, transport=transport, headers=headers, timeout=timeout)

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json_body: Any = None,
                      content: bytes | None = None, headers: dict[str, str] | None = None,
                      timeout: float | None = None) -> tuple[int, bytes]:
        response = await self._client.request(method, path, params=params, json=json_body, content=content,
                                              headers=headers, timeout=timeout)
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self._client.aclose()


class RemoteSwarmClient:
    """Same methods as ``SwarmClient`` (start, next_task, claim, claim_many, complete, progress,
    report_blocker, stop), through the coordinator service."""

    def __init__(self, service_url: str, capabilities: list[str], *, credential: str | None = None,
                 credential_file: str | os.PathLike[str] | None = None, ca_file: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, timeout: float = 10.0,
                 poll_wait: float = 5.0, queue_maxsize: int = 100_000) -> None:
        if credential is None:
            if credential_file is None:
                raise ValidationError("a swarm credential (or credential_file) is required")
            credential = read_credential(credential_file)
        self.capabilities = list(capabilities)
        self.swarm_id: str | None = None
        self._session: str | None = None
        self._poll_wait = poll_wait
        headers = {"Authorization": f"Bearer {credential}"}
        self._timeout = timeout
        self._http: Http1Pool | _HttpxTransport = _HttpxTransport(service_url, transport, headers, timeout) \
            if transport is not None else Http1Pool(
                service_url, headers=headers, timeout=timeout,
                ssl_context=ssl.create_default_context(cafile=ca_file) if ca_file else None)
        self.tasks: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_maxsize)
        self._poller: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        self.transient_errors = 0  # polls that failed for a passing reason and were retried

    async def _call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                    content: bytes | None = None, timeout: float | None = None) -> Any:
        headers = {"X-Session": self._session} if self._session else {}
        try:
            status, body = await self._http.request(method, path, params=params, json_body=json, content=content,
                                                    headers=headers, timeout=timeout)
        except (HTTPError, httpx.HTTPError) as exc:
            raise InfraFabricError(f"coordinator service unreachable: {exc}", error_code="IF_ERR_UNAVAILABLE") from None
        raise_for_envelope(status, body)
        try:
            return _json.loads(body)
        except ValueError:  # not the service (a proxy's page, a truncated answer): as unreachable, retried
            raise InfraFabricError(f"the coordinator service answered {status} with a body that is not JSON",
                                   error_code="IF_ERR_UNAVAILABLE") from None

    async def start(self) -> "RemoteSwarmClient":
        answer = await self._call("POST", "/v1/session", json={"capabilities": self.capabilities})
        self.swarm_id, self._session = answer["swarm_id"], answer["session"]
        self._poll_wait = min(self._poll_wait, float(answer["ttl"]) / 2)
        self._poller = asyncio.create_task(self._poll())
        return self

    async def _poll(self) -> None:
        """Long-poll the inbox (the session's heartbeat) into ``tasks``. A passing failure (the service
        unreachable, or its engines: 503) is retried with backoff, so a replica cut from etcd for a moment
        does not end the session; a final one (credential refused, session gone) stops polling and is kept
        for ``next_task`` to raise."""
        pause = _POLL_BACKOFF[0]
        while True:
            try:
                room = self.tasks.maxsize - self.tasks.qsize() if self.tasks.maxsize else 1000
                if room <= 0:  # the swarm is behind: keep the session alive, take nothing more yet
                    await self._call("POST", "/v1/heartbeat")
                    await asyncio.sleep(self._poll_wait)
                    continue
                answer = await self._call("GET", "/v1/inbox", params={"wait": self._poll_wait, "max": min(room, 1000)},
                                          timeout=self._timeout + self._poll_wait)
                tasks = answer.get("tasks") if isinstance(answer, dict) else None
                if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
                    raise InfraFabricError("the inbox answer holds no list of tasks", error_code="IF_ERR_UNAVAILABLE")
                for task in tasks:
                    self.tasks.put_nowait(task)
                pause = _POLL_BACKOFF[0]
            except asyncio.CancelledError:
                raise
            except InfraFabricError as exc:
                if exc.error_code in _FINAL or isinstance(exc, ValidationError):
                    self.error = exc
                    return
                self.transient_errors += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, _POLL_BACKOFF[1])
            except Exception as exc:  # noqa: BLE001 - kept for next_task to raise
                self.error = exc
                return

    async def next_task(self, timeout: float | None = None) -> dict[str, Any]:
        if self.error is not None and self.tasks.empty():
            raise self.error
        getter = asyncio.ensure_future(self.tasks.get())
        waiters: set[asyncio.Future[Any]] = {getter}
        if self._poller is not None:
            waiters.add(self._poller)
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        if self.error is not None:
            raise self.error
        raise asyncio.TimeoutError

    async def claim(self, task_id: str) -> RemoteClaim | None:
        return (await self.claim_many([task_id]))[0]

    async def claim_many(self, task_ids: list[str]) -> list[RemoteClaim | None]:
        answer = await self._call("POST", "/v1/claims", json={"task_ids": task_ids})
        assert self.swarm_id is not None
        return [RemoteClaim(c["task_id"], self.swarm_id, c["revision"]) if c["won"] else None
                for c in answer["claims"]]

    async def complete(self, task_id: str, result: Any = None, claim: RemoteClaim | None = None) -> int:
        return int((await self._call("POST", "/v1/complete", json={"task_id": task_id, "result": result}))["revision"])

    async def complete_many(self, results: dict[str, Any]) -> dict[str, int | InfraFabricError]:
        """Complete several claimed tasks in one request: task id -> revision, or the error for that task."""
        answer = await self._call("POST", "/v1/complete", json={
            "results": [{"task_id": t, "result": r} for t, r in results.items()]})
        out: dict[str, int | InfraFabricError] = {}
        for item in answer["outcomes"]:
            error = item.get("error")
            out[item["task_id"]] = int(item["revision"]) if error is None else \
                error_from_envelope(error["code"], error["message"])
        return out

    async def progress(self, task_id: str, progress: Any, claim: RemoteClaim | None = None) -> int:
        return int((await self._call("POST", "/v1/progress",
                                     json={"task_id": task_id, "progress": progress}))["revision"])

    async def report_blocker(self, blocker_info: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._call("POST", "/v1/blockers", json={"blocker_info": blocker_info}))

    async def stop(self, *, release: bool = True) -> None:
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - its error was kept already
                pass
            self._poller = None
        try:
            if self._session is not None:
                await self._call("DELETE", "/v1/session", params={"release": "true" if release else "false"})
        finally:
            self._session = None
            await self._http.aclose()

    async def __aenter__(self) -> "RemoteSwarmClient":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
