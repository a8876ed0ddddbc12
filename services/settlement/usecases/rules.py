"""Split rules: versioned; a new version takes the latest one's values for what it leaves out."""
from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web

from libs.clock import utcnow
from libs.mongo import Mongo, refuse_duplicates
from libs.refusal import INVALID, Refusal
from services.settlement.domain.rules import DEFAULT_RULE, next_version
from services.settlement.repository import SplitRuleRepository
from services.settlement.usecases.access import not_found

# A new rule may start "now": allow for the client's clock being a little behind ours.
BACKDATE_TOLERANCE = timedelta(minutes=1)


class SplitRules:
    def __init__(self, mongo: Mongo) -> None:
        self.mongo = mongo
        self.rules = SplitRuleRepository(mongo)

    async def ensure_default(self) -> None:
        """The default rule (version 1) always exists, so every sale has a rule in force."""
        await self.mongo.transaction(lambda session: self.rules.add_if_absent(DEFAULT_RULE, session))

    async def all(self) -> dict:
        return {"items": await self.rules.documents(), "next_cursor": None}

    async def get(self, version: str) -> dict:
        doc = await self.rules.get(int(version)) if version.isdigit() else None
        if doc is None:
            raise not_found("split rule")
        return doc

    async def create(self, effective_from: datetime, changes: dict, actor: str) -> dict:
        """A new version from `changes` (the request's fields, `effective_from` included)."""
        if effective_from < utcnow() - BACKDATE_TOLERANCE:
            raise Refusal("rule-backdated", "effective_from is in the past: a new rule cannot change sales that "
                          "may already be settled; choose now or a later time", kind=INVALID)

        async def unit(session) -> dict:
            rule = next_version(await self.rules.latest(session), changes)
            with refuse_duplicates("split-rule-version-taken", f"another request created version {rule.version} "
                                   "at the same time; send the rule again"):
                return await self.rules.add(rule, session, created_by=actor)

        return await self.mongo.transaction(unit)


SPLIT_RULES = web.AppKey("settlement_split_rules", SplitRules)
