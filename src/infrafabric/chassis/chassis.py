"""IFChassis: runs each swarm's code in its own WebAssembly sandbox with hard limits."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import httpx

from infrafabric import seed_wiring

from .contracts import ResourceLimits, ServiceContract, ServiceLevelObjective, validate_swarm_id
from .credentials import ScopedCredentials
from .errors import (
    ChassisError,
    CredentialError,
    CredentialExpiredError,
    GuestMemoryError,
    GuestTrapError,
    InvalidContractError,
    InvalidTaskError,
    RateLimitExceeded,
    SandboxPermissionError,
    SwarmNotLoadedError,
)
from .integrations import Audit, AuditSink, ReputationSink
from .modules import reference_module
from .outbound import OutboundHTTP
from .ratelimit import GCRALimiter
from .sandbox import CompiledModule, SandboxRuntime, TaskContext, decode_result
from .slo import PerformanceSummary, PerformanceTracker

_AUTO: Any = object()  # "resolve it yourself" marker for optional integrations


@dataclass
class SwarmRuntime:
    """What the chassis keeps per loaded swarm (small: the compiled module is shared by hash)."""

    swarm_id: str
    contract: ServiceContract
    compiled: CompiledModule
    autoloaded: bool = False
    semaphore: asyncio.Semaphore | None = None
    loaded_at: float = field(default_factory=time.time)
    credential_tasks: dict[int, str] = field(default_factory=dict)


@dataclass
class TaskOutcome:
    """Full account of one execution; ``execute_task`` returns only ``result``."""

    swarm_id: str
    task_id: str
    result: dict[str, Any]
    latency_ms: float
    stdout: bytes
    stderr: bytes
    logs: list[tuple[int, str]]
    output_truncated: bool
    fuel_consumed: int | None
    memory_bytes: int
    http_calls: int


class IFChassis:
    """The WASM sandbox for untrusted swarm code.

    ``default_module``: a swarm that was never loaded runs the bundled reference guest under the
    default contract (so every refusal still comes from a real guest meeting the host). Pass
    ``default_module=None`` for a strict chassis that refuses unknown swarms.

    ``audit`` and ``reputation_sink`` are where its audit entries and reputation verdicts go; left out,
    they are the seeds' defaults (``infrafabric.seed_wiring``: the default witness, every live governor),
    ``None`` turns either off.
    """

    def __init__(
        self,
        *,
        default_module: bytes | None = _AUTO,
        default_limits: ResourceLimits | None = None,
        audit: AuditSink | None = seed_wiring.DEFAULT,
        reputation_sink: ReputationSink | None = seed_wiring.DEFAULT,
        http_client_factory: Callable[[], httpx.Client] | None = None,
        runtime: SandboxRuntime | None = None,
        max_workers: int = 16,
    ) -> None:
        self.runtime = runtime or SandboxRuntime.shared()
        self.engine = self.runtime.engine
        self._default_module = reference_module() if default_module is _AUTO else default_module
        self._default_limits = default_limits or ResourceLimits()
        self._audit = Audit(seed_wiring.audit_sink(audit))
        self._reputation_sink = seed_wiring.update_reputation if reputation_sink is seed_wiring.DEFAULT \
            else reputation_sink
        self.swarm_runtimes: dict[str, SwarmRuntime] = {}
        self.performance_metrics = PerformanceTracker()
        self._limiters: dict[str, GCRALimiter] = {}
        self._outbound = OutboundHTTP(http_client_factory)  # one client per task: nothing shared
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="if-chassis")
        self._closed = False

    # ------------------------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop worker threads and the outbound client."""
        if not self._closed:
            self._closed = True
            self._executor.shutdown(wait=True)
            self._outbound.close()

    async def __aenter__(self) -> "IFChassis":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    # ------------------------------------------------------------------------------------ loading
    def load_swarm(self, swarm_id: str, wasm_module: bytes, contract: ServiceContract | None = None) -> None:
        """Compile (or reuse the cached compilation of) a module and bind it to the swarm's contract."""
        validate_swarm_id(swarm_id)
        if contract is None:
            contract = ServiceContract(swarm_id=swarm_id, resource_requirements=self._default_limits)
        if not isinstance(contract, ServiceContract):
            raise InvalidContractError("contract must be a ServiceContract")
        if contract.swarm_id != swarm_id:
            raise InvalidContractError(
                f"contract is for swarm {contract.swarm_id!r}, not {swarm_id!r}", swarm_id=swarm_id)
        try:
            compiled = self.runtime.compile(wasm_module)
            if compiled.initial_memory_bytes > contract.resource_requirements.memory_bytes:
                raise GuestMemoryError(
                    f"module needs {compiled.initial_memory_bytes} bytes of initial memory; the contract allows "
                    f"{contract.resource_requirements.max_memory_mb} MB", swarm_id=swarm_id)
        except ChassisError as exc:
            self._audit("swarm_load_refused", {"swarm_id": swarm_id, "error_code": exc.error_code,
                                               "reason": exc.message}, "HIGH")
            raise
        self._install(swarm_id, contract, compiled, autoloaded=False)
        self._audit("swarm_loaded", {"swarm_id": swarm_id, "contract": contract.summary(),
                                     "module_sha256": compiled.sha256, "module_bytes": compiled.size})

    def _install(self, swarm_id: str, contract: ServiceContract, compiled: CompiledModule, *, autoloaded: bool) -> SwarmRuntime:
        limits = contract.resource_requirements
        old = self._limiters.get(swarm_id)
        if old is None or old.rate != float(limits.max_api_calls_per_second) or old.burst != limits.api_burst:
            limiter = GCRALimiter(limits.max_api_calls_per_second, limits.api_burst)
            if old is not None:  # re-loading never resets the bucket (no bypass by reloading)
                limiter._tat = old._tat
            self._limiters[swarm_id] = limiter
        runtime = SwarmRuntime(swarm_id, contract, compiled, autoloaded=autoloaded)
        previous = self.swarm_runtimes.get(swarm_id)
        if previous is not None:
            runtime.credential_tasks = previous.credential_tasks
        self.swarm_runtimes[swarm_id] = runtime
        return runtime

    def unload_swarm(self, swarm_id: str) -> None:
        if self.swarm_runtimes.pop(swarm_id, None) is not None:
            self._audit("swarm_unloaded", {"swarm_id": swarm_id})

    def ensure_loaded(self, swarm_id: str) -> None:
        """Load the default guest for a swarm that was never loaded (what its first task would do), so a
        caller can pay the compilation where it chooses (``AsyncChassis`` does it on a worker thread).
        Refusals are left to the task itself: a bad id or a strict chassis raise there, audited."""
        try:
            validate_swarm_id(swarm_id)
            self._runtime_for(swarm_id)
        except (InvalidContractError, SwarmNotLoadedError):
            pass

    def _runtime_for(self, swarm_id: str) -> SwarmRuntime:
        runtime = self.swarm_runtimes.get(swarm_id)
        if runtime is not None:
            return runtime
        if self._default_module is None:
            raise SwarmNotLoadedError(f"swarm {swarm_id!r} is not loaded", swarm_id=swarm_id)
        compiled = self.runtime.compile(self._default_module)
        contract = ServiceContract(swarm_id=swarm_id, resource_requirements=self._default_limits)
        runtime = self._install(swarm_id, contract, compiled, autoloaded=True)
        self._audit("swarm_loaded", {"swarm_id": swarm_id, "contract": contract.summary(),
                                     "module_sha256": compiled.sha256, "module_bytes": compiled.size,
                                     "autoloaded": True})
        return runtime

    def _limiter(self, swarm_id: str) -> GCRALimiter:
        limiter = self._limiters.get(swarm_id)
        if limiter is None:
            runtime = self.swarm_runtimes.get(swarm_id)
            limits = runtime.contract.resource_requirements if runtime else self._default_limits
            limiter = self._limiters[swarm_id] = GCRALimiter(limits.max_api_calls_per_second, limits.api_burst)
        return limiter

    # ------------------------------------------------------------------------------------ rate limits
    async def _apply_rate_limit(self, swarm_id: str, *, wait: bool = True) -> None:
        """Pace the swarm to its contract's calls/second; ``wait=False`` raises RateLimitExceeded instead."""
        validate_swarm_id(swarm_id)
        limiter = self._limiter(swarm_id)
        if wait:
            await limiter.acquire()
        else:
            self.check_rate_limit(swarm_id)

    def check_rate_limit(self, swarm_id: str) -> None:
        """Non-waiting form: take a slot now or raise RateLimitExceeded."""
        validate_swarm_id(swarm_id)
        try:
            self._limiter(swarm_id).try_acquire(swarm_id)
        except RateLimitExceeded as exc:
            self._audit("rate_limited", {"swarm_id": swarm_id, "retry_after": round(exc.retry_after, 4)}, "WARN")
            raise

    # ------------------------------------------------------------------------------------ execution
    async def execute_task(self, swarm_id: str, task: dict[str, Any],
                           credentials: ScopedCredentials | None = None) -> dict[str, Any]:
        """Run one task in the swarm's sandbox and return the guest's JSON result."""
        outcome = await self.execute_task_detailed(swarm_id, task, credentials)
        return outcome.result

    async def execute_task_detailed(self, swarm_id: str, task: dict[str, Any],
                                    credentials: ScopedCredentials | None = None) -> TaskOutcome:
        """Like execute_task, with captured output, latency, fuel and memory."""
        if self._closed:
            raise ChassisError("chassis is closed")
        try:
            validate_swarm_id(swarm_id)
            runtime = self._runtime_for(swarm_id)
            limits = runtime.contract.resource_requirements
            payload, task_id = self._serialise(task, limits, credentials)
            self._check_credentials(runtime, swarm_id, task_id, credentials)
        except ChassisError as exc:
            self._refused(swarm_id, None, exc)
            raise
        await self._apply_rate_limit(swarm_id)
        if runtime.semaphore is None:
            runtime.semaphore = asyncio.Semaphore(limits.max_concurrent_tasks)
        async with runtime.semaphore:
            timeout = float(limits.max_execution_time_seconds)
            if credentials is not None:
                timeout = min(timeout, credentials.remaining_seconds)
            ctx = TaskContext(
                swarm_id=swarm_id, task_id=task_id, limits=limits, credentials=credentials,
                deadline=time.monotonic() + timeout, limiter=self._limiter(swarm_id), outbound=self._outbound)
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            try:
                try:
                    raw, stats = await loop.run_in_executor(self._executor, self.runtime.run, runtime.compiled, ctx,
                                                            payload)
                    result = decode_result(raw)
                except ChassisError:
                    raise
                except Exception as exc:  # a host bug must still be audited and counted, with a code
                    raise GuestTrapError(f"task ended by an unexpected host error: {type(exc).__name__}",
                                         swarm_id=swarm_id) from exc
            except ChassisError as exc:
                self._track_performance(swarm_id, latency_ms=None, success=False)
                self._publish_reputation(swarm_id)
                self._refused(swarm_id, task_id, exc)
                raise
            latency_ms = (time.perf_counter() - started) * 1000.0
        success = result.get("status") == "success"
        self._track_performance(swarm_id, latency_ms=latency_ms, success=success)
        self._publish_reputation(swarm_id)
        self._audit("task_executed", {
            "swarm_id": swarm_id, "task_id": task_id, "status": str(result.get("status"))[:64],
            "latency_ms": round(latency_ms, 3), "fuel_consumed": stats.get("fuel_consumed"),
            "http_calls": ctx.http_calls}, "INFO" if success else "WARN")
        return TaskOutcome(
            swarm_id=swarm_id, task_id=task_id, result=result, latency_ms=latency_ms,
            stdout=bytes(ctx.stdout), stderr=bytes(ctx.stderr), logs=list(ctx.logs),
            output_truncated=ctx.output_truncated, fuel_consumed=stats.get("fuel_consumed"),
            memory_bytes=stats.get("memory_bytes", 0), http_calls=ctx.http_calls)

    @staticmethod
    def _serialise(task: Any, limits: ResourceLimits,
                   credentials: ScopedCredentials | None) -> tuple[bytes, str]:
        if not isinstance(task, dict):
            raise InvalidTaskError("task must be a dict (a JSON object)")
        try:
            payload = json.dumps(task, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InvalidTaskError(f"task is not JSON-serialisable: {exc}") from exc
        if len(payload) > limits.max_task_bytes:
            raise InvalidTaskError(f"task is {len(payload)} bytes; the limit is {limits.max_task_bytes}")
        task_id = task.get("id", task.get("task_id"))
        if task_id is None:
            task_id = credentials.task_id if credentials is not None else f"task-{uuid.uuid4().hex[:12]}"
        return payload, str(task_id)

    def _check_credentials(self, runtime: SwarmRuntime, swarm_id: str, task_id: str,
                           credentials: ScopedCredentials | None) -> None:
        """Credentials are bound to one swarm and one task, and expire."""
        if credentials is None:
            return
        if not isinstance(credentials, ScopedCredentials):
            raise CredentialError("credentials must be ScopedCredentials", swarm_id=swarm_id)
        if credentials.swarm_id != swarm_id:
            raise CredentialError(
                f"credentials of swarm {credentials.swarm_id!r} cannot be used by swarm {swarm_id!r}",
                swarm_id=swarm_id, owner=credentials.swarm_id)
        if credentials.task_id != task_id:
            raise CredentialError(
                f"credentials are scoped to task {credentials.task_id!r}, not {task_id!r}", swarm_id=swarm_id)
        if credentials.is_expired:
            raise CredentialExpiredError(f"credentials for task {task_id!r} have expired", swarm_id=swarm_id)

    def _refused(self, swarm_id: str, task_id: str | None, exc: ChassisError) -> None:
        severity = "HIGH" if isinstance(exc, (SandboxPermissionError, GuestMemoryError)) else "WARN"
        self._audit("task_refused", {"swarm_id": swarm_id, "task_id": task_id, "error_code": exc.error_code,
                                     "reason": exc.message[:500]}, severity)

    # ------------------------------------------------------------------------------------ SLOs
    def _track_performance(self, swarm_id: str, latency_ms: float | None, success: bool) -> None:
        """Record one execution (host-measured latency; None for failures)."""
        self.performance_metrics.record(swarm_id, latency_ms, success)

    def _slo_for(self, swarm_id: str) -> ServiceLevelObjective | None:
        runtime = self.swarm_runtimes.get(swarm_id)
        return runtime.contract.slos if runtime else None

    def _calculate_reputation(self, swarm_id: str) -> float:
        """Design-doc formula over the last 100 executions; the default SLO when none is loaded."""
        return self.performance_metrics.reputation(swarm_id, self._slo_for(swarm_id))

    def get_performance(self, swarm_id: str) -> PerformanceSummary:
        return self.performance_metrics.summary(swarm_id, self._slo_for(swarm_id))

    def _publish_reputation(self, swarm_id: str) -> None:
        if self._reputation_sink is None:
            return
        try:
            self._reputation_sink(swarm_id, self._calculate_reputation(swarm_id))
        except Exception as exc:  # the governor may not know this swarm; never fail the task for it
            self._audit("reputation_update_failed", {"swarm_id": swarm_id, "error": repr(exc)[:200]}, "WARN")
