"""Request and response models of catalog's API (the response ones document it: the gateway aggregates them)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, StrictInt, field_validator, model_validator

from libs.clock import to_ms
from libs.models import CURSOR, LIMIT, Strict, fen
from services.catalog.domain.model import CHANNELS, MAX_PRICE_FEN, STATUSES

PRODUCT_ID = r"^prd_[A-Za-z0-9_\-]{1,64}$"
SKU_ID = r"^sku_[A-Za-z0-9_\-]{1,100}$"


# --- requests ----------------------------------------------------------------------------------

class PriceIn(Strict):
    base: int = fen()
    channels: dict[Literal[CHANNELS], StrictInt] = Field(default_factory=dict)  # type: ignore[valid-type]


class NewSku(Strict):
    id: str | None = Field(None, pattern=SKU_ID)
    barcode: str = Field(min_length=4, max_length=64, pattern=r"^[A-Za-z0-9_\-:.]+$")
    attributes: dict[str, str] = Field(default_factory=dict, max_length=20)
    price: PriceIn
    cost_price: int = fen(ge=0, default=0)


class NewProduct(Strict):
    id: str | None = Field(None, pattern=PRODUCT_ID)
    name: str = Field(min_length=1, max_length=200)
    brand: str = Field("", max_length=100)
    category: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=5000)
    images: list[str] = Field(default_factory=list, max_length=20)
    status: Literal["draft", "active"] = "draft"
    skus: list[NewSku] = Field(default_factory=list, max_length=200)


class ProductPatch(Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    brand: str | None = Field(None, max_length=100)
    category: str | None = Field(None, min_length=1, max_length=100)
    description: str | None = Field(None, max_length=5000)
    images: list[str] | None = Field(None, max_length=20)


class StatusChange(Strict):
    status: Literal[STATUSES]  # type: ignore[valid-type]


class PriceChange(Strict):
    base: int | None = fen(default=None)
    # A channel set to null drops its own price: the channel sells at the base price again.
    channels: dict[Literal[CHANNELS], StrictInt | None] | None = None  # type: ignore[valid-type]
    effective_at: AwareDatetime | None = None

    @field_validator("channels")
    @classmethod
    def positive(cls, value):
        if value and any(v is not None and not 0 < v <= MAX_PRICE_FEN for v in value.values()):
            raise ValueError("channel prices are positive integers of fen")
        return value

    @model_validator(mode="after")
    def changes_something(self):
        if self.base is None and self.channels is None:
            raise ValueError("give a new base, channel prices, or both")
        return self

    def change(self) -> dict[str, Any]:
        """The change as the domain applies it: `base` and/or `channels` (a None channel drops its price)."""
        change: dict[str, Any] = {} if self.base is None else {"base": self.base}
        if self.channels is not None:
            change["channels"] = dict(self.channels)
        return change

    def effective_at_ms(self) -> int | None:
        return to_ms(self.effective_at) if self.effective_at else None


class NewCategory(Strict):
    id: str = Field(pattern=r"^[a-z0-9_\-]{1,50}$")
    name: str = Field(min_length=1, max_length=100)


class QuoteIn(Strict):
    channel: Literal[CHANNELS]  # type: ignore[valid-type]
    sku_ids: list[str] = Field(min_length=1, max_length=200)


class ProductQuery(Strict):
    category: str | None = Field(None, max_length=100)
    status: Literal[STATUSES] | None = None  # type: ignore[valid-type]
    q: str | None = Field(None, min_length=1, max_length=100)
    cursor: str | None = CURSOR
    limit: int = LIMIT


# --- responses ---------------------------------------------------------------------------------


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


class PriceHistoryEntry(BaseModel):
    before: PriceOut | None
    after: PriceOut
    how: str  # created | immediate | scheduled
    actor: str
    schedule_id: str | None
    effective_at: str
    recorded_at: str


class PriceOverview(BaseModel):
    sku_id: str
    current: PriceOut
    scheduled: list[ScheduleOut]
    history: list[PriceHistoryEntry]
