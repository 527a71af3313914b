"""Attacks on IF.chassis as a hostile upstream or a hostile guest makes them.

A hostile upstream (a real HTTP server on 127.0.0.1, defined here) sets cookies, echoes the token at any
offset and in several encodings, sends a gzip bomb, or trickles its answer. Hostile guests are small WAT
modules compiled by wasmtime: a clock sleep far past the contract, a negative pointer from alloc, a
result nested 100,000 levels, and modules using proposals whose state escapes the caps."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infrafabric.chassis import IFChassis, ResourceLimits, ServiceContract
from infrafabric.chassis.credentials import ScopedCredentials
from infrafabric.chassis.errors import (
    GuestProtocolError,
    GuestTrapError,
    InvalidModuleError,
    TaskTimeoutError,
)
from infrafabric.chassis.outbound import OutboundHTTP
from infrafabric.chassis.ratelimit import GCRALimiter
from infrafabric.chassis.sandbox import TaskContext

pytestmark = pytest.mark.security

BOMB_DECODED = 200 * 1024 * 1024
_BOMB = gzip.compress(b"\0" * BOMB_DECODED, compresslevel=9)


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def _send(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        auth = self.headers.get("Authorization", "")
        if parts.path == "/set-cookie":
            self._send(json.dumps({"cookie": self.headers.get("Cookie")}).encode(),
                       {"Set-Cookie": f"session={q.get('v', 'x')}; Path=/"})
        elif parts.path == "/echo":
            token = auth.removeprefix("Bearer ")
            forms = {"raw": auth, "token": token, "b64": base64.b64encode(auth.encode()).decode(),
                     "b64url": base64.urlsafe_b64encode(token.encode()).decode(),
                     "hex": token.encode().hex(), "json": json.dumps({"a": auth}, ensure_ascii=True),
                     "pct": "".join(f"%{b:02X}" for b in token.encode())}
            self._send(("x" * int(q.get("pad", "0")) + forms[q.get("form", "raw")] + "y" * 64).encode())
        elif parts.path == "/bomb":
            self._send(_BOMB, {"Content-Encoding": "gzip"})
        elif parts.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"a")
                    self.wfile.flush()
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                return
        else:
            self._send(b"{}")


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _ctx(creds: ScopedCredentials, outbound: OutboundHTTP, cap: int = 1 << 20, seconds: float = 5) -> TaskContext:
    return TaskContext(swarm_id=creds.swarm_id, task_id=creds.task_id,
                       limits=ResourceLimits(max_response_bytes=cap), credentials=creds,
                       deadline=time.monotonic() + seconds, limiter=GCRALimiter(1000, 100), outbound=outbound)


def _get(outbound: OutboundHTTP, ctx: TaskContext, url: str) -> Any:
    reply = outbound.perform(ctx, json.dumps({"method": "GET", "url": url}).encode())
    assert isinstance(reply, bytes), reply
    return json.loads(reply)


# ---------------------------------------------------------------- item 8: nothing shared between swarms
def test_cookies_and_connections_are_not_shared_between_swarms_or_tasks(hostile: str) -> None:
    outbound = OutboundHTTP()
    a = ScopedCredentials("swarm-a", "t-a", "tok-a-000000000000", 60, [hostile + "/"])
    b = ScopedCredentials("swarm-b", "t-b", "tok-b-000000000000", 60, [hostile + "/"])
    ctx_a, ctx_b = _ctx(a, outbound), _ctx(b, outbound)
    first = _get(outbound, ctx_a, hostile + "/set-cookie?v=swarm-a-secret")
    assert json.loads(first["body"])["cookie"] is None
    # the same task, again: no jar, so not even the setter gets its cookie back
    assert json.loads(_get(outbound, ctx_a, hostile + "/set-cookie")["body"])["cookie"] is None
    # another swarm: nothing of swarm A's
    assert json.loads(_get(outbound, ctx_b, hostile + "/set-cookie")["body"])["cookie"] is None
    assert outbound.client_for(ctx_a) is not outbound.client_for(ctx_b)
    outbound.release(ctx_a)
    assert outbound.client_for(ctx_a) is not None  # a new task (context) gets a new client
    assert outbound.clients_made == 3
    outbound.close()
    with pytest.raises(TypeError):
        OutboundHTTP(__import__("httpx").Client())  # one shared client is refused outright


# ---------------------------------------------------------------- item 9: the token never reaches the guest
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(pad=st.integers(0, 300), cap=st.integers(16, 400),
       form=st.sampled_from(["raw", "token", "b64", "b64url", "hex", "json", "pct"]))
def test_no_part_of_the_token_survives_any_cut_or_encoding(hostile: str, pad: int, cap: int, form: str) -> None:
    token = "sk-live-" + "Zq9" * 12  # 44 characters, as in the report
    outbound = OutboundHTTP()
    creds = ScopedCredentials("swarm-t", "t-t", token, 60, [hostile + "/"])
    ctx = _ctx(creds, outbound, cap=cap)
    reply = _get(outbound, ctx, f"{hostile}/echo?pad={pad}&form={form}")
    outbound.close()
    body = reply["body"]
    assert len(body.encode()) <= cap
    decoded_views = [body]
    for decode in (base64.b64decode, base64.urlsafe_b64decode, bytes.fromhex):
        try:
            decoded_views.append(decode(body.strip("xy=")).decode("latin-1"))
        except ValueError:
            pass
    window = 10  # no 10 consecutive characters of the token, in the body or in its decodings
    for view in decoded_views:
        for i in range(len(token) - window + 1):
            assert token[i:i + window] not in view, (form, pad, cap, body)


# ---------------------------------------------------------------- item 10: caps apply to decoded bytes
def test_a_gzip_bomb_is_capped_as_it_decodes(hostile: str) -> None:
    outbound = OutboundHTTP()
    creds = ScopedCredentials("swarm-g", "t-g", "tok-g-000000000000", 60, [hostile + "/"])
    ctx = _ctx(creds, outbound, cap=1 << 20)
    tracemalloc.start()
    try:
        reply = _get(outbound, ctx, hostile + "/bomb")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        outbound.close()
    assert reply["truncated"] is True and len(reply["body"]) == 1 << 20
    assert len(_BOMB) < 300 * 1024  # the bomb is small on the wire...
    assert peak < 32 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while decoding a {BOMB_DECODED >> 20} MB bomb"


# ---------------------------------------------------------------- item 11: deadlines hold across host calls
def test_a_trickling_server_cannot_stretch_the_deadline(hostile: str) -> None:
    outbound = OutboundHTTP()
    creds = ScopedCredentials("swarm-s", "t-s", "tok-s-000000000000", 60, [hostile + "/"])
    ctx = _ctx(creds, outbound, seconds=1.0)
    started = time.monotonic()
    from infrafabric.chassis.sandbox import _HostAbort

    with pytest.raises(_HostAbort):
        outbound.perform(ctx, json.dumps({"method": "GET", "url": hostile + "/trickle"}).encode())
    elapsed = time.monotonic() - started
    outbound.close()
    assert isinstance(ctx.violation, TaskTimeoutError)
    assert elapsed < 1.5, f"a 1 s task held for {elapsed:.2f}s by a trickling server"


_SLEEPER = """
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 4096) "{\\"status\\":\\"success\\"}")
  (func (export "alloc") (param i32) (result i32) (i32.const 8192))
  (func (export "execute_task") (param i32 i32) (result i64)
    ;; one relative clock subscription (48 bytes at 0): CLOCK_MONOTONIC, SLEEP_NS
    (i64.store (i32.const 0) (i64.const 7))          ;; userdata
    (i32.store8 (i32.const 8) (i32.const 0))          ;; tag: clock
    (i32.store (i32.const 16) (i32.const 1))          ;; clock id: monotonic
    (i64.store (i32.const 24) (i64.const SLEEP_NS))   ;; timeout
    (i64.store (i32.const 32) (i64.const 0))
    (i32.store16 (i32.const 40) (i32.const 0))        ;; relative
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    ;; result: the 20-byte JSON at 4096, only if one event with our userdata came back
    (if (result i64) (i32.and (i32.eq (i32.load (i32.const 128)) (i32.const 1))
                              (i64.eq (i64.load (i32.const 64)) (i64.const 7)))
      (then (i64.const 17592186044436))  ;; (4096 << 32) | 20
      (else (i64.const 0)))))
