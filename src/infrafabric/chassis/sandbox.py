"""The wasmtime side of the chassis: one engine, cached compiled modules, the host functions, and
running one task in a fresh store with memory, fuel and epoch limits.

Runs synchronously in a worker thread (the chassis calls it through an executor), so guest code never
blocks the event loop. Host functions find their task through a thread-local context.
"""

from __future__ import annotations

import hashlib
import math
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import wasmtime

from backends.jsonsafe import loads_bounded

from .contracts import WASM_PAGE, ResourceLimits
from .errors import (
    ChassisError,
    CpuLimitExceededError,
    ForbiddenImportError,
    GuestMemoryError,
    GuestProtocolError,
    GuestTrapError,
    InvalidModuleError,
    SandboxPermissionError,
    TaskTimeoutError,
)

if TYPE_CHECKING:
    from .credentials import ScopedCredentials
    from .ratelimit import GCRALimiter

EPOCH_TICK_SECONDS = 0.005
MAX_WASM_STACK = 512 * 1024
WASI = "wasi_snapshot_preview1"

_I32 = wasmtime.ValType.i32()
_I64 = wasmtime.ValType.i64()

# env.* host functions a guest may import, with their exact signatures.
HOST_FUNCTIONS: dict[str, tuple[list[wasmtime.ValType], list[wasmtime.ValType]]] = {
    "log": ([_I32, _I32, _I32], []),
    "http_request": ([_I32, _I32, _I32, _I32], [_I32]),
    "alloc_failed": ([_I64], []),
    "abort": ([_I32, _I32, _I32, _I32], []),  # AssemblyScript's runtime import
}

# WASI calls that reach the file system or sockets: the host refuses them and ends the task with
# PermissionError (WASI has no preopens either, so even without this layer they would get EBADF).
_DENIED_WASI: dict[str, list[wasmtime.ValType]] = {
    "path_open": [_I32, _I32, _I32, _I32, _I32, _I64, _I64, _I32, _I32],
    "path_create_directory": [_I32, _I32, _I32],
    "path_filestat_get": [_I32, _I32, _I32, _I32, _I32],
    "path_filestat_set_times": [_I32, _I32, _I32, _I32, _I64, _I64, _I32],
    "path_link": [_I32, _I32, _I32, _I32, _I32, _I32, _I32],
    "path_readlink": [_I32, _I32, _I32, _I32, _I32, _I32],
    "path_remove_directory": [_I32, _I32, _I32],
    "path_rename": [_I32, _I32, _I32, _I32, _I32, _I32],
    "path_symlink": [_I32, _I32, _I32, _I32, _I32],
    "path_unlink_file": [_I32, _I32, _I32],
    "sock_accept": [_I32, _I32, _I32],
    "sock_recv": [_I32, _I32, _I32, _I32, _I32, _I32],
    "sock_send": [_I32, _I32, _I32, _I32, _I32],
    "sock_shutdown": [_I32, _I32],
}

# http_request return codes (negative): see docs/GUEST_ABI.md.
HTTP_ERR_BAD_REQUEST = -1
HTTP_ERR_BUFFER_TOO_SMALL = -2
HTTP_ERR_NETWORK = -3


class _HostAbort(Exception):
    """Raised inside a host function to trap the guest; the real reason is on the task context."""

    def __init__(self, ctx: "TaskContext") -> None:
        super().__init__("host ended the task")
        self.ctx = ctx


