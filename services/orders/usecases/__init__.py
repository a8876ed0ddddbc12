"""The application layer of orders: one class per flow, each method one or more units of work.

Built once at start-up (`app.py`) and kept under the typed app keys below; handlers, the stock consumer and
the sweeper job call the same methods. `OrderFlow.mutate` is the unit of work around one order.
"""
from aiohttp import web

from services.orders.payments.port import PaymentProvider
from services.orders.usecases.base import OrderFlow
from services.orders.usecases.checkout import CHECKOUT, Checkout
from services.orders.usecases.expiry import EXPIRY, Expiry
from services.orders.usecases.followups import FOLLOW_UPS, FollowUps
from services.orders.usecases.fulfilment import FULFILMENT, Fulfilment
from services.orders.usecases.orders import ORDERS, Orders
from services.orders.usecases.payment import PAYMENTS, Payments
from services.orders.usecases.returns import RETURNS, Returns

# The payment provider adapter (services/orders/payments/); typed loosely since a Protocol is no class.
PAYMENT_PROVIDER: web.AppKey[PaymentProvider] = web.AppKey("orders.payment_provider", object)

__all__ = ["CHECKOUT", "EXPIRY", "FOLLOW_UPS", "FULFILMENT", "ORDERS", "PAYMENTS", "PAYMENT_PROVIDER", "RETURNS",
           "Checkout", "Expiry", "FollowUps", "Fulfilment", "OrderFlow", "Orders", "Payments", "Returns"]