"""


@pytest.fixture
def bare_chassis() -> Iterator[IFChassis]:
    chassis = IFChassis(audit=None, reputation_sink=None)
    yield chassis
    chassis.close()


async def test_a_long_clock_sleep_is_refused_at_once_and_a_short_one_is_served(bare_chassis: IFChassis) -> None:
    limits = ResourceLimits(max_execution_time_seconds=1.0)
    for name, ns in (("sleeper-long", 5_000_000_000), ("sleeper-hour", 3_600_000_000_000), ("napper", 50_000_000)):
        wasm = wasmtime.wat2wasm(_SLEEPER.replace("SLEEP_NS", str(ns)))
        bare_chassis.load_swarm(name, wasm, ServiceContract(name, resource_requirements=limits))
        started = time.monotonic()
        if ns > 1_000_000_000:
            with pytest.raises(TaskTimeoutError):
                await bare_chassis.execute_task(name, {"id": "t"})
            assert time.monotonic() - started < 0.5, "the sleep was not refused at once"
        else:
            assert await bare_chassis.execute_task(name, {"id": "t"}) == {"status": "success"}
            assert time.monotonic() - started >= 0.05


# ---------------------------------------------------------------- item 12: hostile module shapes
_NEGATIVE_ALLOC = """
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const -16))
  (func (export "execute_task") (param i32 i32) (result i64) (i64.const 0)))
