"""Token prices, computed exactly.

Prices come from AutoGen's own table (`OAI_PRICE1K`, USD per 1k tokens) or from a config entry's
`price`; the arithmetic is in Decimal so that a session's cost is the exact sum of its calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import cast

from autogen.oai.openai_utils import OAI_PRICE1K

_THOUSAND = Decimal(1000)


@dataclass(frozen=True)
class Price:
    prompt_per_1k: Decimal
    completion_per_1k: Decimal
    source: str  # "autogen", "config" or "embedded"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return (self.prompt_per_1k * prompt_tokens + self.completion_per_1k * completion_tokens) / _THOUSAND


def _dec(value: float) -> Decimal:
    return Decimal(str(value))


def autogen_price(model: str) -> Price | None:
    # AutoGen's table is a plain literal that mypy reads as dict[str, object]: each value is the
    # price per 1k tokens, one number for both directions or a (prompt, completion) pair.
    entry = cast("float | tuple[float, float] | None", OAI_PRICE1K.get(model))
    if entry is None:
        return None
    if isinstance(entry, tuple):
        return Price(_dec(entry[0]), _dec(entry[1]), "autogen")
    return Price(_dec(entry), _dec(entry), "autogen")


def config_price(price: tuple[float, float] | list[float], source: str = "config") -> Price:
    return Price(_dec(price[0]), _dec(price[1]), source)
