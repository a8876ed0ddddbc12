from aiohttp import web

from services.orders.service import OrderService

ORDERS = web.AppKey("orders", OrderService)
# The payment provider port (services/orders/payments/port.py); typed loosely since a Protocol is no class.
PAYMENTS = web.AppKey("payments", object)
