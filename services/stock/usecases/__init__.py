"""The application layer of stock: one class per aggregate or flow, built once at start-up (app.py).

Each public method is one unit of work (`mongo.transaction`, which joins one already in progress: the
consumer's inbox transaction, or the stored answer of an `Idempotency-Key`). Handlers, consumers and jobs
parse, call one method and answer; the rules themselves live in `domain/`.
"""
from services.stock.usecases.core import StockCore
from services.stock.usecases.levels import AVAILABILITY, LEVELS, Availability, Levels
from services.stock.usecases.locations import LOCATIONS, Locations
from services.stock.usecases.movements import APPROVALS, MOVEMENTS, Approvals, Movements
from services.stock.usecases.reconciliation import RECONCILIATION, Reconciliation
from services.stock.usecases.reservations import RESERVATIONS, Reservations

__all__ = ["APPROVALS", "AVAILABILITY", "LEVELS", "LOCATIONS", "MOVEMENTS", "RECONCILIATION", "RESERVATIONS",
           "Approvals", "Availability", "Levels", "Locations", "Movements", "Reconciliation", "Reservations",
           "StockCore"]