"""

_DEEP_RESULT = """
(module
  (memory (export "memory") 5)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "execute_task") (param i32 i32) (result i64)
    (local $i i32)
    (loop $fill
      (i32.store8 (i32.add (i32.const 65536) (local.get $i)) (i32.const 91))   ;; '['
      (i32.store8 (i32.add (i32.const 165536) (local.get $i)) (i32.const 93))  ;; ']'
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const 100000))))
    (i64.const 281474976910656)))  ;; (65536 << 32) | 200000
"""


async def test_a_negative_pointer_from_alloc_is_refused(bare_chassis: IFChassis) -> None:
    bare_chassis.load_swarm("neg", wasmtime.wat2wasm(_NEGATIVE_ALLOC), ServiceContract("neg"))
    with pytest.raises(GuestProtocolError) as info:
        await bare_chassis.execute_task("neg", {"id": "t", "pad": "x" * 10})
    assert "unusable pointer -16" in info.value.message


async def test_a_deeply_nested_result_is_a_protocol_error_audited_and_counted() -> None:
    recorded: list[tuple[str, dict[str, Any]]] = []

    class Sink:
        def __call__(self, *, component: str, operation: str, params: dict[str, Any], severity: str = "INFO",
                     trace_id: str | None = None) -> None:
            recorded.append((operation, params))

    chassis = IFChassis(audit=Sink(), reputation_sink=None)
    try:
        chassis.load_swarm("deep", wasmtime.wat2wasm(_DEEP_RESULT), ServiceContract(
            "deep", resource_requirements=ResourceLimits(max_result_bytes=1 << 20)))
        with pytest.raises(GuestProtocolError):
            await chassis.execute_task("deep", {"id": "t"})
        assert ("task_refused", "IF_ERR_CHASSIS_GUEST_PROTOCOL") in {
            (op, p.get("error_code")) for op, p in recorded}
        perf = chassis.get_performance("deep")  # counted in the SLO record, as a failure
        assert perf.executions == 1 and perf.success_rate == 0.0
    finally:
        chassis.close()


@pytest.mark.parametrize("wat, what", [
    ("(module (type (struct (field i32))) (memory (export \"memory\") 1))", "gc"),
    ("(module (memory (export \"memory\") 1 1 shared))", "shared memory"),
    ("(module (memory (export \"memory\") 1) (memory 1))", "multi-memory"),
    ("(module (memory (export \"memory\") i64 1))", "memory64"),
])
def test_modules_whose_state_escapes_the_caps_fail_at_load(bare_chassis: IFChassis, wat: str, what: str) -> None:
    try:
        wasm = wasmtime.wat2wasm(wat)
    except wasmtime.WasmtimeError:
        pytest.fail(f"the {what} module should be valid text; only its load must fail")
    with pytest.raises(InvalidModuleError):
        bare_chassis.load_swarm(f"mod-{what.split()[0]}", wasm, ServiceContract(f"mod-{what.split()[0]}"))


# ---------------------------------------------------------------- every guest import with hostile arguments
_IMPORTS = {  # (module, name): (param types, has result)
    ("env", "log"): (["i32"] * 3, False),
    ("env", "http_request"): (["i32"] * 4, True),
    ("env", "alloc_failed"): (["i64"], False),
    ("env", "abort"): (["i32"] * 4, False),
    ("wasi_snapshot_preview1", "fd_write"): (["i32"] * 4, True),
    ("wasi_snapshot_preview1", "fd_read"): (["i32"] * 4, True),
    ("wasi_snapshot_preview1", "poll_oneoff"): (["i32"] * 4, True),
    ("wasi_snapshot_preview1", "random_get"): (["i32"] * 2, True),
    ("wasi_snapshot_preview1", "clock_time_get"): (["i32", "i64", "i32"], True),
    ("wasi_snapshot_preview1", "environ_get"): (["i32"] * 2, True),
    ("wasi_snapshot_preview1", "args_sizes_get"): (["i32"] * 2, True),
    ("wasi_snapshot_preview1", "path_open"): (["i32"] * 5 + ["i64", "i64", "i32", "i32"], True),
    ("wasi_snapshot_preview1", "sock_accept"): (["i32"] * 3, True),
    ("wasi_snapshot_preview1", "proc_exit"): (["i32"], False),
}
_I32 = st.sampled_from([0, 1, -1, 16, 65535, 65536, 65532, 2**31 - 1, -2**31]) | st.integers(-2**31, 2**31 - 1)
_I64 = st.sampled_from([0, -1, 2**63 - 1, -2**63, 5_000_000_000]) | st.integers(-2**63, 2**63 - 1)


def _caller(module: str, name: str, params: list[str], has_result: bool, args: list[int]) -> bytes:
    sig = " ".join(f"(param {p})" for p in params) + (" (result i32)" if has_result else "")
    consts = " ".join(f"({p}.const {a})" for p, a in zip(params, args))
    call = f"(call $f {consts})" + (" drop" if has_result else "")
    return wasmtime.wat2wasm(f"""
