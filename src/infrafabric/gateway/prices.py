"""Model prices: a versioned rates table (dollars per million tokens), and the bounds a call is reserved at.

Why exact decimals: a budget is money; a call's cost is tokens × rate, summed over thousands of calls, and
the gateway's promise is that the settled total never passes the budget, to the cent and below.

The reservation bound: before a call is forwarded its maximum cost is reserved. The prompt is bounded by
its UTF-8 byte count (a BPE token is at least one byte, so no prompt has more tokens than bytes, whatever
it contains) and the output by ``max_tokens`` (or the model's output limit when the call gives none).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from infrafabric.errors import ValidationError

MILLION = Decimal(1_000_000)
MAX_PRICE_PLACES = 12  # dollars per million tokens: 18 places per token, 6 to spare of an amount's 24


@dataclass(frozen=True)
class ModelRate:
    model: str
    input: Decimal  # $ per million prompt tokens
    output: Decimal  # $ per million completion tokens
    cached_input: Decimal  # $ per million prompt tokens served from the provider's cache
    max_output_tokens: int  # what the model may produce when a call sets no max_tokens
    provider: str  # which upstream serves it (``upstream.py``)
    upstream_model: str  # the model's name at that provider
    cache_write: Decimal | None = None  # $ per million prompt tokens written to the provider's cache (Anthropic
    # bills them above the input rate: 1.25x for 5 minutes); None: the input rate

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0,
             cache_write_tokens: int = 0) -> Decimal:
        """``input_tokens`` counts every prompt token, those read from and written to the cache included."""
        total = max(input_tokens, 0)
        cached = min(max(cached_input_tokens, 0), total)
        written = min(max(cache_write_tokens, 0), total - cached)
        write_rate = self.input if self.cache_write is None else self.cache_write
        return (self.input * (total - cached - written) + self.cached_input * cached + write_rate * written
                + self.output * output_tokens) / MILLION

    def output_bound(self, max_tokens: int | None) -> int:
        """Output tokens one completion can have: what the call asks, at most the model's limit."""
        return self.max_output_tokens if max_tokens is None else min(max_tokens, self.max_output_tokens)

    def max_cost(self, prompt_bytes: int, output_tokens: int) -> Decimal:
        """The most a call can cost: every prompt byte a token at the dearest prompt rate (input, or a cache
        write), plus ``output_tokens`` (every completion's bound, summed) at the output rate."""
        prompt_rate = max(self.input, self.cached_input, self.cache_write or self.input)
        return (prompt_rate * prompt_bytes + self.output * output_tokens) / MILLION


@dataclass(frozen=True)
class RateCard:
    version: str
    rates: dict[str, ModelRate]

    def rate(self, model: str) -> ModelRate:
        rate = self.rates.get(model)
        if rate is None:
            raise ValidationError(f"model {model!r} has no price in rates table {self.version}",
                                  error_code="IF_ERR_UNKNOWN_MODEL")
        return rate

    def estimate(self, model: str, input_tokens: int, output_tokens: int, operations: int = 1) -> Decimal:
        return self.rate(model).cost(input_tokens, output_tokens) * operations

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RateCard":
        try:
            version = str(data["version"])
            rates = {}
            for name, row in dict(data["models"]).items():
                rate = ModelRate(
                    model=str(name), input=_price(row["input"]), output=_price(row["output"]),
                    cached_input=_price(row.get("cached_input", row["input"])),
                    max_output_tokens=int(row["max_output_tokens"]), provider=str(row["provider"]),
                    upstream_model=str(row.get("upstream_model", name)),
                    cache_write=_price(row["cache_write"]) if "cache_write" in row else None)
                if not 1 <= rate.max_output_tokens <= 10_000_000:
                    raise ValueError(f"max_output_tokens of {name} out of range")
                rates[rate.model] = rate
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise ValidationError(f"rates table is invalid: {exc}", error_code="IF_ERR_INVALID_POLICY") from None
        if not rates:
            raise ValidationError("rates table names no model", error_code="IF_ERR_INVALID_POLICY")
        return cls(version, rates)

    @classmethod
    def load(cls, path: str | Path) -> "RateCard":
        with open(path, "rb") as f:
            return cls.from_dict(tomllib.load(f))


def _price(value: Any) -> Decimal:
    price = Decimal(str(value))
    if not price.is_finite() or price < 0 or price > 1_000_000:
        raise ValueError(f"price {value!r} must be a finite number of dollars per million tokens, 0 to 1e6")
    if -int(price.as_tuple().exponent) > MAX_PRICE_PLACES:
        # a charge is a price x tokens / 10**6 and must fit an amount's 24 decimals: a price with more
        # places would make every call through this model unchargeable
        raise ValueError(f"price {value!r} may have at most {MAX_PRICE_PLACES} decimals")
    return price
