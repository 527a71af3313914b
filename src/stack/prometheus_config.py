"""The Prometheus configuration ``up`` writes: one job per service, mTLS where the service speaks only mTLS,
the node API's bearer token from a file (never inline)."""

from __future__ import annotations

import json
from pathlib import Path

from stack.catalog import ServiceSpec

__all__ = ["prometheus_config", "write_prometheus_config"]


def prometheus_config(specs: list[ServiceSpec], scrape_interval: str = "1s") -> dict[str, object]:
    jobs: list[dict[str, object]] = []
    for spec in specs:
        s = spec.scrape
        if s is None:
            continue
        job: dict[str, object] = {"job_name": spec.name, "scheme": s.scheme, "metrics_path": s.path,
                                  "static_configs": [{"targets": [s.target], "labels": {"service": spec.name}}]}
        if s.tls is not None:
            ca, cert, key = s.tls
            job["tls_config"] = {"ca_file": str(ca), "cert_file": str(cert), "key_file": str(key),
                                 **({"server_name": s.server_name} if s.server_name else {})}
        if s.bearer_file is not None:
            job["authorization"] = {"type": "Bearer", "credentials_file": str(s.bearer_file)}
        jobs.append(job)
    return {"global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                       "evaluation_interval": "15s"},
            "scrape_configs": jobs}


def write_prometheus_config(path: Path, specs: list[ServiceSpec], scrape_interval: str = "1s") -> Path:
    # JSON is YAML: no YAML emitter needed, and no value can break out of its quoting
    path.write_text(json.dumps(prometheus_config(specs, scrape_interval), indent=1))
    return path
