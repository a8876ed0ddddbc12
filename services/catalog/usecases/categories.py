"""Categories: the shelves products are filed under."""
from __future__ import annotations

from aiohttp import web

from libs.mongo import Mongo, refuse_duplicates
from libs.outbox import Outbox
from libs.refusal import CONFLICT
from services.catalog.domain import model
from services.catalog.domain.model import CatalogError
from services.catalog.repository import CategoryRepository
from services.catalog.settings import CatalogSettings
from services.catalog.usecases.base import UseCase
from services.catalog.views import category_view


class Categories(UseCase):
    def __init__(self, mongo: Mongo, outbox: Outbox, settings: CatalogSettings) -> None:
        super().__init__(mongo, outbox, settings)
        self.categories = CategoryRepository(mongo)

    async def all(self) -> dict:
        return {"items": [category_view(d) for d in await self.categories.all()], "next_cursor": None}

    async def category(self, category_id: str) -> dict:
        doc = await self.categories.get(category_id)
        if doc is None:
            raise model.missing("category")
        return category_view(doc)

    async def create(self, category_id: str, name: str) -> dict:
        detail = f"category {category_id} already exists"

        async def unit(session) -> dict:
            if await self.categories.get(category_id, session) is not None:
                raise CatalogError("category-exists", detail, kind=CONFLICT)
            with refuse_duplicates("category-exists", detail):  # another request created it just now
                await self.categories.add({"_id": category_id, "name": name}, session)
            return {"id": category_id, "name": name}

        return await self.unit_of_work(unit)

    async def seed(self, categories: list[dict]) -> None:
        """Add the categories that are missing (demo data); existing ones are left as they are."""
        async def unit(session) -> None:
            for category in categories:
                await self.categories.add_if_missing(category, session)

        await self.unit_of_work(unit)


CATEGORIES = web.AppKey("categories", Categories)
