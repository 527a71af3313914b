"""The bus on a real NATS server through nats-py.

Request/reply uses NATS's own mechanism (no-responders is reported at once by the server). A handler's
error travels back in reply headers so the requester raises the same RemoteError as on the embedded bus.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import ssl
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from backends.bus.base import Handler, Message, MessageBus, Subscription, check_subject
from backends.inflight import InFlightLimit
from backends.errors import AuthenticationError as BackendAuthError
from backends.errors import (
    BackendError,
    BackendUnavailable,
    InvalidBackendURL,
    NoResponders,
    RemoteError,
    RequestTimeout,
    UntrustedServerError,
)

_ERR_CODE = "IF-Error-Code"
_ERR_MSG = "IF-Error-Message"


class _NatsSubscription(Subscription):
    def __init__(self, sub: Any) -> None:
        self._sub = sub

    async def unsubscribe(self) -> None:
        try:
            await self._sub.unsubscribe()
        except Exception:  # already closed with the connection
            pass


def nats_options(query: dict[str, str], *, tls: bool) -> dict[str, Any]:
    """Connection options from the URL's query (``ca``, ``cert``, ``key``, ``password_file``: file paths;
    ``user``: a name) and the environment (INFRAFABRIC_NATS_USER + INFRAFABRIC_NATS_PASSWORD or
    INFRAFABRIC_NATS_PASSWORD_FILE, or INFRAFABRIC_NATS_CREDS, a NATS .creds file). A password itself is
    never read from the URL (it would show wherever the URL does): only the path of a file holding it."""
    unknown = sorted(set(query) - {"ca", "cert", "key", "user", "password_file"})
    if unknown:
        raise InvalidBackendURL(f"unknown NATS URL options {unknown} (ca, cert, key, user, password_file)")
    options: dict[str, Any] = {}
    if tls or "ca" in query:
        context = ssl.create_default_context(cafile=query.get("ca"))
        if "cert" in query:
            context.load_cert_chain(query["cert"], query.get("key"))
        options["tls"] = context
    user = query.get("user") or os.environ.get("INFRAFABRIC_NATS_USER")
    password = None if "user" in query else os.environ.get("INFRAFABRIC_NATS_PASSWORD")
    password_file = query.get("password_file") or os.environ.get("INFRAFABRIC_NATS_PASSWORD_FILE")
    if password is None and password_file:
        password = Path(password_file).read_text().strip()
    if user:
        options.update(user=user, password=password or "")
    creds = os.environ.get("INFRAFABRIC_NATS_CREDS")
    if creds:
        options["user_credentials"] = creds
    return {k: v for k, v in options.items() if v is not None}


def _is_auth_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "authorization violation" in text or "authentication" in text or "user authentication expired" in text


def _is_untrusted(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLCertVerificationError) or "certificate verify failed" in str(exc).lower()


def _refusal(exc: BaseException, url: str) -> BackendError:
    if _is_untrusted(exc):
        return UntrustedServerError(f"NATS at {url} presented a certificate the given CA does not sign: {exc}")
    return BackendAuthError(f"NATS at {url} refused the credentials: {exc}")


class NatsBus(MessageBus):
    backend = "nats"

    def __init__(self, servers: Sequence[str], *, url: str = "", connect_timeout: float = 5.0,
                 max_in_flight: int = 512, **options: Any) -> None:
        self.servers = list(servers)
        # A request's timeout runs from its publish. With thousands started at once, the event loop was
        # still publishing the last ones when the first replies arrived, and the first timed out unread;
        # so at most ``max_in_flight`` requests are out at a time and the rest wait for a slot, untimed.
        self._in_flight = InFlightLimit(max_in_flight)
        self.url = url or ",".join(self.servers)
        self._connect_timeout = connect_timeout
        self._options = options
        self._nc: Client | None = None
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        await self._client()

    async def _client(self) -> Client:
        if self._nc is not None and self._nc.is_connected:
            return self._nc
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                refused: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

                async def on_error(exc: BaseException) -> None:
                    # a refused login or an untrusted server is retried for ever by nats-py: stop at the
                    # first one, with its code
                    if (_is_auth_error(exc) or _is_untrusted(exc)) and not refused.done():
                        refused.set_result(exc)

                connecting = asyncio.ensure_future(nats.connect(
                    servers=self.servers,
                    connect_timeout=self._connect_timeout,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.2,
                    pending_size=64 * 1024 * 1024,
                    flush_timeout=self._connect_timeout,
                    allow_reconnect=True,
                    error_cb=on_error,
                    **self._options,
                ))
                await asyncio.wait({connecting, refused}, return_when=asyncio.FIRST_COMPLETED)
                if refused.done() and not connecting.done():
                    connecting.cancel()
                    try:
                        await connecting
                    except BaseException:  # noqa: BLE001 - cancelled on purpose
                        pass
                    raise _refusal(refused.result(), self.url)
                refused.cancel()
                try:
                    self._nc = connecting.result()
                except Exception as exc:
                    if _is_auth_error(exc) or _is_untrusted(exc):
                        raise _refusal(exc, self.url) from exc
                    raise BackendUnavailable(f"cannot connect to NATS at {self.url}: {exc}") from exc
        assert self._nc is not None
        return self._nc

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except Exception:
                await self._nc.close()
        self._nc = None

    async def publish(self, subject: str, data: bytes) -> None:
        check_subject(subject)
        nc = await self._client()
        try:
            await nc.publish(subject, data)
        except Exception as exc:
            raise BackendUnavailable(f"NATS publish to {subject} failed: {exc}") from exc

    async def request(self, subject: str, data: bytes, timeout: float = 2.0) -> bytes:
        check_subject(subject)
        nc = await self._client()
        try:
            async with self._in_flight:
                msg = await nc.request(subject, data, timeout=timeout)
        except NoRespondersError as exc:
            raise NoResponders(f"no subscriber for {subject}") from exc
        except (NatsTimeout, asyncio.TimeoutError) as exc:
            raise RequestTimeout(f"no reply on {subject} within {timeout}s") from exc
        headers = msg.headers or {}
        if _ERR_CODE in headers:
            raise RemoteError(headers[_ERR_CODE], headers.get(_ERR_MSG, ""))
        return bytes(msg.data)

    async def subscribe(self, subject: str, handler: Handler, *, queue: str | None = None) -> Subscription:
        check_subject(subject, wildcards=True)
        nc = await self._client()

        async def on_message(msg: Any) -> None:
            message = Message(msg.subject, bytes(msg.data), msg.reply or None)
            try:
                result = handler(message)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                if msg.reply:
                    code = str(getattr(exc, "error_code", type(exc).__name__))
                    text = str(getattr(exc, "message", exc)).replace("\r", " ").replace("\n", " ")
                    await nc.publish(msg.reply, b"", headers={_ERR_CODE: code, _ERR_MSG: text[:1000]})
                return
            if msg.reply:
                await nc.publish(msg.reply, result or b"")

        sub = await nc.subscribe(
            subject,
            queue=queue or "",
            cb=on_message,
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=512 * 1024 * 1024,
        )
        await nc.flush()  # the server knows the subscription before we return: no early message is lost
        return _NatsSubscription(sub)

    async def flush(self, timeout: float = 2.0) -> None:
        nc = await self._client()
        await nc.flush(timeout=max(1, int(timeout)))

    async def status(self) -> dict[str, object]:
        nc = await self._client()
        await nc.flush(timeout=2)
        return {
            "healthy": nc.is_connected,
            "backend": "nats",
            "server": nc.connected_url.netloc if nc.connected_url else None,
            "url": self.url,
        }
