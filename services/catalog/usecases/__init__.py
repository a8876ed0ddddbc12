"""The application layer of catalog: one class per aggregate or flow, each method one unit of work.

Built once at start-up (`app.py`) and kept under the typed app keys below; handlers, the consumer and the
price job call the same methods.
"""
from services.catalog.usecases.categories import CATEGORIES, Categories
from services.catalog.usecases.prices import PRICES, PriceChangeAnswer, Prices
from services.catalog.usecases.products import PRODUCTS, Products
from services.catalog.usecases.quotes import QUOTES, Quotes
from services.catalog.usecases.sales import SALES, Sales

__all__ = ["CATEGORIES", "PRICES", "PRODUCTS", "QUOTES", "SALES", "Categories", "PriceChangeAnswer", "Prices",
           "Products", "Quotes", "Sales"]
