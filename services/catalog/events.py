"""Integration events catalog publishes (past tense; never renamed)."""
from __future__ import annotations

from libs.bus import IntegrationEvent


class ProductPublished(IntegrationEvent):
    event_type = "catalog.product.published"
    product_id: str
    name: str
    category: str
    sku_ids: list[str]