@dataclass
class TaskContext:
    """Everything a host function needs about the task running on this thread."""

    swarm_id: str
    task_id: str
    limits: ResourceLimits
    credentials: "ScopedCredentials | None"
    deadline: float  # time.monotonic()
    limiter: "GCRALimiter"
    outbound: Any  # OutboundHTTP, typed loosely to avoid an import cycle
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    logs: list[tuple[int, str]] = field(default_factory=list)
    output_truncated: bool = False
    http_calls: int = 0
    violation: ChassisError | None = None
    memory: Any = None  # the instance's exported memory, once instantiated
    store: Any = None

    def fail(self, error: ChassisError) -> "_HostAbort":
        """Record why the host ends the task (first reason wins) and return the abort to raise."""
        if self.violation is None:
            self.violation = error
        return _HostAbort(self)

    def _capture(self, buf: bytearray, data: bytes) -> int:
        room = self.limits.max_output_bytes - len(buf)
        if len(data) > room:
            self.output_truncated = True
        if room > 0:
            buf += data[:room]
        return len(data)  # tell the guest it was written: the cap is ours to enforce, silently

    def on_stdout(self, data: bytes) -> int:
        self._check_deadline()
        return self._capture(self.stdout, data)

    def on_stderr(self, data: bytes) -> int:
        self._check_deadline()
        return self._capture(self.stderr, data)

    def _check_deadline(self) -> None:
        if time.monotonic() >= self.deadline:
            raise self.fail(TaskTimeoutError(f"swarm {self.swarm_id!r} ran past its time limit writing output",
                                             swarm_id=self.swarm_id))


_local = threading.local()


def current_context() -> TaskContext:
    """The running task's context, checked against its deadline at every host call: the epoch deadline
    interrupts guest code only, so a guest that spends its time in host calls (or a ticker starved of
    the GIL by them) is stopped here, at the next call after its time is up."""
    ctx = getattr(_local, "ctx", None)
    if ctx is None:  # a host function called outside a chassis task: refuse
        raise RuntimeError("host function called outside a chassis task")
    if time.monotonic() >= ctx.deadline:
        raise ctx.fail(TaskTimeoutError(f"swarm {ctx.swarm_id!r} ran past its time limit in a host call",
                                        swarm_id=ctx.swarm_id))
    return ctx


def read_guest(ctx: TaskContext, caller: wasmtime.Caller, ptr: int, length: int, what: str) -> bytes:
    """Bounds-checked read of guest memory (a bad pointer ends the task)."""
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        raise ctx.fail(GuestProtocolError("guest does not export its memory"))
    size = memory.data_len(caller)
    if ptr < 0 or length < 0 or ptr + length > size:
        raise ctx.fail(GuestProtocolError(f"{what}: range {ptr}+{length} is outside guest memory ({size} bytes)"))
    return bytes(memory.read(caller, ptr, ptr + length))


def write_guest(ctx: TaskContext, caller: wasmtime.Caller, ptr: int, data: bytes, what: str) -> None:
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        raise ctx.fail(GuestProtocolError("guest does not export its memory"))
    size = memory.data_len(caller)
    if ptr < 0 or ptr + len(data) > size:
        raise ctx.fail(GuestProtocolError(f"{what}: range {ptr}+{len(data)} is outside guest memory"))
    if data:
        memory.write(caller, data, ptr)


# ------------------------------------------------------------------------------------------ host funcs
def _host_log(caller: wasmtime.Caller, level: int, ptr: int, length: int) -> None:
    ctx = current_context()
    length = min(length, ctx.limits.max_output_bytes)
    text = read_guest(ctx, caller, ptr, length, "log").decode("utf-8", "replace")
    used = sum(len(t) for _, t in ctx.logs)
    if used + len(text) > ctx.limits.max_output_bytes:
        ctx.output_truncated = True
        return
    ctx.logs.append((int(level), text))


def _host_http_request(caller: wasmtime.Caller, req_ptr: int, req_len: int, out_ptr: int, out_cap: int) -> int:
    ctx = current_context()
    ctx.http_calls += 1
    if req_len > ctx.limits.max_task_bytes:
        return HTTP_ERR_BAD_REQUEST
    raw = read_guest(ctx, caller, req_ptr, req_len, "http_request")
    reply = ctx.outbound.perform(ctx, raw)  # raises ctx.fail(...) on refusals
    if isinstance(reply, int):
        return reply
    if len(reply) > out_cap:
        return HTTP_ERR_BUFFER_TOO_SMALL
    write_guest(ctx, caller, out_ptr, reply, "http_request response")
    return len(reply)


