"""Business metrics of catalog (bounded labels)."""
from prometheus_client import Counter

PRICE_CHANGES = Counter("o2o_catalog_price_changes_total", "Price changes applied", ["how"])  # immediate|scheduled
PRICE_REJECTIONS = Counter("o2o_catalog_price_rejections_total", "Price changes refused", ["reason"])
SCANS = Counter("o2o_catalog_code_lookups_total", "Barcode / QR lookups", ["outcome"])  # found|not_found
QUOTES = Counter("o2o_catalog_quotes_total", "Internal price quotes", ["outcome"])  # ok|not_sellable
PRODUCTS_PUBLISHED = Counter("o2o_catalog_products_published_total", "Products made active")
