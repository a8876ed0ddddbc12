from __future__ import annotations

import pytest

from tests.integration.orders.kit import orders_suite


@pytest.fixture
async def suite(mongo_url, bus_namespace, request):
    """Orders with its siblings, fresh databases per test; `@pytest.mark.parametrize("suite", [{...}],
    indirect=True)` passes orders settings overrides (and stock's under "stock")."""
    overrides = dict(getattr(request, "param", {}) or {})
    stock_overrides = overrides.pop("stock", {})
    async with orders_suite(mongo_url, bus_namespace, orders_overrides=overrides,
                            stock_overrides=stock_overrides) as harness:
        yield harness