def _host_alloc_failed(caller: wasmtime.Caller, requested: int) -> None:
    """The guest says an allocation was refused: the host checks the claim against the cap."""
    ctx = current_context()
    memory = caller.get("memory")
    current = memory.data_len(caller) if isinstance(memory, wasmtime.Memory) else 0
    cap = ctx.limits.memory_bytes
    requested = max(0, int(requested))
    if current + requested > cap or current + WASM_PAGE > cap:
        raise ctx.fail(GuestMemoryError(
            f"swarm {ctx.swarm_id!r} needed {current + requested} bytes of memory; its contract allows "
            f"{ctx.limits.max_memory_mb} MB", swarm_id=ctx.swarm_id, requested_bytes=requested,
            limit_bytes=cap))
    raise ctx.fail(GuestProtocolError(
        f"guest reported a refused allocation of {requested} bytes that fits its {cap}-byte limit"))


def _host_abort(caller: wasmtime.Caller, msg: int, file: int, line: int, col: int) -> None:
    ctx = current_context()
    raise ctx.fail(GuestTrapError(f"guest aborted at line {line}, column {col}", swarm_id=ctx.swarm_id))


def _make_denied(name: str) -> Callable[..., int]:
    kind = "network sockets" if name.startswith("sock_") else "the file system"

    def denied(*_args: Any) -> int:
        ctx = current_context()
        raise ctx.fail(SandboxPermissionError(
            f"swarm {ctx.swarm_id!r} tried to reach {kind} ({WASI}.{name}); the sandbox has no "
            "file system or network access", swarm_id=ctx.swarm_id, call=name))

    return denied


# WASI poll_oneoff, bounded. wasmtime's own blocks in native code for as long as the guest asks (an
# hour-long sleep held a worker for an hour; epochs do not interrupt host calls). This one serves clock
# subscriptions by sleeping no later than the task's deadline, and refuses a sleep that would outlast it
# at once; file-descriptor subscriptions get EBADF (the sandbox has no descriptors worth waiting on).
_SUBSCRIPTION = struct.Struct("<QB7xIxxxxQQH6x")  # userdata, tag, clock id, timeout, precision, flags
_EVENT = struct.Struct("<QHB5xQH6x")  # userdata, errno, type, nbytes, flags
_ERRNO_SUCCESS, _ERRNO_BADF, _ERRNO_INVAL = 0, 8, 28
_MAX_SUBSCRIPTIONS = 64
_CLOCK_ABSTIME = 1


def _host_poll_oneoff(caller: wasmtime.Caller, in_ptr: int, out_ptr: int, nsubs: int, nevents_ptr: int) -> int:
    ctx = current_context()
    if not 0 < nsubs <= _MAX_SUBSCRIPTIONS:
        return _ERRNO_INVAL
    raw = read_guest(ctx, caller, in_ptr, nsubs * _SUBSCRIPTION.size, "poll_oneoff subscriptions")
    fd_events: list[bytes] = []
    clocks: list[tuple[int, int]] = []  # (userdata, relative timeout in ns)
    for i in range(nsubs):
        userdata, tag, clock_id, timeout, _precision, flags = _SUBSCRIPTION.unpack_from(raw, i * _SUBSCRIPTION.size)
        if tag != 0:  # fd_read / fd_write: nothing to wait for here
            fd_events.append(_EVENT.pack(userdata, _ERRNO_BADF, tag, 0, 0))
        elif flags & _CLOCK_ABSTIME:
            now = time.monotonic_ns() if clock_id == 1 else time.time_ns()
            clocks.append((userdata, max(0, timeout - now)))
        else:
            clocks.append((userdata, timeout))
    events = fd_events
    if not fd_events and clocks:  # only clocks: sleep until the first fires, never past the deadline
        wait_ns = min(t for _, t in clocks)
        remaining = ctx.deadline - time.monotonic()
        if wait_ns / 1e9 >= remaining:
            raise ctx.fail(TaskTimeoutError(
                f"swarm {ctx.swarm_id!r} asked to sleep {wait_ns / 1e9:.3f}s with {max(remaining, 0):.3f}s "
                "left of its time limit", swarm_id=ctx.swarm_id))
        time.sleep(wait_ns / 1e9)
        events = [_EVENT.pack(u, _ERRNO_SUCCESS, 0, 0, 0) for u, t in clocks if t <= wait_ns]
    write_guest(ctx, caller, out_ptr, b"".join(events), "poll_oneoff events")
    write_guest(ctx, caller, nevents_ptr, struct.pack("<I", len(events)), "poll_oneoff nevents")
    return _ERRNO_SUCCESS


