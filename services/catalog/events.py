"""Integration events catalog publishes (past tense; never renamed)."""
from __future__ import annotations

from datetime import datetime

from libs.bus import IntegrationEvent


class ProductPublished(IntegrationEvent):
    event_type = "catalog.product.published"
    product_id: str
    name: str
    category: str
    sku_ids: list[str]


class PriceChanged(IntegrationEvent):
    event_type = "catalog.price.changed"
    sku_id: str
    product_id: str
    base: int
    channels: dict[str, int]
    previous_base: int
    previous_channels: dict[str, int]
    effective_at: datetime
    schedule_id: str | None = None
