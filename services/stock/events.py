"""Integration events stock publishes (past tense; never renamed)."""
from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from libs.bus import IntegrationEvent


class AllocatedLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku_id: str
    qty: int


class AllocationData(BaseModel):
    """Where the goods of a reservation are held; ownership lets settlement credit a franchise store."""
    model_config = ConfigDict(extra="forbid")
    location_id: str
    ownership: str
    franchisee_id: str | None
    lines: list[AllocatedLine]


class NearbyStore(BaseModel):
    model_config = ConfigDict(extra="forbid")
    location_id: str
    distance_m: int


class StockReserved(IntegrationEvent):
    event_type = "stock.reserved"
    reservation_id: str
    order_id: str
    mode: str
    allocations: list[AllocationData]
    expires_at: datetime


class ReservationRejected(IntegrationEvent):
    event_type = "stock.reservation_rejected"
    order_id: str
    mode: str
    lines: list[AllocatedLine]
    reason: str
    nearest: list[NearbyStore]


class StockReleased(IntegrationEvent):
    event_type = "stock.released"
    reservation_id: str
    order_id: str
    reason: str  # cancelled | expired | order_cancelled
    allocations: list[AllocationData]


class StockCommitted(IntegrationEvent):
    event_type = "stock.committed"
    reservation_id: str
    order_id: str
    allocations: list[AllocationData]


class StockLevelLow(IntegrationEvent):
    event_type = "stock.level_low"
    location_id: str
    sku_id: str
    available: int
    on_hand: int
    reorder_point: int


class StockSkuExhausted(IntegrationEvent):
    """A level's available quantity reached 0: the SKU is sold out at that location (once per sell-out)."""
    event_type = "stock.sku.exhausted"
    location_id: str
    sku_id: str


class StockSkuReplenished(IntegrationEvent):
    """A level that was sold out has stock available again (released, received, returned or repaired)."""
    event_type = "stock.sku.replenished"
    location_id: str
    sku_id: str
    available: int


class MovementApprovalRequested(IntegrationEvent):
    """A store clerk asked for a movement above the threshold: it waits for a manager of the store."""
    event_type = "stock.movement.approval_requested"
    approval_id: str
    location_id: str
    sku_id: str
    kind: str
    reason: str
    units: int
    requested_by: str


class MovementApproved(IntegrationEvent):
    """A manager approved a clerk's movement: it is now in the ledger."""
    event_type = "stock.movement.approved"
    approval_id: str
    movement_id: str
    location_id: str
    sku_id: str
    kind: str
    reason: str
    delta: int
    requested_by: str
    decided_by: str


class MovementRejected(MovementApprovalRequested):
    """A manager rejected a clerk's movement: nothing changed."""
    event_type = "stock.movement.rejected"
    decided_by: str
    note: str | None
