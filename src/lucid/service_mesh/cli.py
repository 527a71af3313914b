"""``lucid mesh ca init | cert issue | jwks | services | call``: the mesh from an operator's shell."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="The service mesh: CA, certificates, token keys, the registry, one-off calls.",
                  no_args_is_help=True)
ca_app = typer.Typer(help="The mesh certificate authority.", no_args_is_help=True)
cert_app = typer.Typer(help="Workload certificates.", no_args_is_help=True)
app.add_typer(ca_app, name="ca")
app.add_typer(cert_app, name="cert")
console = Console()
err = Console(stderr=True)


def _fail(exc: Exception) -> None:
    code = getattr(exc, "error_code", "LUCID_ERR")
    err.print(f"[red]{code}[/red] {getattr(exc, 'message', exc)}")
    raise typer.Exit(2)


@ca_app.command("init")
def ca_init(directory: Path = typer.Option(..., "--dir", help="CA directory (created; keys mode 600)")) -> None:
    """Create the root and intermediate CA once (an existing CA is kept) and export its public half to
    DIR/trust for workloads."""
    from lucid.service_mesh.errors import LucidMeshError
    from lucid.service_mesh.security.cert_manager import CertificateManager

    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        certs = CertificateManager(str(directory / "ca.crt"), str(directory / "ca.key"), str(directory / "certs"))
        root = certs.export_trust(directory / "trust")
    except (LucidMeshError, OSError) as exc:
        _fail(exc)
        return
    fingerprint = certs.root_cert.fingerprint(__import__("cryptography.hazmat.primitives.hashes",
                                                          fromlist=["SHA256"]).SHA256()).hex()
    console.print(f"mesh CA in {directory} (root sha256 {fingerprint[:32]}…); trust bundle {root.parent}")


@cert_app.command("issue")
def cert_issue(
    service: str = typer.Argument(..., help="Service name (the SPIFFE id's service segment)"),
    cluster: str = typer.Option(..., help="Its cluster (e.g. api-gateway)"),
    plane: str = typer.Option(..., help="ops | chain | wallet"),
    ca_dir: Path = typer.Option(..., help="The CA directory made by `ca init`"),
    out: Path = typer.Option(..., help="Directory for SERVICE.crt and SERVICE.key (key mode 600)"),
    days: int = typer.Option(90, min=1, max=3650),
) -> None:
    """Issue one workload its certificate (the workload gets these two files and the trust bundle only)."""
    import os

    from lucid.service_mesh.errors import LucidMeshError
    from lucid.service_mesh.security.cert_manager import CertificateManager

    if not (ca_dir / "ca.key").exists():
        err.print(f"[red]LUCID_ERR_1204[/red] no CA in {ca_dir}: run `lucid mesh ca init --dir {ca_dir}` first")
        raise typer.Exit(2)
    try:
        certs = CertificateManager(str(ca_dir / "ca.crt"), str(ca_dir / "ca.key"), str(ca_dir / "certs"))
        cert, key = certs.generate_service_certificate(service, service, cluster, plane, validity_days=days)
    except (LucidMeshError, OSError) as exc:
        _fail(exc)
        return
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.replace(cert, out / f"{service}.crt")
    os.replace(key, out / f"{service}.key")
    console.print(f"spiffe://lucid.onion/{plane}/{cluster}/{service} → {out / f'{service}.crt'} (valid {days} days)")


@app.command("jwks")
def jwks(keys: list[str] = typer.Option(..., "--key", help="SERVICE=FILE: a service's token key (PEM; created if "
                                                          "missing), bound to that service. A bare FILE is an "
                                                          "issuer key that may sign for every service"),
         admins: list[str] = typer.Option([], "--admin", help="A SERVICE whose tokens may carry mesh:admin "
                                                               "(the operator)"),
         out: Path = typer.Option(..., help="JWK set file to write (public keys only)")) -> None:
    """Write the JWK set of these token keys: the file the discovery API and workloads verify tokens with.

    Each key is published with its owner, so a verifier that trusts several services' keys refuses a
    token one service signed in another's name."""
    from lucid.service_mesh.errors import LucidMeshError
    from lucid.service_mesh.security.auth_provider import ServiceAuthProvider
    from lucid.service_mesh.security.files import write_atomic

    found: list[dict[str, Any]] = []
    owners: set[str] = set()
    try:
        for spec in keys:
            name, sep, file = spec.partition("=")
            is_owned = bool(sep) and re.fullmatch(r"[a-z0-9-]{1,63}", name) is not None  # else a path with '='
            owner, key = (name, Path(file)) if is_owned else (None, Path(spec))
            if owner is None:
                err.print(f"[yellow]warning[/yellow] {key} has no owner: it may sign tokens for every service")
            else:
                owners.add(owner)
            key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            found += ServiceAuthProvider(private_key_path=str(key), owner=owner,
                                         admin=owner is not None and owner in admins).jwks()["keys"]
    except (LucidMeshError, OSError, ValueError) as exc:
        _fail(exc)
        return
    if unknown := sorted(set(admins) - owners):
        err.print(f"[red]LUCID_ERR_1004[/red] --admin {', '.join(unknown)}: no --key SERVICE=FILE for it")
        raise typer.Exit(2)
    write_atomic(out, json.dumps({"keys": found}, indent=1).encode(), 0o644)
    console.print(f"{len(found)} key(s) → {out}")


