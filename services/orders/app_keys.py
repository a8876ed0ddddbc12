from aiohttp import web

from services.orders.payments.port import PaymentProvider
from services.orders.service import OrderService

ORDERS = web.AppKey("orders", OrderService)
PAYMENTS = web.AppKey("payments", object)
