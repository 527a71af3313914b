"""The metering gateway: OpenAI- and Anthropic-compatible routes that reserve before sending and settle after.

A swarm points any SDK at this service (base URL) with its own credential as the API key. For every call:
authenticate the swarm; apply its model policy (allowed models, default, the cheaper-model rule, requests
and tokens per minute); bound the call's cost from above (``prices.py``); reserve that bound in the
shared ledger (``reservations.py``; refused with 429 ``IF_ERR_BUDGET_EXCEEDED`` and the remaining budget
if it does not fit); forward it to the configured provider with the provider's key (the swarm never sees
it, and no header of the swarm's is forwarded); settle to the usage the provider reports, capped at the
reservation. Settlement rules: usage reported → its price; no usage → the reservation; an upstream
error or timeout before any output → released (nothing charged); a stream cut midway → its final usage if
it came, otherwise the reservation.

Only text content is accepted (images, audio and files are refused): the byte bound holds for text,
since a BPE token is at least one byte, but an image of a few URL bytes costs many tokens.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from backends.errors import BackendError, RateLimited
from backends.jsonsafe import loads_bounded
from backends.kv import KeyValueStore, LeaseKeeper
from backends.periodic import Periodic
from backends.ratelimit import KeyedLimiter
from backends.serving import AsgiApp, RelayResponse, fixed_routes
from infrafabric.coordinator.credentials import CredentialVerifier, Identity, bearer_token
from infrafabric.coordinator.http1 import HTTPError, Http1Pool
from infrafabric.errors import CredentialError, InfraFabricError, PermissionDeniedError, ValidationError
from infrafabric.gateway.config import GatewayConfig, Provider, SwarmPolicy
from infrafabric.gateway.allowance import AllowanceLedger
from infrafabric.gateway.prices import ModelRate
from infrafabric.gateway.reservations import BudgetExceededError, Hold, ReservationLedger
from infrafabric.gateway.usage import StreamMeter, Usage, anthropic_usage, openai_usage
from infrafabric.httpjson import json_object

MAX_BODY_BYTES = 4 << 20
COMPONENT = "IF.gateway"
_TEXT_PARTS = frozenset({"text", "input_text"})

AuditFn = Callable[[str, str, dict[str, Any], str], Any]
CostSink = Callable[..., Any]


class GatewayError(InfraFabricError):
    error_code = "IF_ERR_GATEWAY"


class RateLimitedError(InfraFabricError, RateLimited):
    error_code = "IF_ERR_RATE_LIMITED"
    http_status = 429


class _Minute:
    """Tokens settled by each swarm in the last minute (this replica's view)."""

    def __init__(self) -> None:
        self._events: dict[str, deque[tuple[float, int]]] = defaultdict(deque)

    def used(self, swarm: str, now: float) -> int:
        events = self._events[swarm]
        while events and events[0][0] < now - 60:
            events.popleft()
        return sum(n for _, n in events)

    def add(self, swarm: str, tokens: int, now: float) -> None:
        self._events[swarm].append((now, tokens))


class MeteringGateway:
    def __init__(self, config: GatewayConfig, kv: KeyValueStore, verifier: CredentialVerifier, *,
                 audit: AuditFn | None = None, cost_sink: CostSink | None = None,
                 upstream_timeout: float = 60.0, lease_ttl: int = 10, sweep_interval: float = 1.0) -> None:
        self.config, self.kv, self.verifier = config, kv, verifier
        self._audit, self._cost_sink = audit, cost_sink
        exact = ReservationLedger(kv, audit=lambda op, params, sev: self.audit(op, params, sev))
        self.ledger: ReservationLedger | AllowanceLedger = exact if config.allowance_calls == 0 else AllowanceLedger(
            exact, calls=config.allowance_calls, idle=config.allowance_idle,
            audit=lambda op, params, sev: self.audit(op, params, sev))
        self.replica_id = uuid.uuid4().hex[:12]
        self.lease_ttl, self.sweep_interval = lease_ttl, sweep_interval
        self._lease: int | None = None
        self._keeper: LeaseKeeper | None = None
        # calls and streams go through the small pooled HTTP/1.1 client, one pool per provider origin:
        # httpx's per-request machinery was most of the gateway's added latency (benchmarks/RESULTS.md)
        self._pools: dict[str, Http1Pool] = {}
        self._upstream_timeout = upstream_timeout
        self._requests = KeyedLimiter()
        self._minute = _Minute()
        self._background: set[asyncio.Task[Any]] = set()
        self._sweeper = Periodic(self._sweep, lambda: self.sweep_interval, name="gateway-hold-sweep")

    def audit(self, operation: str, params: dict[str, Any], severity: str = "INFO") -> None:
        if self._audit is not None:
            self._audit(COMPONENT, operation, params, severity)

    async def start(self) -> "MeteringGateway":
        await self._current_lease()
        self._sweeper.start()
        return self

    async def _current_lease(self) -> int:
        """This replica's lease (its holds live on it); a new one if the old was lost (a long partition)."""
        if self._keeper is None or not self._keeper.alive or self._lease is None:
            if self._keeper is not None:
                await self._keeper.stop()
            self._lease = await self.kv.grant_lease(self.lease_ttl)
            self._keeper = LeaseKeeper(self.kv, self._lease, self.lease_ttl)
        return self._lease

    async def close(self) -> None:
        await self._sweeper.stop()
        if self._background:  # settlements still running get a while; then the sweeper has them
            _, pending = await asyncio.wait(list(self._background), timeout=10)
            for task in pending:
                task.cancel()
        if isinstance(self.ledger, AllowanceLedger):
            await self.ledger.close()  # settlements written, allowances back to the budget, while the lease lives
        if self._keeper is not None:
            await self._keeper.stop()
            self._keeper = None
        for pool in self._pools.values():
            await pool.aclose()

    async def _sweep(self) -> None:
        """Charge holds whose replica died at what they held, and account each charge with IF.optimise as
        a settlement is (the next sweep tries again when the store is away)."""
        try:
            charged = await self.ledger.sweep()
        except Exception as exc:
            self.audit("hold_sweep_failed", {"error": type(exc).__name__}, "WARN")
            raise
        if self._cost_sink is not None:
            for hold in charged:  # which model a dead replica's hold was for is not in the ledger
                self._cost_sink(hold.swarm_id, "model_call", hold.amount, component=COMPONENT, model="unknown",
                                request_id=hold.hold_id, price_version=self.config.rates.version,
                                settled_by="sweeper")

    # ------------------------------------------------------------------ admission
    async def identify(self, request: Request) -> Identity:
        # Anthropic's SDK sends the key as x-api-key
        token = bearer_token(request.headers.get("authorization")) or request.headers.get("x-api-key", "").strip()
        if not token:
            raise CredentialError("a swarm credential is required (Authorization: Bearer, or x-api-key)")
        return await self.verifier.verify(token, role="swarm")

    def choose_model(self, swarm: str, requested: Any) -> tuple[ModelRate, str | None]:
        policy: SwarmPolicy = self.config.policy(swarm)
        model = requested if requested is not None else policy.default_model
        if not isinstance(model, str) or not model:
            raise ValidationError("model is required")
        rate = self.config.rates.rate(model)
        routed = None
        cheaper = self.config.cheaper.get(model)
        if cheaper is not None and not policy.allow_larger:
            routed, rate = model, self.config.rates.rate(cheaper)
        if policy.models is not None and rate.model not in policy.models:
            raise PermissionDeniedError(f"{swarm} may not use model {rate.model}",
                                        error_code="IF_ERR_MODEL_NOT_ALLOWED")
        return rate, routed

    def check_rates(self, swarm: str) -> None:
        policy = self.config.policy(swarm)
        if policy.requests_per_minute is not None and \
                (wait := self._requests.take("rpm", swarm, policy.requests_per_minute)) is not None:
            raise RateLimitedError(f"{swarm} is over {policy.requests_per_minute} requests a minute", retry_after=wait)
        if policy.tokens_per_minute is not None and \
                self._minute.used(swarm, time.monotonic()) >= policy.tokens_per_minute:
            raise RateLimitedError(f"{swarm} is over {policy.tokens_per_minute} tokens a minute")

    # ------------------------------------------------------------------ one call
    async def call(self, request: Request, kind: str) -> Response:
        identity = await self.identify(request)
        swarm = identity.name
        body = await json_object(request, MAX_BODY_BYTES)
        rate, routed = self.choose_model(swarm, body.get("model"))
        provider = self.config.providers[rate.provider]
        if kind == "messages" and provider.kind != "anthropic" or kind != "messages" and provider.kind != "openai":
            raise ValidationError(f"model {rate.model} is not served on this route")
        self.check_rates(swarm)
        body["model"] = rate.upstream_model
        out_tokens = self._bound_output(kind, body, rate)
        stream = bool(body.get("stream"))
        if stream and kind == "chat":
            options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
            body["stream_options"] = {**options, "include_usage": True}
        _refuse_non_text(kind, body)
        _refuse_provider_tools(kind, body)
        try:
            payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        except UnicodeEncodeError:  # a lone surrogate (\ud800): valid JSON text, no UTF-8 bytes to bound or send
            raise ValidationError("the body holds a lone UTF-16 surrogate: not text") from None
        amount = rate.max_cost(len(payload), out_tokens)
        request_id = uuid.uuid4().hex
        details = {"model": rate.model, "price_version": self.config.rates.version, "request_id": request_id,
                   "route": kind, **({"requested_model": routed} if routed else {})}
        hold = await self.ledger.reserve(swarm, request_id, amount, await self._current_lease(), details)
        path = {"chat": "/chat/completions", "embeddings": "/embeddings", "messages": "/v1/messages"}[kind]
        url = provider.base_url + path  # OpenAI's base URL ends in /v1; Anthropic's does not
        headers = _upstream_headers(provider, request)
        if stream and kind != "embeddings":
            return await self._stream(url, headers, payload, hold, rate, kind, details)
        return await self._once(url, headers, payload, hold, rate, kind, details)

    def _bound_output(self, kind: str, body: dict[str, Any], rate: ModelRate) -> int:
        if kind == "embeddings":
            return 0
        n = body.get("n", 1)
        if type(n) is not int or not 1 <= n <= 16:
            raise ValidationError("n must be 1 to 16")
        # A provider may honour either limit (one is the other's older name): each one given is checked, and
        # every one given is set to what was reserved, so neither lets the answer outgrow the hold.
        keys = [k for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None] or ["max_tokens"]
        for key in keys:
            asked = body.get(key)
            if asked is not None and (type(asked) is not int or asked < 1):
                raise ValidationError(f"{key} must be a positive integer")
        given = [body[k] for k in keys if body.get(k) is not None]
        out = rate.output_bound(max(given) if given else None)
        for key in keys:
            body[key] = out  # the provider is held to what was reserved
        return out * n

    async def _once(self, url: str, headers: dict[str, str], payload: bytes, hold: Hold, rate: ModelRate,
                    kind: str, details: dict[str, Any]) -> Response:
        try:
            status, content, media_type = await self._post(url, headers, payload)
        except HTTPError as exc:
            raise await self._failed_upstream(hold, rate, details, exc) from None
        if status >= 400:
            raise await self._failed_upstream(hold, rate, details, status)
        try:
            answer = loads_bounded(content)
        except ValueError:
            answer = None
        usage = None
        if isinstance(answer, dict):
            usage = anthropic_usage(answer.get("usage")) if kind == "messages" else \
                openai_usage(answer.get("usage"), embeddings=kind == "embeddings")
        # settled on its own task, after the answer is on its way: the swarm does not wait for the ledger (if
        # this replica dies first, the sweeper charges the reservation: never less than the call cost)
        self._in_background(self._settle(hold, usage, rate, details, "usage" if usage else "reservation"))
        return Response(content, status_code=status, media_type=media_type)

    def _pool(self, url: str) -> tuple[Http1Pool, str]:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = Http1Pool(origin, timeout=self._upstream_timeout, max_connections=256)
        return pool, parts.path

    async def _post(self, url: str, headers: dict[str, str], payload: bytes) -> tuple[int, bytes, str]:
        pool, path = self._pool(url)
        status, content = await pool.request("POST", path, content=payload,
                                             headers={k: v for k, v in headers.items() if k != "content-type"})
        return status, content, "application/json"

    async def _stream(self, url: str, headers: dict[str, str], payload: bytes, hold: Hold, rate: ModelRate,
                      kind: str, details: dict[str, Any]) -> Response:
        pool, path = self._pool(url)
        opened = pool.stream("POST", path, content=payload,
                             headers={k: v for k, v in headers.items() if k != "content-type"})
        try:
            upstream = await opened.__aenter__()
        except HTTPError as exc:
            raise await self._failed_upstream(hold, rate, details, exc) from None
        if upstream.status >= 400:
            await opened.__aexit__(None, None, None)
            raise await self._failed_upstream(hold, rate, details, upstream.status)
        meter = StreamMeter(kind)
        finished = False

        async def finish(failure: BaseException | None, hung_up: bool) -> None:
            """Give the connection back and settle, once: from the relay's end, or from the response's end if
            the relay never started (a swarm that hung up at once: a generator never started runs no
            ``finally``). The provider accepted the call, so a swarm's hang-up charges the usage or the
            reservation; only the provider's own failure before any output releases the hold."""
            nonlocal finished
            if finished:
                return
            finished = True
            await opened.__aexit__(type(failure) if failure else None, failure, None)
            usage = meter.usage()
            how = "usage" if usage else ("reservation" if meter.any_output or hung_up else "release")
            reason = "stream_cut" if meter.cut else ("swarm_hung_up" if hung_up else None)
            # settled on its own task: a client that hangs up cancels the relay, never the charge
            self._in_background(self._settle(hold, usage, rate, details, how, reason=reason))

        async def relay() -> AsyncIterator[bytes]:
            failure: BaseException | None = None
            hung_up = False
            try:
                async for chunk in upstream.chunks():
                    meter.feed(chunk)
                    yield chunk
            except HTTPError as exc:
                meter.cut = True  # the provider cut the stream: so is the swarm's (no clean end it could trust)
                failure = exc
                raise GatewayError("the provider cut the stream", error_code="IF_ERR_UPSTREAM") from exc
            except BaseException as exc:  # cancelled or closed by the response: the swarm went away
                failure, hung_up = exc, True
                raise
            finally:
                await finish(failure, hung_up)

        return RelayResponse(relay(), status_code=upstream.status,
                             media_type=upstream.content_type or "text/event-stream",
                             on_close=lambda: finish(None, True))

    async def _failed_upstream(self, hold: Hold, rate: ModelRate, details: dict[str, Any],
                               failure: HTTPError | int) -> GatewayError:
        """The provider failed before any output: the hold is released (nothing charged); the error to raise."""
        if isinstance(failure, int):
            reason, error = f"upstream_{failure}", GatewayError(f"the provider answered {failure}",
                                                                error_code="IF_ERR_UPSTREAM")
        elif "TimeoutError" in str(failure):  # Http1Pool names the exception it met
            reason, error = "upstream_timeout", GatewayError("the provider did not answer in time",
                                                             error_code="IF_ERR_UPSTREAM_TIMEOUT")
        else:
            reason, error = "upstream_unreachable", GatewayError(
                f"the provider is unreachable: {type(failure).__name__}", error_code="IF_ERR_UPSTREAM")
        await self._settle(hold, None, rate, details, "release", reason=reason)
        return error

    def _in_background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _settle(self, hold: Hold, usage: Usage | None, rate: ModelRate, details: dict[str, Any], how: str,
                      reason: str | None = None) -> None:
        """Settle, retrying while the ledger is unreachable (the hold stays on this replica's lease meanwhile;
        if the replica stops first, the sweeper charges the reservation)."""
        pause = 0.05
        while True:
            try:
                await self._settle_once(hold, usage, rate, details, how, reason)
                return
            except Exception as exc:  # noqa: BLE001 - the ledger away, or its record damaged until repaired:
                # the charge is owed either way, and dropping it would leave the hold on this replica's lease
                self.audit("settlement_retried", {"hold_id": hold.hold_id, "error": type(exc).__name__}, "WARN")
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _settle_once(self, hold: Hold, usage: Usage | None, rate: ModelRate, details: dict[str, Any], how: str,
                           reason: str | None = None) -> None:
        info = {**details, "settled_by": how, **({"reason": reason} if reason else {})}
        if how == "release":
            await self.ledger.release(hold, info)
            return
        if usage is not None:
            cost = rate.cost(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens,
                             usage.cache_write_tokens)
            info.update(tokens_in=usage.input_tokens, tokens_out=usage.output_tokens,
                        cached_tokens=usage.cached_input_tokens,
                        **({"cache_write_tokens": usage.cache_write_tokens} if usage.cache_write_tokens else {}))
            self._minute.add(hold.swarm_id, usage.input_tokens + usage.output_tokens, time.monotonic())
        else:
            cost = hold.amount
        charged = await self.ledger.settle(hold, cost, info)
        if charged is not None and self._cost_sink is not None:
            self._cost_sink(hold.swarm_id, "model_call", charged, component=COMPONENT, model=rate.model,
                            request_id=hold.hold_id, price_version=self.config.rates.version)

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": r.provider}
                                           for m, r in sorted(self.config.rates.rates.items())]}


