"""Business metrics of orders (bounded labels only: channels, fulfilment types, fixed outcomes)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ORDERS_PLACED = Counter("o2o_orders_placed_total", "Orders placed (stock reserved, awaiting payment)",
                        ["channel", "fulfilment"])
CHECKOUTS_REJECTED = Counter("o2o_orders_checkouts_rejected_total", "Checkouts that did not place an order",
                             ["reason"])  # sold-out | coupon-unavailable | insufficient-points | invalid | upstream | other
CHECKOUT_DURATION = Histogram("o2o_orders_checkout_duration_seconds", "Time of POST /orders by outcome",
                              ["outcome"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ORDER_VALUE = Histogram("o2o_orders_order_value_fen", "Order total in fen at placement", ["channel"],
                        buckets=(1000, 5000, 10000, 20000, 50000, 100000, 200000, 500000))
PAYMENTS = Counter("o2o_orders_payments_total", "Payment attempts by outcome",
                   ["provider", "outcome"])  # succeeded | declined | timeout | late_refunded | callback_refused
ORDERS_PAID = Counter("o2o_orders_paid_total", "Orders confirmed (paid)", ["fulfilment"])
ORDERS_CANCELLED = Counter("o2o_orders_cancelled_total", "Orders cancelled", ["fulfilment", "cause"])
# cause: customer | staff | expired | uncollected
TRANSITIONS = Counter("o2o_orders_transitions_total", "Order status changes", ["fulfilment", "status"])
PICKUP_VERIFICATIONS = Counter("o2o_orders_pickup_verifications_total", "Pickup code checks",
                               ["outcome"])  # accepted | refused | locked_now | locked | reset
PICKUP_WAIT = Histogram("o2o_orders_pickup_wait_seconds", "Time from ready-for-pickup to handover",
                        buckets=(300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800, 259200, 604800))
SAGA_ACTIONS = Counter("o2o_orders_saga_actions_total", "Follow-up and compensation actions run",
                       ["action", "outcome"])  # outcome: done | failed
RETURNS = Counter("o2o_orders_returns_total", "Returns by stage", ["stage"])  # code_issued | requested | received
REFUNDED_FEN = Counter("o2o_orders_refunded_fen_total", "Money refunded, in fen", ["reason"])  # cancel | return
SOLD_OUT_SHORTCUTS = Counter("o2o_orders_sold_out_shortcuts_total",
                             "Checkouts answered sold-out from stock's answer a moment ago, without a new reservation")
ORDERS_WITH_PENDING_ACTIONS = Gauge("o2o_orders_with_pending_actions",
                                    "Orders whose follow-up or compensation calls have not succeeded yet "
                                    "(seen by the last sweep, capped at 200); stuck above 0 means another "
                                    "service keeps refusing")
RESERVATIONS_LOST = Counter("o2o_orders_paid_reservations_lost_total",
                            "Paid orders whose stock reservation expired at stock before the goods left")
RETURN_REFUSALS = Counter("o2o_orders_return_refusals_total", "Returns refused at a counter",
                          ["code"])  # return-proof-required | wrong-return-proof | manager-required