@app.command("services")
def services(kv: str = typer.Option(..., help="The registry's store (etcd://host:port)"),
             plane: Optional[str] = typer.Option(None), status: str = typer.Option("any", help="any | passing | "
                                                                                  "warning | critical"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Every registered instance with its health (like `consul catalog services`)."""
    from backends.kv import open_kv
    from lucid.service_mesh.discovery.discovery_core import AsyncServiceDiscoveryClient
    from lucid.service_mesh.errors import LucidMeshError

    async def run() -> list[dict[str, Any]]:
        async with open_kv(kv) as store:
            async with AsyncServiceDiscoveryClient(store) as discovery:
                return await discovery.discover_services(plane=plane, status=status)

    try:
        found = asyncio.run(run())
    except LucidMeshError as exc:
        _fail(exc)
        return
    if as_json:
        console.print_json(json.dumps(found))
        return
    table = Table("service", "id", "plane", "cluster", "endpoint", "status")
    for s in found:
        colour = {"healthy": "green", "degraded": "yellow"}.get(s["status"], "red")
        table.add_row(s["serviceName"], s["serviceId"], s["plane"], s["cluster"],
                      f"{s['endpoint']['host']}:{s['endpoint']['port']}", f"[{colour}]{s['status']}[/{colour}]")
    console.print(table)


@app.command("call")
def call(
    service: str = typer.Argument(..., help="Destination service name (resolved in discovery)"),
    path: str = typer.Argument(..., help="Path, e.g. /local"),
    method: str = typer.Option("GET", "--method", "-X"),
    body: Optional[str] = typer.Option(None, "--json", help="JSON body"),
    kv: str = typer.Option(..., help="The registry's store"),
    trust_dir: Path = typer.Option(..., help="The CA's public certificates"),
    cert: Path = typer.Option(..., help="Your certificate from the mesh CA"),
    key: Path = typer.Option(..., help="Its private key"),
    jwt_key: Path = typer.Option(..., help="Your token key (in the mesh's JWK set)"),
    name: str = typer.Option("operator", help="Your service name as in the certificate"),
    cluster: str = typer.Option("admin-interface"),
    plane: str = typer.Option("ops"),
) -> None:
    """One authenticated request (mTLS + JWT) under the plane policy; prints the status and the JSON."""
    from lucid.service_mesh.policy.caller import MeshCaller

    try:
        payload = json.loads(body) if body is not None else None
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--json is not JSON: {exc}") from None

    async def run() -> tuple[int, Any]:
        caller = MeshCaller(kv, trust_dir=trust_dir, cert=cert, key=key, jwt_key=jwt_key, service_name=name,
                            cluster=cluster, plane=plane)
        try:
            return await caller.call(service, method, path, payload)
        finally:
            await caller.close()

    status, answer = asyncio.run(run())
    console.print(f"HTTP {status}")
    console.print_json(json.dumps(answer))
    raise typer.Exit(0 if status < 400 else 1)
