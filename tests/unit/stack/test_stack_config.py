"""The stack's configuration: topology files from careless operators, the Prometheus config it writes, its
state directory's secrets, and a metrics endpoint that demands a client certificate."""

from __future__ import annotations

import json
import os
import ssl
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter

from backends.metrics import MetricsTLS, parse_listen, serve_metrics
from backends.servers.probe import http_get
from stack.catalog import Health, Scrape, ServiceSpec
from stack.prometheus_config import prometheus_config
from stack.state import StackState
from stack.topology import DEFAULT_TOPOLOGY, SERVICES, TopologyError, load_topology, parse_topology


def test_the_default_topology_is_the_phase0_platform_on_one_machine() -> None:
    topo = load_topology()
    assert set(topo.services) == set(SERVICES) and topo.services["node-management"].port == 8083
    assert "model-gateway" not in topo.service_names()  # disabled by default
    assert list(topo.swarms) == [f"session-{i}-{n}" for i, n in enumerate(
        ["ndi", "webrtc", "h323", "sip", "cli", "talent", "bus"], start=1)]
    assert topo.service_names()[-7:] == [f"swarm-{s}" for s in topo.swarms]
    assert all(e.url is None for e in topo.engines.values())  # everything started here


@pytest.mark.parametrize("text, where", [
    ("[services.nope]\n", "services.nope"),
    ("[engines.mysql]\n", "engines.mysql"),
    ("[engines.etcd]\nmembers = 2\n", "members"),
    ("[services.coordinator]\nport = 70000\n", "port"),
    ("[services.coordinator]\nport = true\n", "port"),
    ("[swarms.\"Bad Id\"]\n", "swarms"),
    ("[swarms.ok]\ncapabilities = \"x\"\n", "capabilities"),
    ("[swarms.ok]\ncost = -1\n", "cost"),
    ("[swarms.ok]\nbudget = \"lots\"\n", "numbers"),
    ("[stack]\nhost = \"a b\"\n", "stack.host"),
    ("[unknown]\n", "unknown"),
    ("not toml = = \n", "TOML"),
    ("[services.model-gateway]\nenabled = true\n", "model-gateway needs config"),
    ("[services.model-gateway]\nconfig = 3\n", "config must be a path"),
    ("[services.coordinator]\nenabled = \"yes\"\n", "enabled must be"),
])
def test_a_wrong_topology_names_what_is_wrong(text: str, where: str) -> None:
    with pytest.raises(TopologyError) as caught:
        parse_topology(text)
    assert caught.value.error_code == "STACK_ERR_TOPOLOGY" and where in caught.value.message


toml_scalars = st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=False), st.booleans(),
                         st.text(max_size=20), st.lists(st.integers(), max_size=3))


@settings(max_examples=300, deadline=None)
@given(section=st.sampled_from(["stack", "engines.etcd", "engines.nats", "services.coordinator",
                                "services.node-management", "swarms.s1", "swarms.bad_name!"]),
       key=st.sampled_from(["host", "members", "url", "port", "enabled", "capabilities", "cost", "budget"]),
       value=toml_scalars)
def test_any_value_in_any_field_is_accepted_or_a_topology_error(section: str, key: str, value: object) -> None:
    head = section if "." not in section else '{}."{}"'.format(*section.split(".", 1))
    text = f"[{head}]\n{key} = {json.dumps(value)}\n"
    try:
        topo = parse_topology(text)
    except TopologyError as exc:  # the one refusal the loader may give; any other exception fails this test
        assert exc.error_code == "STACK_ERR_TOPOLOGY" and exc.message
        return
    # accepted: every value let through has the type and range the supervisor relies on
    assert isinstance(topo.host, str) and topo.host
    for engine in topo.engines.values():
        assert engine.members in (1, 3) and (engine.url is None or isinstance(engine.url, str))
    for service in topo.services.values():
        assert type(service.port) is int and 0 <= service.port <= 65535 and type(service.enabled) is bool
    for swarm in topo.swarms.values():
        assert all(isinstance(c, str) for c in swarm.capabilities) and 0 < swarm.cost and 0 <= swarm.budget


def test_a_service_config_path_is_relative_to_the_topology_file(tmp_path: Path) -> None:
    (tmp_path / "topo.toml").write_text('[services.model-gateway]\nconfig = "gw/gateway.toml"\n')
    assert load_topology(tmp_path / "topo.toml").services["model-gateway"].config == tmp_path / "gw" / "gateway.toml"
    assert load_topology().services["model-gateway"].enabled is False  # off until an operator gives it providers


