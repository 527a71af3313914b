"""IF.gateway: metered model calls. Swarms call OpenAI- and Anthropic-compatible routes with their own
credential; each call's maximum cost is reserved in the governor's shared ledger before it is sent and
settled to the provider's reported usage after (``app.py``, ``reservations.py``, ``prices.py``)."""

from infrafabric.gateway.config import GatewayConfig
from infrafabric.gateway.prices import ModelRate, RateCard
from infrafabric.gateway.reservations import BudgetExceededError, ReservationLedger

__all__ = ["BudgetExceededError", "GatewayConfig", "ModelRate", "RateCard", "ReservationLedger"]