# ------------------------------------------------------------------------------------------ epochs
class EpochTicker:
    """Advances the engine epoch every tick while at least one task runs (wall-clock caps)."""

    def __init__(self, engine: wasmtime.Engine, tick: float = EPOCH_TICK_SECONDS) -> None:
        self._engine = engine
        self.tick = tick
        self._active = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def enter(self) -> None:
        with self._cond:
            self._active += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="if-chassis-epoch", daemon=True)
                self._thread.start()
            self._cond.notify()

    def exit(self) -> None:
        with self._cond:
            self._active -= 1

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._active == 0:
                    self._cond.wait()
            time.sleep(self.tick)
            self._engine.increment_epoch()

    def ticks_for(self, seconds: float) -> int:
        return max(1, math.ceil(seconds / self.tick) + 1)


# ------------------------------------------------------------------------------------------ modules
@dataclass
class CompiledModule:
    """A validated, compiled module shared by every swarm that loads the same bytes."""

    sha256: str
    module: wasmtime.Module
    pre: wasmtime.InstancePre
    needs_wasi: bool
    initial_memory_bytes: int
    size: int


def _functype_matches(ty: Any, params: list[wasmtime.ValType], results: list[wasmtime.ValType]) -> bool:
    return (isinstance(ty, wasmtime.FuncType)
            and [str(p) for p in ty.params] == [str(p) for p in params]
            and [str(r) for r in ty.results] == [str(r) for r in results])


