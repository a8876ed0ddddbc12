"""Request and response shapes of stock's API (documentation: the OpenAPI the gateway aggregates)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from libs.models import CURSOR, Strict
from services.stock.domain.model import MOVEMENT_KINDS, REASON_CODES

LOCATION_ID = r"^loc_[A-Za-z0-9_\-]{1,64}$"
SKU_ID = r"^sku_[A-Za-z0-9_\-]{1,100}$"
ORDER_ID = r"^[A-Za-z0-9_\-]{1,100}$"


# --- requests --------------------------------------------------------------------------------

class Capabilities(Strict):
    pickup: bool = False
    ship: bool = False
    sell_online: bool = True


class NewLocation(Strict):
    id: str | None = Field(None, pattern=LOCATION_ID)
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["store", "warehouse"]
    ownership: Literal["direct", "franchise"] = "direct"
    franchisee_id: str | None = Field(None, min_length=1, max_length=100)
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    address: str = Field("", max_length=500)
    opening_hours: str = Field("", max_length=100)
    capabilities: Capabilities = Capabilities()
    daily_capacity: int = Field(0, ge=0, le=1_000_000)
    safety_stock: int = Field(0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def franchise_has_franchisee(self):
        if self.ownership == "franchise" and not self.franchisee_id:
            raise ValueError("a franchise location needs its franchisee_id")
        if self.ownership == "direct" and self.franchisee_id:
            raise ValueError("a direct location has no franchisee_id")
        return self


class LocationPatch(Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    address: str | None = Field(None, max_length=500)
    opening_hours: str | None = Field(None, max_length=100)
    capabilities: Capabilities | None = None
    daily_capacity: int | None = Field(None, ge=0, le=1_000_000)
    safety_stock: int | None = Field(None, ge=0, le=1_000_000)
    active: bool | None = None


class LineIn(Strict):
    sku_id: str = Field(pattern=SKU_ID)
    qty: int = Field(ge=1, le=10_000, strict=True)


class PointIn(Strict):
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


class ReservationIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    order_id: str = Field(pattern=ORDER_ID)
    mode: Literal["ship", "pickup", "in_store"]
    lines: list[LineIn] = Field(min_length=1, max_length=100)
    location_id: str | None = Field(None, pattern=LOCATION_ID)
    destination: PointIn | None = None
    ttl_s: int | None = Field(None, ge=1, le=30 * 24 * 3600)

    @model_validator(mode="after")
    def store_for_store_modes(self):
        if self.mode in ("pickup", "in_store") and not self.location_id:
            raise ValueError(f"mode {self.mode} needs location_id")
        return self


class ExtendIn(Strict):
    ttl_s: int = Field(ge=1, le=30 * 24 * 3600)


class ReleaseIn(Strict):
    reason: Literal["cancelled", "expired", "payment_failed", "order_cancelled"] = "cancelled"


FIELDS_OF_KIND = {"receive": ("location_id", "sku_id", "qty"), "sale": ("location_id", "sku_id", "qty"),
                  "return_to_stock": ("location_id", "sku_id", "qty"),
                  "adjust": ("location_id", "sku_id", "delta"),
                  "count": ("location_id", "sku_id", "counted"),
                  "transfer_out": ("location_id", "sku_id", "qty", "to_location_id"),
                  "transfer_in": ("transfer_id",)}


class MovementIn(Strict):
    kind: Literal[MOVEMENT_KINDS]  # type: ignore[valid-type]
    key: str = Field(min_length=1, max_length=200)
    location_id: str | None = Field(None, pattern=LOCATION_ID)
    sku_id: str | None = Field(None, pattern=SKU_ID)
    qty: int | None = Field(None, ge=1, le=1_000_000, strict=True)
    delta: int | None = Field(None, ge=-1_000_000, le=1_000_000, strict=True)
    counted: int | None = Field(None, ge=0, le=1_000_000, strict=True)
    reason: Literal[REASON_CODES] | None = Field(  # type: ignore[valid-type]
        None, description="why stock changed; an adjustment names one, other kinds have a default")
    note: str | None = Field(None, min_length=1, max_length=500, description="free words for the ledger")
    to_location_id: str | None = Field(None, pattern=LOCATION_ID)
    transfer_id: str | None = Field(None, pattern=r"^trf_[a-f0-9]{1,40}$")
    reference: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def fields_of_kind(self):
        missing = [name for name in FIELDS_OF_KIND[self.kind] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind} movement needs {', '.join(missing)}")
        if self.kind == "adjust" and self.reason is None:
            raise ValueError("an adjustment needs a reason code")
        if self.kind == "adjust" and self.delta == 0:
            raise ValueError("an adjustment needs a non-zero delta")
        return self


class PageQuery(Strict):
    cursor: str | None = CURSOR
    limit: int = Field(50, ge=1, le=200)


class LocationQuery(PageQuery):
    kind: Literal["store", "warehouse"] | None = None


class AvailabilityQuery(Strict):
    sku: str = Field(pattern=SKU_ID)
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    mode: Literal["pickup", "ship", "in_store"] = "pickup"
    limit: int = Field(10, ge=1, le=50)


class LevelQuery(PageQuery):
    location_id: str | None = Field(None, pattern=LOCATION_ID)
    sku_id: str | None = Field(None, pattern=SKU_ID)


class ApprovalQuery(PageQuery):
    location_id: str | None = Field(None, pattern=LOCATION_ID)
    status: Literal["pending", "approved", "rejected"] | None = None


class Decision(Strict):
    note: str | None = Field(None, min_length=1, max_length=500)


class LevelSettings(Strict):
    reorder_point: int = Field(ge=0, le=1_000_000, strict=True)


# --- responses -------------------------------------------------------------------------------


class CapabilitiesOut(BaseModel):
    pickup: bool
    ship: bool
    sell_online: bool = True


class LocationOut(BaseModel):
    id: str
    name: str
    kind: str
    ownership: str
    franchisee_id: str | None
    lat: float
    lng: float
    address: str
    opening_hours: str
    capabilities: CapabilitiesOut
    daily_capacity: int
    safety_stock: int
    active: bool


class LocationPage(BaseModel):
    items: list[LocationOut]
    next_cursor: str | None


class AvailabilityItem(BaseModel):
    location_id: str
    name: str
    kind: Literal["store", "warehouse"] = Field(description="a warehouse appears for ship only")
    distance_m: int
    available: int
    pickup: bool
    ship: bool
    ship_capacity_left: int | None = Field(None, description="mode=ship: ship orders this location can still "
                                                             "take today (its local day)")
    opening_hours: str
    open_now: bool | None


class AvailabilityOut(BaseModel):
    sku_id: str
    mode: str
    items: list[AvailabilityItem]


class LevelOut(BaseModel):
    location_id: str
    sku_id: str
    on_hand: int
    reserved: int
    available: int
    in_transit: int
    reorder_point: int


class LevelPage(BaseModel):
    items: list[LevelOut]
    next_cursor: str | None


class MovementOut(BaseModel):
    id: str
    key: str
    kind: str
    location_id: str
    sku_id: str
    qty: int
    delta: int
    on_hand_before: int
    on_hand_after: int
    reserved: int
    available_after: int
    variance: int | None
    reason: str | None
    note: str | None = None
    transfer_id: str | None
    actor: str
    reference: str | None
    approval_id: str | None = Field(None, description="the approval a manager gave for a clerk's movement")
    approved_by: str | None = None
    at: str


class MovementPage(BaseModel):
    items: list[MovementOut]
    next_cursor: str | None


class ApprovalOut(BaseModel):
    """A clerk's movement above the threshold: pending until a manager of the store approves or rejects it."""
    id: str
    key: str
    status: Literal["pending", "approved", "rejected"]
    kind: str = Field(description="the movement kind asked for (adjust, count, receive, return_to_stock)")
    location_id: str
    sku_id: str
    reason: str = Field(description="one of the reason codes")
    units: int = Field(description="units the movement changes on-hand by, as planned when asked")
    movement: dict = Field(description="the movement as the clerk asked for it")
    requested_by: str
    requested_at: str
    decided_by: str | None
    decided_at: str | None
    decision_note: str | None
    movement_id: str | None = Field(description="the ledger line, once approved")


class ApprovalPage(BaseModel):
    items: list[ApprovalOut]
    next_cursor: str | None