def _refuse_non_text(kind: str, body: dict[str, Any]) -> None:
    """Only text: an image or audio part costs tokens its bytes do not bound."""
    if kind == "embeddings":
        value = body.get("input")
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise ValidationError("embeddings input must be a string or a list of strings",
                                  error_code="IF_ERR_UNSUPPORTED_CONTENT")
        return
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValidationError("messages must be a non-empty list")
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if not isinstance(part, dict) or not isinstance(part.get("type"), str) or \
                        part["type"] not in _TEXT_PARTS:
                    raise ValidationError("only text content is metered here (no images, audio or files)",
                                          error_code="IF_ERR_UNSUPPORTED_CONTENT")
        elif content is not None and not isinstance(content, str):
            raise ValidationError("message content must be text", error_code="IF_ERR_UNSUPPORTED_CONTENT")
    system = body.get("system")
    if isinstance(system, list) and not all(isinstance(p, dict) and p.get("type") == "text" for p in system):
        raise ValidationError("only text system prompts are metered here", error_code="IF_ERR_UNSUPPORTED_CONTENT")


#: Request fields with which the provider adds input or output the request's bytes do not bound (fetched
#: pages, search results, tool servers' answers, audio, predicted output billed when rejected).
_UNBOUNDED_FIELDS = frozenset({"web_search_options", "mcp_servers", "container", "audio", "prediction"})
#: Tool types the swarm defines and runs itself: their definitions are in the request's bytes.
_OWN_TOOLS = frozenset({"function", "custom"})


