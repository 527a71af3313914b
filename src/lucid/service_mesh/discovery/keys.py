"""Key layout of the registry in the key-value store (one prefix, so one watch sees everything)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "/lucid/mesh/"


@dataclass(frozen=True)
class RegistryKeys:
    prefix: str = DEFAULT_PREFIX

    def service(self, name: str, service_id: str) -> str:
        return f"{self.prefix}services/{name}/{service_id}"

    def services(self, name: str | None = None) -> str:
        return f"{self.prefix}services/" + (f"{name}/" if name else "")

    def health(self, service_id: str) -> str:
        return f"{self.prefix}health/{service_id}"

    def index(self, service_id: str) -> str:
        return f"{self.prefix}ids/{service_id}"

    def classify(self, key: str) -> tuple[str, str, str] | None:
        """('service', name, id) | ('health', '', id) | ('index', '', id) | None for foreign keys."""
        if not key.startswith(self.prefix):
            return None
        parts = key[len(self.prefix):].split("/")
        if parts[0] == "services" and len(parts) == 3:
            return "service", parts[1], parts[2]
        if parts[0] == "health" and len(parts) == 2:
            return "health", "", parts[1]
        if parts[0] == "ids" and len(parts) == 2:
            return "index", "", parts[1]
        return None
