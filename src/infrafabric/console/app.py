"""The console's HTTP face: server-rendered views, server-sent events, and operator actions.

Every page needs a session (an operator or viewer credential verified at login). Every POST needs the
session's CSRF token and a same-origin request. Every response carries a Content-Security-Policy without
``unsafe-inline``: the only script is ``static/console.js``, the only style ``static/console.css``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from backends.errors import PlatformError
from backends.ratelimit import KeyedLimiter
from infrafabric.console import actions, charts, readers
from infrafabric.console.events import EventHub, sse
from infrafabric.console.platform import Platform
from infrafabric.console.sessions import COOKIE, ConsoleSession, CSRFError, SessionStore
from infrafabric.errors import CredentialError, ValidationError

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
VIEWS = (("swarms", "Swarms"), ("tasks", "Tasks"), ("chassis", "Chassis"), ("cost", "Cost"), ("audit", "Audit log"),
         ("mesh", "Mesh"), ("nodes", "Nodes"))
LOGIN_PER_MINUTE = 20
VERIFY_EVERY = 30.0  # seconds between background verifications of the whole log
MAX_FORM_BYTES = 16_384


def _money(value: Any) -> str:
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"-${-amount:,.2f}" if amount < 0 else f"${amount:,.2f}"


def _ago(ts: float | None) -> str:
    if not ts:
        return ""
    seconds = max(time.time() - ts, 0)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _env() -> Environment:
    env = Environment(loader=PackageLoader("infrafabric.console", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True), enable_async=False)
    env.filters["money"] = _money
    env.filters["ago"] = _ago
    return env


class AuditState:
    """The newest verification of the whole log, redone in the background (never on a page's request)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.latest: readers.Verification | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="console-verify")

    async def _loop(self) -> None:
        while True:
            try:
                self.latest = await readers.verification(self.platform)
            except Exception as exc:  # an unreadable log is a verification result, not a crash
                self.latest = readers.Verification(False, 0, time.time(), f"verification failed: {exc}"[:500])
            await asyncio.sleep(VERIFY_EVERY)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def create_console_app(platform: Platform, *, secure_cookies: bool = False, event_interval: float = 0.2) -> FastAPI:
    env = _env()
    sessions = SessionStore()
    hub = EventHub(platform.witness, interval=event_interval)
    audit_state = AuditState(platform)
    login_limiter = KeyedLimiter(max_keys=10_000)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        audit_state.start()
        try:
            yield
        finally:
            await hub.stop()
            await audit_state.stop()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sessions = sessions
    app.state.hub = hub
    app.mount("/static", StaticFiles(directory=str(files("infrafabric.console") / "static")), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"  # no-referrer would make forms send Origin: null
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(views=VIEWS, platform_name=platform.name, **context),
                            status_code=status)

    def error_page(exc: PlatformError, session: ConsoleSession | None = None) -> HTMLResponse:
        return render("error.html", exc.http_status, error=exc, session=session, view="")

    def session_of(request: Request) -> ConsoleSession:
        return sessions.get(request.cookies.get(COOKIE))

    def same_origin(request: Request) -> None:
        """A browser names the page a POST came from; it must be this console (CSRF defence in depth)."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if origin is None:
            return  # not a browser (no CSRF risk without ambient cookies from another site)
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise CSRFError("a request from another site was refused")

    async def form_of(request: Request) -> dict[str, str]:
        """The page's form (urlencoded: the only kind its forms send), bounded, first value of each field."""
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            raise ValidationError("send the console's form (application/x-www-form-urlencoded)")
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise ValidationError("form too large")
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32, strict_parsing=False)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValidationError("the form could not be read") from exc
        return {k: v[0] for k, v in fields.items()}

    def page(view: str, fragment_template: str) -> Callable[..., Awaitable[Response]]:
        """A view: the whole page, or (``?fragment=1``, what the live update fetches) only its body."""

        def decorate(build: Callable[[Request], Awaitable[dict[str, Any]]]) -> Callable[..., Awaitable[Response]]:
            async def handler(request: Request) -> Response:
                try:
                    session = session_of(request)
                except CredentialError:
                    return RedirectResponse("/login", status_code=303)
                try:
                    context = await build(request)
                except PlatformError as exc:
                    return error_page(exc, session)
                flash, session.flash = session.flash, ""
                template = fragment_template if request.query_params.get("fragment") == "1" else "page.html"
                return render(template, session=session, view=view, body_template=fragment_template, flash=flash,
                              **context)

            handler.__name__ = f"view_{view}"
            app.add_api_route(f"/{view}", handler, methods=["GET"], response_class=HTMLResponse)
            return handler

        return decorate

    def _int(request: Request, name: str, default: int | None = None) -> int | None:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return default
        if not raw.isdigit() or len(raw) > 12:
            raise ValidationError(f"{name} must be a non-negative whole number")
        return int(raw)

    # ----------------------------------------------------------------------------------- login / logout
    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/swarms", status_code=303)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "audit_entries": hub.last_seq + 1})

    @app.get("/login", response_class=HTMLResponse)
    async def login_form() -> HTMLResponse:
        return render("login.html", session=None, view="login", error=None)

    @app.post("/login")
    async def login(request: Request) -> Response:
        client = request.client.host if request.client else "?"
        wait = login_limiter.take("login", client, LOGIN_PER_MINUTE)
        try:
            same_origin(request)
            if wait is not None:
                raise ValidationError(f"too many login attempts: try again in {wait} s",
                                      error_code="IF_ERR_RATE_LIMITED")
            form = await form_of(request)
            token = form.get("credential", "").strip()
            if not token:
                raise CredentialError("paste your operator or viewer credential")
            identity = await platform.verifier.verify(token)
            session = sessions.open(identity)
        except PlatformError as exc:
            platform.witness.log(actions.COMPONENT, "console_login_refused",
                                 {"client": client, "error_code": exc.error_code}, "WARN")
            return render("login.html", 429 if exc.error_code == "IF_ERR_RATE_LIMITED" else exc.http_status,
                          session=None, view="login", error=exc)
        platform.witness.log(actions.COMPONENT, "console_login",
                             {"operator": identity.name, "role": identity.role, "credential": identity.jti})
        response = RedirectResponse("/swarms", status_code=303)
        response.set_cookie(COOKIE, session.session_id, httponly=True, samesite="strict", secure=secure_cookies,
                            path="/", max_age=max(int(session.expires_at - time.time()), 1))
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        try:
            session = session_of(request)
            same_origin(request)
            session.check_csrf((await form_of(request)).get("csrf"))
        except PlatformError as exc:
            return error_page(exc)
        sessions.close(session.session_id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # ------------------------------------------------------------------------------------------ views
    @page("swarms", "swarms.html")
    async def swarms_view(request: Request) -> dict[str, Any]:
        query = request.query_params.get("q", "")[:100]
        result = await readers.swarms(platform, _int(request, "page", 1) or 1, query)
        burn = charts.bar_chart([(r.swarm_id, float(r.used_percent)) for r in result.items[:20]],
                                title="budget used (%)", unit=" %", limit=100.0, css="bars burn")
        return {"result": result, "burn_chart": burn}

    @page("tasks", "tasks.html")
    async def tasks_view(request: Request) -> dict[str, Any]:
        query = request.query_params.get("q", "")[:100]
        result = await readers.tasks(platform, _int(request, "page", 1) or 1, query)
        blockers = await readers.blockers(platform)
        latencies = await readers.claim_latencies(platform)
        return {"result": result, "blockers": blockers,
                "latency_chart": charts.line_chart([("push → claim ms", latencies)], title="claim latency (ms)",
                                                   unit=" ms")}

    @page("chassis", "chassis.html")
    async def chassis_view(_: Request) -> dict[str, Any]:
        summary = await readers.chassis(platform)
        return {"summary": summary, "now": time.time(),
                "outcome_chart": charts.bar_chart(sorted(summary.executions.items()), title="executions by outcome"),
                "refusal_chart": charts.bar_chart(summary.refusals.most_common(), title="refusals by reason")}

    @page("cost", "cost.html")
    async def cost_view(_: Request) -> dict[str, Any]:
        summary = await readers.costs(platform)
        return {"summary": summary,
                "day_chart": charts.bar_chart([(r["key"], float(r["cost"])) for r in summary.by_day[-14:]],
                                              title="spend per day ($)", unit=" $")}

    @page("audit", "audit.html")
    async def audit_view(request: Request) -> dict[str, Any]:
        result = await readers.audit(platform, query=request.query_params.get("q", "")[:256],
                                     operation=request.query_params.get("op", "")[:128],
                                     before=_int(request, "before"))
        proof_seq = _int(request, "proof")
        proof = None
        if proof_seq is not None:
            proof = json.dumps(await readers.inclusion_proof(platform, proof_seq), indent=2, sort_keys=True)
        return {"result": result, "verification": audit_state.latest, "proof": proof, "proof_seq": proof_seq,
                "next_link": "?" + urlencode({"q": result.query, "op": result.operation,
                                              "before": result.next_before}) if result.next_before is not None
                else None}

    @page("mesh", "mesh.html")
    async def mesh_view(_: Request) -> dict[str, Any]:
        return {"summary": await readers.mesh(platform)}

    @page("nodes", "nodes.html")
    async def nodes_view(request: Request) -> dict[str, Any]:
        summary = await readers.nodes(platform, _int(request, "page", 1) or 1)
        cpu = [(n["node_id"][-10:], [float(s.get("cpu_percent") or 0) for s in summary.resources.get(n["node_id"], [])])
               for n in summary.nodes]
        by_state: dict[str, float] = {}
        for p in summary.payouts:
            by_state[str(p.get("status"))] = by_state.get(str(p.get("status")), 0.0) + float(p.get("amount") or 0)
        return {"summary": summary,
                "cpu_chart": charts.line_chart(cpu, title="CPU % from heartbeats", unit=" %", top=100.0),
                "payout_chart": charts.bar_chart(sorted(by_state.items()), title="payouts by state (USDT)"),
                "poot_chart": charts.bar_chart([(n["node_id"][-12:], float(n.get("poot_score") or 0))
                                                for n in summary.nodes], title="PoOT score")}

    # ----------------------------------------------------------------------------------------- events
    @app.get("/events")
    async def events(request: Request) -> Response:
        try:
            session_of(request)
        except CredentialError as exc:
            return JSONResponse({"error": {"code": exc.error_code, "message": exc.message}}, status_code=401)
        queue = hub.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), 15.0)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if event is None:
                        return
                    yield sse(event)
            finally:
                hub.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # ---------------------------------------------------------------------------------------- actions
    def action(path: str, back: str, do: Callable[[ConsoleSession, dict[str, str]], Awaitable[str]]) -> None:
        async def handler(request: Request) -> Response:
            try:
                session = session_of(request)
            except CredentialError as exc:
                return error_page(exc)
            try:
                same_origin(request)
                form = await form_of(request)
                session.check_csrf(form.get("csrf"))
                session.require_operator(path.rsplit("/", 1)[-1])
                session.flash = await do(session, form)
            except PlatformError as exc:
                if exc.http_status in (401, 403):
                    platform.witness.log(actions.COMPONENT, "console_action_refused",
                                         {"action": path, "operator": session.identity.name,
                                          "role": session.identity.role, "error_code": exc.error_code}, "WARN")
                return error_page(exc, session)
            return RedirectResponse(back, status_code=303)

        handler.__name__ = "action_" + path.rsplit("/", 1)[-1].replace("-", "_")
        app.add_api_route(path, handler, methods=["POST"])

    action("/actions/reset-breaker", "/swarms",
           lambda s, f: actions.reset_breaker(platform, s.identity, f.get("swarm_id"), f.get("reason", "")))
    action("/actions/set-budget", "/swarms",
           lambda s, f: actions.set_budget(platform, s.identity, f.get("swarm_id"), f.get("amount")))
    action("/actions/deregister-service", "/mesh",
           lambda s, f: actions.deregister_service(platform, s.identity, f.get("service_id")))
    action("/actions/retry-payout", "/nodes",
           lambda s, f: actions.retry_payout(platform, s.identity, f.get("payout_id")))

    return app
