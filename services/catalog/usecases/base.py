"""What every catalog use case stands on: its unit of work, the outbox, the price band."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from libs.mongo import Mongo
from libs.outbox import Outbox
from services.catalog import metrics
from services.catalog.domain.model import CatalogError
from services.catalog.settings import CatalogSettings

T = TypeVar("T")


class UseCase:
    def __init__(self, mongo: Mongo, outbox: Outbox, settings: CatalogSettings) -> None:
        self.mongo = mongo
        self.outbox = outbox
        self.band = settings.channel_price_band_pct  # how far a channel price may stray from the base, in %

    async def unit_of_work(self, fn: Callable[..., Awaitable[T]]) -> T:
        """Run `fn(session)` as one transaction (or within the one in progress: idempotent creation, consumers).

        A price refused for leaving the band is counted here, on its way out, whichever write refused it.
        """
        try:
            return await self.mongo.transaction(fn)
        except CatalogError as refusal:
            if refusal.code == "price-out-of-band":
                metrics.PRICE_REJECTIONS.labels("out-of-band").inc()
            raise