def _refuse_provider_tools(kind: str, body: dict[str, Any]) -> None:
    """Only what the byte bound prices: no tools the provider runs or defines (Anthropic's server and
    built-in tools add prompts and fetched content of their own), no audio or predicted output."""
    if kind == "embeddings":
        return
    unbounded = sorted(_UNBOUNDED_FIELDS.intersection(body))
    if unbounded:
        raise ValidationError(f"{', '.join(unbounded)}: not metered here (the provider adds what the request's "
                              "bytes cannot bound)", error_code="IF_ERR_UNSUPPORTED_CONTENT")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise ValidationError("only text output is metered here", error_code="IF_ERR_UNSUPPORTED_CONTENT")
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise ValidationError("tools must be a list")
    for tool in tools:
        kind_of = tool.get("type", "custom") if isinstance(tool, dict) else None
        if not isinstance(kind_of, str) or kind_of not in _OWN_TOOLS:
            raise ValidationError(f"tool type {kind_of!r} is not metered here: only tools the swarm defines "
                                  "(function, custom)", error_code="IF_ERR_UNSUPPORTED_CONTENT")


def _upstream_headers(provider: Provider, request: Request) -> dict[str, str]:
    """The provider's key and the content type; nothing the swarm sent (its key, cookies, hosts) goes on."""
    headers = {"content-type": "application/json", "accept": request.headers.get("accept", "application/json")}
    if provider.kind == "openai":
        headers["authorization"] = f"Bearer {provider.api_key}"
    else:
        headers["x-api-key"] = provider.api_key
        version = request.headers.get("anthropic-version", "2023-06-01")
        headers["anthropic-version"] = version if version.replace("-", "").isdigit() else "2023-06-01"
    return headers


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    # OpenAI's and Anthropic's SDKs read error.message; code is ours
    return JSONResponse({"error": {"code": code, "message": message, "type": code, **extra}}, status_code=status,
                        headers={"WWW-Authenticate": 'Bearer realm="infrafabric"'} if status == 401 else None)


def create_app(gateway: MeteringGateway) -> AsgiApp:
    def route(kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                if kind == "models":
                    await gateway.identify(request)
                    return JSONResponse(gateway.models())
                return await gateway.call(request, kind)
            except BudgetExceededError as exc:
                return _error(429, exc.error_code, exc.message, remaining=str(exc.remaining), needed=str(exc.needed))
            except InfraFabricError as exc:
                status = exc.http_status
                if status in (401, 403):
                    gateway.audit("model_call_refused", {"path": request.url.path, "error_code": exc.error_code},
                                  "WARN")
                return _error(status, exc.error_code, exc.message)
            except BackendError as exc:  # the ledger unreachable: nothing was sent to the provider
                return _error(503, str(getattr(exc, "error_code", "IF_ERR_UNAVAILABLE")),
                              f"the budget ledger is unavailable: {type(exc).__name__}")
        return endpoint

    return fixed_routes({("/v1/chat/completions", "POST"): route("chat"), ("/v1/embeddings", "POST"): route("embeddings"),
                         ("/v1/models", "GET"): route("models"), ("/v1/messages", "POST"): route("messages")}, _error)


__all__ = ["GatewayError", "MeteringGateway", "RateLimitedError", "create_app"]
