"""The gateway's configuration: prices, upstream providers, and per-swarm model policy, from one TOML file.

Provider keys are never in the file: each provider names an environment variable or a file that holds
its key, read once when the gateway starts; the key goes only into the upstream request's header.

    version = "2026-12-01"              # the rates table's version, recorded with every charge
    [models."gpt-4o-mini"]
    input = 0.15                        # $ per million prompt tokens
    output = 0.60
    cached_input = 0.075                # optional (default: input): prompt tokens read from the cache
    # cache_write = 0.1875              # optional (default: input): prompt tokens written to the provider's
    #                                   # cache (Anthropic bills them at 1.25x input)
    max_output_tokens = 16384
    provider = "openai"
    [providers.openai]
    kind = "openai"                     # or "anthropic"
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"      # or api_key_file = "/run/secrets/openai"
    [swarms."session-1-ndi"]            # optional: what one swarm may use
    models = ["gpt-4o-mini"]
    default_model = "gpt-4o-mini"
    requests_per_minute = 600
    tokens_per_minute = 200000
    [policy]
    cheaper_unless_allowed = { "gpt-4o" = "gpt-4o-mini" }   # the larger model only when allowed
    [ledger]
    allowance_calls = 8                 # a replica holds budget for this many calls at a time (allowance.py);
                                        # 0: every call is its own hold in the shared ledger
    allowance_idle = 1.0                # seconds unused before an allowance goes back to the budget
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from infrafabric.errors import ValidationError
from infrafabric.gateway.prices import RateCard


@dataclass(frozen=True)
class Provider:
    name: str
    kind: Literal["openai", "anthropic"]
    base_url: str
    api_key: str = field(repr=False)  # never printed


@dataclass(frozen=True)
class SwarmPolicy:
    models: frozenset[str] | None = None  # None: every priced model
    default_model: str | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    allow_larger: bool = False  # the task's contract allows the larger model


@dataclass(frozen=True)
class GatewayConfig:
    rates: RateCard
    providers: dict[str, Provider]
    swarms: dict[str, SwarmPolicy]
    cheaper: dict[str, str]  # larger model -> the cheaper one used unless the swarm may use the larger
    default_policy: SwarmPolicy = SwarmPolicy()
    allowance_calls: int = 8
    allowance_idle: float = 1.0

    def policy(self, swarm_id: str) -> SwarmPolicy:
        return self.swarms.get(swarm_id, self.default_policy)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, environ: dict[str, str] | None = None) -> "GatewayConfig":
        env = os.environ if environ is None else environ
        rates = RateCard.from_dict(data)
        try:
            providers = {}
            for name, row in dict(data.get("providers", {})).items():
                kind = str(row["kind"])
                if kind not in ("openai", "anthropic"):
                    raise ValueError(f"provider {name}: kind must be openai or anthropic")
                if "api_key" in row:
                    raise ValueError(f"provider {name}: put the key in api_key_env or api_key_file, not the file")
                if "api_key_file" in row:
                    key = Path(row["api_key_file"]).read_text().strip()
                else:
                    key = env.get(str(row["api_key_env"]), "")
                if not key:
                    raise ValueError(f"provider {name}: its key ({row.get('api_key_env') or row.get('api_key_file')})"
                                     " is empty")
                providers[name] = Provider(name, kind, str(row["base_url"]).rstrip("/"), key)  # type: ignore[arg-type]
            for rate in rates.rates.values():
                if rate.provider not in providers:
                    raise ValueError(f"model {rate.model}: provider {rate.provider!r} is not configured")
            swarms = {}
            for swarm, row in dict(data.get("swarms", {})).items():
                models = frozenset(str(m) for m in row["models"]) if "models" in row else None
                for m in models or ():
                    rates.rate(m)
                default = str(row["default_model"]) if "default_model" in row else None
                swarms[str(swarm)] = SwarmPolicy(models, default, _positive(row.get("requests_per_minute")),
                                                 _positive(row.get("tokens_per_minute")),
                                                 _flag(row.get("allow_larger", False), "allow_larger"))
            cheaper = {str(k): str(v) for k, v in dict(data.get("policy", {}).get("cheaper_unless_allowed", {})).items()}
            for large, small in cheaper.items():
                rates.rate(large), rates.rate(small)
            ledger = dict(data.get("ledger", {}))
            calls, idle = ledger.get("allowance_calls", 8), ledger.get("allowance_idle", 1.0)
            if type(calls) is not int or not 0 <= calls <= 1000:
                raise ValueError("ledger.allowance_calls must be an integer from 0 to 1000")
            if type(idle) not in (int, float) or not 0 < idle <= 3600:
                raise ValueError("ledger.allowance_idle must be a number of seconds from 0 to 3600")
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ValidationError(f"gateway configuration is invalid: {exc}", error_code="IF_ERR_INVALID_POLICY") \
                from None
        return cls(rates, providers, swarms, cheaper, allowance_calls=calls, allowance_idle=float(idle))

    @classmethod
    def load(cls, path: str | Path) -> "GatewayConfig":
        with open(path, "rb") as f:
            return cls.from_dict(tomllib.load(f))


def _flag(value: Any, name: str) -> bool:
    """A policy switch: true or false, never a string ("false" would read as true and grant the larger model)."""
    if type(value) is not bool:
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return value


def _positive(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise ValueError("rates per minute must be positive integers")
    return value