(module
  (import "{module}" "{name}" (func $f {sig}))
  (memory (export "memory") 1)
  (data (i32.const 16) "{{\\"status\\":\\"success\\"}}")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "execute_task") (param i32 i32) (result i64)
    {call}
    (i64.const 68719476756)))""")  # (16 << 32) | 20


@pytest.fixture(scope="module")
def import_chassis() -> Iterator[IFChassis]:
    chassis = IFChassis(audit=None, reputation_sink=None)
    yield chassis
    chassis.close()


@pytest.mark.parametrize("target", list(_IMPORTS), ids=[f"{m.split('_')[0]}.{n}" for m, n in _IMPORTS])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_guest_import_survives_hostile_arguments(import_chassis: IFChassis, target: tuple[str, str],
                                                       data: st.DataObject) -> None:
    """Any argument values: the task succeeds or ends with a documented chassis error, never anything else,
    and the next task of a well-behaved swarm still runs."""
    from infrafabric.chassis.errors import ChassisError

    params, has_result = _IMPORTS[target]
    args = [data.draw(_I64 if p == "i64" else _I32) for p in params]
    swarm = f"imp-{target[1]}"
    contract = ServiceContract(swarm, resource_requirements=ResourceLimits(max_execution_time_seconds=1.0))
    import_chassis.load_swarm(swarm, _caller(*target, params, has_result, args), contract)
    try:
        result = asyncio.run(asyncio.wait_for(import_chassis.execute_task(swarm, {"id": "t"}), 5))
        assert result == {"status": "success"}
    except ChassisError as exc:
        assert exc.error_code.startswith("IF_ERR_CHASSIS"), exc
        if type(exc) is GuestTrapError:  # a trap must be the guest's (a wasm trap code, an exit, an abort) ...
            assert exc.details.get("trap") is not None or "exit_code" in exc.details \
                or "aborted" in exc.message, f"a host error surfaced as a trap: {exc.message}"  # ... not a host bug
    healthy = _caller("env", "log", ["i32"] * 3, False, [0, 16, 20])
    import_chassis.load_swarm("imp-healthy", healthy, ServiceContract("imp-healthy"))
    assert asyncio.run(import_chassis.execute_task("imp-healthy", {"id": "t"})) == {"status": "success"}
