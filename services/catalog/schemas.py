"""Response shapes of catalog's public API (documentation: the OpenAPI the gateway aggregates)."""
from __future__ import annotations

from pydantic import BaseModel


class PriceOut(BaseModel):
    base: int
    channels: dict[str, int]


class SkuOut(BaseModel):
    id: str
    product_id: str
    barcode: str
    attributes: dict[str, str]
    price: PriceOut
    cost_price: int | None = None  # HQ and services only


class ProductOut(BaseModel):
    id: str
    name: str
    brand: str
    category: str
    description: str
    images: list[str]
    status: str
    skus: list[SkuOut]
    created_at: str | None
    updated_at: str | None


class ProductPage(BaseModel):
    items: list[ProductOut]
    next_cursor: str | None


class ProductSummary(BaseModel):
    id: str
    name: str
    brand: str
    category: str
    status: str
    images: list[str]


class ScannedSku(SkuOut):
    sellable: bool
    product: ProductSummary


class ScheduleOut(BaseModel):
    id: str
    sku_id: str
    change: dict
    status: str
    effective_at: str
    rejected_because: str | None


class CategoryOut(BaseModel):
    id: str
    name: str


class CategoryPage(BaseModel):
    items: list[CategoryOut]
    next_cursor: str | None