def test_prometheus_scrapes_mesh_services_over_mtls_and_the_node_api_with_a_token_file(tmp_path: Path) -> None:
    tls = (tmp_path / "ca.crt", tmp_path / "p.crt", tmp_path / "p.key")
    specs = [ServiceSpec("coordinator", ["x"], Health("http"), scrape=Scrape("127.0.0.1:1")),
             ServiceSpec("tron-payment", ["x"], Health("http"), scrape=Scrape("127.0.0.1:2", "https", tls=tls,
                                                                              server_name="tron-payment.lucid.internal")),
             ServiceSpec("node-management", ["x"], Health("http"), scrape=Scrape("127.0.0.1:3",
                                                                                 bearer_file=tmp_path / "token")),
             ServiceSpec("swarm-a", ["x"], Health("log"))]
    jobs = {j["job_name"]: j for j in prometheus_config(specs)["scrape_configs"]}  # type: ignore[index]
    assert set(jobs) == {"coordinator", "tron-payment", "node-management"}  # a worker has no endpoint
    assert jobs["tron-payment"]["scheme"] == "https"
    assert jobs["tron-payment"]["tls_config"] == {"ca_file": str(tls[0]), "cert_file": str(tls[1]),
                                                  "key_file": str(tls[2]),
                                                  "server_name": "tron-payment.lucid.internal"}
    assert jobs["node-management"]["authorization"] == {"type": "Bearer", "credentials_file": str(tmp_path / "token")}
    assert "credentials" not in json.dumps(jobs["node-management"]).replace("credentials_file", "")


def test_state_secrets_are_made_once_owner_only_and_refused_when_exposed(tmp_path: Path) -> None:
    state = StackState(tmp_path / "st")
    first = state.secret("db")
    assert state.secret("db") == first and len(first) >= 32
    path = state.secret_file("db")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    os.chmod(path, 0o644)
    with pytest.raises(TopologyError):
        state.secret("db")
    assert stat.S_IMODE(state.root.stat().st_mode) == 0o711  # traversable, not listable


def test_ports_are_kept_across_ups_unless_taken(tmp_path: Path) -> None:
    import socket

    state = StackState(tmp_path / "st")
    port = state.port("service.x")
    assert StackState(tmp_path / "st").port("service.x") == port  # resumed
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        assert StackState(tmp_path / "st").port("service.x") != port  # someone else has it now
    assert StackState(tmp_path / "st").port("service.fixed", 8083) == 8083


def test_a_port_is_never_handed_to_two_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The OS offers a port that was chosen but not yet bound again (CI once gave the chassis pool's and the
    coordinator's metrics one port, and the second service could never start)."""
    import stack.state as state_module

    offers = iter([41000, 41000, 41000, 41001, 41001, 41002])
    monkeypatch.setattr(state_module, "free_port", lambda: next(offers))
    monkeypatch.setattr(state_module, "port_is_free", lambda port: True)
    state = StackState(tmp_path / "st")
    assert [state.port(k) for k in ("a.metrics", "b.metrics", "c.metrics")] == [41000, 41001, 41002]
    (tmp_path / "st" / "ports.json").write_text(json.dumps({"a": 41000, "b": 41000}))  # a duplicate kept on disk
    offers = iter([41000, 41005])
    again = StackState(tmp_path / "st")
    assert sorted([again.port("a"), again.port("b")]) == [41000, 41005]  # one of them moves


@pytest.mark.parametrize("listen", ["nope", "h:", "h:99999", ":-1", "1.2.3.4:x"])
def test_a_metrics_listen_address_is_validated(listen: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(listen)


def test_an_mtls_metrics_endpoint_refuses_a_client_without_a_certificate(tmp_path: Path) -> None:
    from lucid.service_mesh.security.cert_manager import CertificateManager

    ca = CertificateManager(str(tmp_path / "ca.crt"), str(tmp_path / "ca.key"), str(tmp_path / "certs"),
                            root_key_size=2048, intermediate_key_size=2048)
    cert, key = ca.generate_service_certificate("tron-payment", "tp", "tron-payment", "wallet")
    scraper_cert, scraper_key = ca.generate_service_certificate("prometheus", "prom", "admin-interface", "ops")
    registry = CollectorRegistry()
    Counter("demo_total", "demo", registry=registry).inc(3)
    endpoint = serve_metrics(registry, "127.0.0.1:0", MetricsTLS(Path(cert), Path(key), Path(ca.ca_cert_path)))
    try:
        anonymous = ssl.create_default_context(cafile=ca.ca_cert_path)
        anonymous.check_hostname = False
        with pytest.raises((ssl.SSLError, OSError)):
            http_get(endpoint.url, context=anonymous, timeout=2)
        scraper = ssl.create_default_context(cafile=ca.ca_cert_path)
        scraper.check_hostname = False
        scraper.load_cert_chain(scraper_cert, scraper_key)
        status, body = http_get(endpoint.url, context=scraper, timeout=2)
        assert status == 200 and b"demo_total 3.0" in body
    finally:
        endpoint.close()
