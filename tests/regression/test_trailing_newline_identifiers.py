"""Regression: ``re.match`` with ``^...$`` accepts a trailing newline (``$`` matches before it).

Names that become log lines, file names, certificate fields and SPIFFE ids were accepted with a
``\\n`` at the end; every boundary validator must refuse them.
"""

from __future__ import annotations

import pytest

from infrafabric.witness.canonical import check_name, check_trace_id
from infrafabric.witness.errors import WitnessInputError
from lucid.node.validators import validate_node_id
from lucid.service_mesh.discovery.model import Registration
from lucid.service_mesh.security.identity import validate_segment


def test_witness_component_and_trace_id() -> None:
    assert check_name("component", "IF.coordinator") == "IF.coordinator"
    with pytest.raises(WitnessInputError):
        check_name("component", "IF.coordinator\n")
    with pytest.raises(WitnessInputError):
        check_trace_id("trace-1\n")


def test_node_id() -> None:
    assert validate_node_id("node_abc123") == "node_abc123"
    with pytest.raises(Exception) as err:
        validate_node_id("node_abc123\n")
    assert "Invalid node id" in str(err.value)


def test_mesh_service_name_and_spiffe_segment() -> None:
    good = dict(service_id="svc-1", service_name="orders", cluster="main", plane="ops", host="127.0.0.1",
                port=8443, version="1.0.0")
    Registration(**good).validate()
    with pytest.raises(Exception):
        Registration(**{**good, "service_name": "orders\n"}).validate()
    with pytest.raises(Exception):
        Registration(**{**good, "version": "1.0.0\n"}).validate()
    assert validate_segment("orders", "service_name") == "orders"
    with pytest.raises(ValueError):
        validate_segment("orders\n", "service_name")
