"""Launchers of the real engines (etcd, NATS, PostgreSQL, RabbitMQ, Prometheus) used by integration/e2e/chaos tests
and benchmarks: free loopback ports, private temp dirs, readiness polling, clean stop (see base.py)."""

from .base import ManagedProcess, pid_exists
from .errors import BinaryNotFoundError, ServerError, ServerStartError
from .etcd import EtcdCluster, EtcdServer, find_etcd_binary, find_etcdctl_binary
from .nats import NatsServer, find_nats_binary
from .ports import free_port, free_ports, port_is_free
from .postgres import PostgresServer, find_postgres_bindir
from .prometheus import PrometheusServer, find_prometheus_binary
from .rabbitmq import RabbitMQServer, find_rabbitmq_server

__all__ = [
    "BinaryNotFoundError",
    "EtcdCluster",
    "EtcdServer",
    "ManagedProcess",
    "NatsServer",
    "PostgresServer",
    "PrometheusServer",
    "RabbitMQServer",
    "ServerError",
    "ServerStartError",
    "find_etcd_binary",
    "find_etcdctl_binary",
    "find_nats_binary",
    "find_postgres_bindir",
    "find_prometheus_binary",
    "find_rabbitmq_server",
    "free_port",
    "free_ports",
    "pid_exists",
    "port_is_free",
]
