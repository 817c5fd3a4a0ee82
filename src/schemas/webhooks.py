"""A webhook as a request names it (`webhook: {url}` on POST /api/runs and on a schedule), and a
run's delivery as the API shows it: every attempt with its time, HTTP status or error, and
duration (`services/webhooks.py` holds the rules)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_URL_CHARS = 2000


class WebhookSpec(BaseModel):
    """Where to POST the run's summary when it ends; its host must be in
    `webhooks.allowed_hosts` (none by default: webhooks are refused until the operator names some)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=MAX_URL_CHARS, description="http(s)://host[:port]/path")


class DeliveryAttempt(BaseModel):
    at: str = Field(description="when the attempt began (ISO 8601, UTC)")
    status_code: int | None = Field(default=None, description="the receiver's HTTP status, if it answered")
    error: str | None = Field(default=None, description="why the attempt failed, if it did")
    duration_s: float


class WebhookDelivery(BaseModel):
    delivery_id: str = Field(description="sent as X-Autobots-Delivery: the same on every attempt")
    url: str
    state: Literal["pending", "delivered", "failed"]
    attempts: list[DeliveryAttempt]