class SandboxRuntime:
    """Engine, linker with the chassis host functions, compiled-module cache, and task runner."""

    _shared: "SandboxRuntime | None" = None
    _shared_lock = threading.Lock()

    def __init__(self, *, cache_dir: str | Path | None = None, max_cached_modules: int = 512) -> None:
        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        config.max_wasm_stack = MAX_WASM_STACK
        # Proposals whose state escapes the contract's caps are off, so such modules fail at load with
        # InvalidModuleError: GC heap objects live outside linear memory (beyond memory_bytes), shared
        # memories and threads outlive the task's store, several memories bypass the one-memory limit.
        config.wasm_gc = False
        config.wasm_function_references = False
        config.wasm_threads = False
        config.wasm_multi_memory = False
        config.wasm_memory64 = False
        config.wasm_component_model = False
        self.engine = wasmtime.Engine(config)
        self.ticker = EpochTicker(self.engine)
        self.linker = self._build_linker()
        self._cache: OrderedDict[str, CompiledModule] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._max_cached = max_cached_modules
        self.cache_dir = Path(cache_dir) if cache_dir else None
        if self.cache_dir:
            self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.cache_dir.stat().st_mode & 0o022:
                # precompiled artifacts are native code: only a directory nobody else can write is trusted
                raise InvalidModuleError(f"cache_dir {self.cache_dir} is writable by group or others")
        self.compilations = 0

    @classmethod
    def shared(cls) -> "SandboxRuntime":
        """One engine per process by default: compiled code and the epoch ticker are shared."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def _build_linker(self) -> wasmtime.Linker:
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        linker.allow_shadowing = True
        for name, params in _DENIED_WASI.items():
            linker.define_func(WASI, name, wasmtime.FuncType(params, [_I32]), _make_denied(name))
        linker.define_func(WASI, "poll_oneoff", wasmtime.FuncType([_I32] * 4, [_I32]), _host_poll_oneoff,
                           access_caller=True)
        linker.allow_shadowing = False
        impls: dict[str, Callable[..., Any]] = {
            "log": _host_log, "http_request": _host_http_request,
            "alloc_failed": _host_alloc_failed, "abort": _host_abort,
        }
        for name, (params, results) in HOST_FUNCTIONS.items():
            linker.define_func("env", name, wasmtime.FuncType(params, results), impls[name], access_caller=True)
        return linker

    # -------------------------------------------------------------------------------- compile
    def compile(self, wasm: bytes) -> CompiledModule:
        """Validate and compile once per distinct module (cached by SHA-256)."""
        if not isinstance(wasm, (bytes, bytearray, memoryview)) or len(wasm) == 0:
            raise InvalidModuleError("wasm_module must be non-empty bytes")
        wasm = bytes(wasm)
        digest = hashlib.sha256(wasm).hexdigest()
        with self._cache_lock:
            hit = self._cache.get(digest)
            if hit is not None:
                self._cache.move_to_end(digest)
                return hit
        module = self._load_module(wasm, digest)
        compiled = self._validate(module, digest, len(wasm))
        with self._cache_lock:
            self._cache[digest] = compiled
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        return compiled

    def _load_module(self, wasm: bytes, digest: str) -> wasmtime.Module:
        artifact = self.cache_dir / f"{digest}.cwasm" if self.cache_dir else None
        if artifact is not None and artifact.exists():
            try:  # only our own artifacts live here (0700 directory, named by the source hash)
                return wasmtime.Module.deserialize_file(self.engine, str(artifact))
            except wasmtime.WasmtimeError:
                artifact.unlink(missing_ok=True)
        if not wasm.startswith(b"\x00asm"):
            raise InvalidModuleError("wasm_module is not a WebAssembly binary (missing \\0asm header)")
        try:
            module = wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise InvalidModuleError(f"invalid WebAssembly module: {exc}") from exc
        self.compilations += 1
        if artifact is not None:
            tmp = artifact.with_suffix(".tmp")
            tmp.write_bytes(module.serialize())
            tmp.chmod(0o600)
            tmp.replace(artifact)
        return module

    def _validate(self, module: wasmtime.Module, digest: str, size: int) -> CompiledModule:
        needs_wasi = False
        for imp in module.imports:
            where = f"{imp.module}.{imp.name}"
            if imp.module == WASI:
                if not isinstance(imp.type, wasmtime.FuncType):
                    raise ForbiddenImportError(f"import {where} is not a function")
                needs_wasi = True
                continue
            spec = HOST_FUNCTIONS.get(imp.name or "") if imp.module == "env" else None
            if spec is None:
                raise ForbiddenImportError(
                    f"module imports {where}, which the chassis does not provide (only env.log, "
                    "env.http_request, env.alloc_failed, env.abort and WASI preview 1)", import_name=where)
            if not _functype_matches(imp.type, *spec):
                raise InvalidModuleError(f"import {where} has the wrong signature", import_name=where)
        exports = {exp.name: exp.type for exp in module.exports}
        memory_type = exports.get("memory")
        if not isinstance(memory_type, wasmtime.MemoryType):
            raise InvalidModuleError("module must export its linear memory as 'memory'")
        if not _functype_matches(exports.get("alloc"), [_I32], [_I32]):
            raise InvalidModuleError("module must export alloc(i32) -> i32")
        if not _functype_matches(exports.get("execute_task"), [_I32, _I32], [_I64]):
            raise InvalidModuleError("module must export execute_task(i32, i32) -> i64")
        try:
            pre = self.linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            raise InvalidModuleError(f"module cannot be linked against the chassis: {exc}") from exc
        initial = memory_type.limits.min * WASM_PAGE
        return CompiledModule(digest, module, pre, needs_wasi, initial, size)

    # -------------------------------------------------------------------------------- run
    def run(self, compiled: CompiledModule, ctx: TaskContext, payload: bytes) -> tuple[bytes, dict[str, Any]]:
        """Run one task in a fresh store. Returns (result bytes, stats) or raises a ChassisError."""
        limits = ctx.limits
        store = wasmtime.Store(self.engine)
        store.set_limits(memory_size=limits.memory_bytes, table_elements=100_000, instances=1, tables=4, memories=1)
        fuel = limits.fuel_budget
        store.set_fuel(fuel)
        if compiled.needs_wasi:
            wasi = wasmtime.WasiConfig()  # no preopens, no env, no args, no stdin
            wasi.stdout_custom = ctx.on_stdout
            wasi.stderr_custom = ctx.on_stderr
            store.set_wasi(wasi)
        ctx.store = store
        stats: dict[str, Any] = {}
        _local.ctx = ctx
        self.ticker.enter()
        started = time.monotonic()
        try:
            remaining = ctx.deadline - started
            if remaining <= 0:
                raise TaskTimeoutError(f"task {ctx.task_id!r} had no time left to run", swarm_id=ctx.swarm_id)
            store.set_epoch_deadline(self.ticker.ticks_for(remaining))
            try:
                result = self._call(compiled, ctx, store, payload)
            except BaseException as exc:  # noqa: BLE001 - every failure is classified below
                raise self._classify(exc, ctx, store, started) from None
            return result, stats
        finally:
            self.ticker.exit()
            _local.ctx = None
            try:
                stats["fuel_consumed"] = fuel - store.get_fuel()
            except wasmtime.WasmtimeError:
                stats["fuel_consumed"] = None
            stats["memory_bytes"] = ctx.memory.data_len(store) if ctx.memory is not None else 0
            ctx.memory = None
            ctx.store = None
            release = getattr(ctx.outbound, "release", None)
            if release is not None:  # the task's own HTTP client (connections, state) ends with it
                release(ctx)
            store.close()  # frees guest memory now (and WASI output callbacks, which must not outlive it)

    def _call(self, compiled: CompiledModule, ctx: TaskContext, store: wasmtime.Store, payload: bytes) -> bytes:
        if compiled.initial_memory_bytes > ctx.limits.memory_bytes:
            raise GuestMemoryError(
                f"module needs {compiled.initial_memory_bytes} bytes of initial memory; the contract allows "
                f"{ctx.limits.max_memory_mb} MB", swarm_id=ctx.swarm_id)
        instance = compiled.pre.instantiate(store)
        exports = instance.exports(store)
        memory = exports["memory"]
        ctx.memory = memory
        ptr = exports["alloc"](store, len(payload))
        # alloc returns an i32, which the binding gives back signed: a negative pointer would index guest
        # memory from its end (Python slicing), so it is refused like 0 and out-of-range ones
        if ptr <= 0 or ptr + len(payload) > memory.data_len(store):
            if memory.data_len(store) + len(payload) > ctx.limits.memory_bytes:
                raise GuestMemoryError(
                    f"the task ({len(payload)} bytes) does not fit in the swarm's {ctx.limits.max_memory_mb} MB",
                    swarm_id=ctx.swarm_id)
            raise GuestProtocolError(f"alloc({len(payload)}) returned an unusable pointer {ptr}")
        if payload:
            memory.write(store, payload, ptr)
        packed = exports["execute_task"](store, ptr, len(payload))
        rptr, rlen = (packed >> 32) & 0xFFFFFFFF, packed & 0xFFFFFFFF
        if rlen > ctx.limits.max_result_bytes:
            raise GuestProtocolError(f"result of {rlen} bytes exceeds the {ctx.limits.max_result_bytes}-byte cap")
        size = memory.data_len(store)
        if rptr + rlen > size:
            raise GuestProtocolError(f"result range {rptr}+{rlen} is outside guest memory ({size} bytes)")
        return bytes(memory.read(store, rptr, rptr + rlen))

    def _classify(self, exc: BaseException, ctx: TaskContext, store: wasmtime.Store, started: float) -> BaseException:
        """Turn whatever came out of wasmtime into the chassis error that explains it.

        wasmtime-py passes host-function exceptions through one process-global slot, so with several
        worker threads the exception object may belong to another task: the verdict therefore comes
        from this task's own context and store, not from the exception identity.
        """
        if ctx.violation is not None:
            return ctx.violation
        if isinstance(exc, ChassisError):
            return exc
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return exc
        elapsed = time.monotonic() - started
        swarm = ctx.swarm_id
        code = exc.trap_code if isinstance(exc, wasmtime.Trap) else None
        try:
            fuel_left = store.get_fuel()
        except wasmtime.WasmtimeError:
            fuel_left = None
        if code == wasmtime.TrapCode.OUT_OF_FUEL or fuel_left == 0:
            return CpuLimitExceededError(
                f"swarm {swarm!r} used up its CPU budget ({ctx.limits.fuel_budget} fuel) after {elapsed:.3f}s",
                swarm_id=swarm, elapsed_seconds=elapsed)
        if code == wasmtime.TrapCode.INTERRUPT or time.monotonic() >= ctx.deadline:
            return TaskTimeoutError(
                f"swarm {swarm!r} ran past its time limit ({elapsed:.3f}s)", swarm_id=swarm, elapsed_seconds=elapsed)
        if isinstance(exc, wasmtime.ExitTrap):
            return GuestTrapError(f"guest exited with code {exc.code} before returning a result",
                                  swarm_id=swarm, exit_code=exc.code)
        if ctx.memory is None and isinstance(exc, wasmtime.WasmtimeError) and "memory" in str(exc).lower():
            return GuestMemoryError(f"instantiation refused by the memory cap: {exc}", swarm_id=swarm)
        if code == wasmtime.TrapCode.STACK_OVERFLOW:
            return GuestTrapError(f"swarm {swarm!r} overflowed its stack", swarm_id=swarm, trap="stack_overflow")
        if ctx.memory is not None:
            try:
                if ctx.memory.data_len(store) + WASM_PAGE > ctx.limits.memory_bytes:
                    return GuestMemoryError(f"swarm {swarm!r} trapped with its memory at the cap", swarm_id=swarm)
            except wasmtime.WasmtimeError:
                pass
        trap = code.name if code is not None else None
        if code is not None:
            reason = code.name.lower()
        else:
            text = str(exc).strip()
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            reason = lines[0] if lines else type(exc).__name__
            if isinstance(exc, wasmtime.WasmtimeError) and "Caused by:" in lines:
                # wasmtime's own WASI refused the call (e.g. a misaligned or out-of-bounds pointer) by
                # trapping: the guest's fault, named by the cause (a Python exception here is a host bug)
                reason = lines[lines.index("Caused by:") + 1] if lines[-1] != "Caused by:" else reason
                trap = "wasi_call_refused"
        return GuestTrapError(f"swarm {swarm!r} trapped: {reason}", swarm_id=swarm, trap=trap)


def decode_result(raw: bytes) -> dict[str, Any]:
    """The guest's result must be one JSON object."""
    try:
        value = loads_bounded(raw.decode("utf-8"))  # a deeply nested result is a protocol error, not a crash
    except (UnicodeDecodeError, ValueError) as exc:
        raise GuestProtocolError(f"guest result is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise GuestProtocolError("guest result must be a JSON object")
    return value
