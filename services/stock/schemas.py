"""Response shapes of stock's public API (documentation: the OpenAPI the gateway aggregates)."""
from __future__ import annotations

from pydantic import BaseModel


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
    distance_m: int
    available: int
    pickup: bool
    ship: bool
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
    transfer_id: str | None
    actor: str
    reference: str | None
    at: str


class MovementPage(BaseModel):
    items: list[MovementOut]
    next_cursor: str | None
