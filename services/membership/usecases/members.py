"""Members: registration, profile, search, channel identities, QR scans and attribution, merges, dormancy."""
from __future__ import annotations

import hashlib
import secrets
from typing import Any

from aiohttp import web

from libs.clock import now_ms, rfc3339, utcnow
from libs.ids import new_id
from libs.logging import get_logger
from libs.mongo import ConcurrencyConflict, refuse_duplicates
from libs.pagination import decode_cursor, page_of
from libs.refusal import FORBIDDEN
from services.membership import metrics
from services.membership.domain import members as member_rules
from services.membership.domain import otp as otp_rules
from services.membership.domain import points as points_rules
from services.membership.domain.errors import INVALID, LIMITED, NOT_FOUND, MembershipError
from services.membership.events import MemberDormant, MemberMerged, MemberRegistered
from services.membership.repository import ScanRepository
from services.membership.usecases.auth import Codes, Tokens
from services.membership.usecases.base import DAY_MS, UseCase, member_not_found
from services.membership.usecases.coupons import Coupons
from services.membership.usecases.loyalty import Points, Tiers
from services.membership.usecases.views import (attribution_of, audience_entry, public_coupon, public_member,
                                                public_qr)

log = get_logger("membership.members")

SEARCH_SCOPE = "members.search"
AUDIENCE_SCOPE = "members.audience"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def identity_taken() -> MembershipError:
    return MembershipError("identity-taken", "this identity belongs to another member; verify your phone there to merge")


class Members(UseCase):
    """One member across channels: registration, profile, identities, search, audiences, dormancy."""

    def __init__(self, *args, points: Points) -> None:
        super().__init__(*args)
        self.points = points
        self.scans = ScanRepository(self.mongo)

    async def register_in(self, session, *, source: str, phone: str | None = None, locale: str = "zh-CN",
                          identity: tuple[str, str, bool] | None = None, name: str | None = None,
                          email: str | None = None, marketing_consent: bool = False,
                          member_id: str | None = None, qr: dict | None = None,
                          named_by: str | None = None) -> dict:
        """A new member within the unit of work in progress (login, scan, demo); `named_by` says who named
        the channel identity when it was not the member (staff at a counter)."""
        now = now_ms()
        doc = {"_id": member_id or new_id("mbr"), "status": "active", "name": name, "phone": phone, "email": email,
               "locale": locale, "marketing_consent": marketing_consent,
               "marketing_consent_at_ms": now if marketing_consent else 0, "tags": [],
               "bound_store_id": None, "bound_staff_id": None, "bound_campaign_id": None, "bound_at_ms": 0,
               "bound_until_ms": 0, "tier": self.tiers[0].name, "rolling_paid": 0, "points_balance": 0,
               "dormant": False, "created_at": utcnow(), "created_at_ms": now, "last_activity_ms": now,
               "source": source}
        await self.members.add(doc, session)
        if phone:
            await self.members.add_identity(doc["_id"], "phone", phone, True, session)
        if identity:
            await self.members.add_identity(doc["_id"], identity[0], identity[1], identity[2], session,
                                            named_by=named_by)
        qr = qr or {}
        await self.outbox.record(session, MemberRegistered(
            member_id=doc["_id"], phone=phone, email=email, locale=locale, source=source,
            store_id=qr.get("store_id"), staff_id=qr.get("staff_id"), campaign_id=qr.get("campaign_id"),
            marketing_consent=marketing_consent), subject=doc["_id"])
        self.mongo.after_commit(lambda: metrics.MEMBERS_REGISTERED.labels(source).inc())
        doc["version"] = 1
        return doc

    async def ensure_demo(self, person: dict[str, Any]) -> None:
        """A member of the demo data set, with its binding and opening points; created once."""
        async def unit(session):
            if await self.members.get(person["id"], session) is not None:
                return
            member = await self.register_in(session, source="demo", phone=person.get("phone"),
                                            locale=person.get("locale", "zh-CN"), name=person.get("name"),
                                            marketing_consent=bool(person.get("marketing_consent")),
                                            member_id=person["id"])
            if person.get("bound_store_id"):
                await self.members.bind_if_unbound(member["_id"], member["created_at_ms"], {
                    "bound_store_id": person["bound_store_id"], "bound_staff_id": person.get("bound_staff_id"),
                    "bound_campaign_id": None,
                    "bound_until_ms": member["created_at_ms"] + self.settings.binding_days * DAY_MS}, session)
                await self.members.add_tags(member["_id"], [f"store:{person['bound_store_id']}"], session)
            if person.get("points"):
                await self.points.post(session, member, int(person["points"]), points_rules.OPENING,
                                       note="opening balance")

        await self.mongo.transaction(unit)

    async def get(self, member_id: str) -> dict[str, Any]:
        """The stored member (following merges), or 404."""
        return await self.find_member(member_id)

    async def view(self, member_id: str) -> dict[str, Any]:
        member = await self.find_member(member_id)
        identities = await self.read(lambda: self.members.identities_of(member["_id"]))
        return public_member(member, identities)

    async def attribution(self, member_id: str, scan_token: str | None = None) -> dict[str, Any]:
        """Who the member is bound to (store, assistant, campaign), as orders credits a sale; with the scan
        token the member's checkout named, also the QR that member scanned (`scan`, null unless the token was
        issued to this member and is still fresh)."""
        member = await self.find_member(member_id)
        answer = attribution_of(member)
        if scan_token is not None:
            token = await self.read(lambda: self.scans.token(token_digest(scan_token)))
            fresh = token is not None and token["expires_at_ms"] > now_ms() and \
                member["_id"] in (token["member_id"], await self._survivor_of(token["member_id"]))
            answer["scan"] = {k: token[k] for k in ("code", "store_id", "staff_id", "campaign_id")} if fresh else None
            metrics.SCAN_TOKENS.labels("honoured" if fresh else "refused").inc()
        return answer

    async def _survivor_of(self, member_id: str) -> str | None:
        survivor = await self.read(lambda: self.members.get_live(member_id))
        return survivor["_id"] if survivor else None

    async def update_profile(self, member_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        async def unit(session):
            member = await self.live_member(member_id, session)
            fields = {k: v for k, v in changes.items() if k in ("name", "email", "locale")}
            if "marketing_consent" in changes:
                fields["marketing_consent"] = bool(changes["marketing_consent"])
                fields["marketing_consent_at_ms"] = now_ms()
            if fields:
                await self.members.set_fields(member["_id"], fields, session)
            return member["_id"]

        return await self.view(await self.mongo.transaction(unit))

    async def link_identity(self, member_id: str, kind: str, value: str) -> dict[str, Any]:
        """Attach a channel identity (WeChat, marketplace) to the member; one identity belongs to one member."""
        async def unit(session):
            member = await self.live_member(member_id, session)
            named = await self.members.identity(kind, value, session)
            if named is not None:
                live = await self.members.get_live(named["member_id"], session)
                if live is not None and live["_id"] == member["_id"]:
                    return member["_id"]
                if not member_rules.claimable_by(named, member["_id"]):
                    raise identity_taken()
                if not await self.members.claim_identity(kind, value, named["member_id"], member["_id"], session):
                    raise ConcurrencyConflict(f"identity {kind} claimed concurrently")
                await self.scans.record({"_id": new_id("isc"), "action": "claimed", "kind": kind,
                                         "value_digest": token_digest(value), "member_id": member["_id"],
                                         "from_member_id": named["member_id"], "staff_id": None,
                                         "named_by": named.get("named_by"), "at_ms": now_ms()}, session)
                self.mongo.after_commit(metrics.IDENTITY_CLAIMS.inc)
                return member["_id"]
            with refuse_duplicates(identity_taken().code, identity_taken().detail):
                await self.members.add_identity(member["_id"], kind, value, False, session)
            return member["_id"]

        return await self.view(await self.mongo.transaction(unit))

    async def search(self, *, stores: list[str] | None, tag: str | None = None, phone: str | None = None,
                     dormant: bool | None = None, cursor: str | None = None, limit: int = 50) -> dict[str, Any]:
        """Active members by tag, phone, dormancy; `stores` limits them to members bound there (None: all)."""
        selector: dict[str, Any] = {"status": "active"}
        if tag:
            selector["tags"] = {"$in": [tag]}  # nx-27017: equality on an indexed array finds nothing; $in works
        if phone:
            selector["phone"] = otp_rules.normalize_phone(phone)
        if dormant is not None:
            selector["dormant"] = dormant
        if stores is not None:
            selector["bound_store_id"] = {"$in": sorted(stores)}
        return await self._page(selector, cursor, limit, SEARCH_SCOPE, public_member)

    async def audience(self, *, tag: str | None, store_id: str | None, cursor: str | None,
                       limit: int) -> dict[str, Any]:
        """Members for a campaign send (notifications): contact and consent only."""
        selector: dict[str, Any] = {"status": "active"}
        if tag:
            selector["tags"] = {"$in": [tag]}
        if store_id:
            selector["bound_store_id"] = store_id
        return await self._page(selector, cursor, limit, AUDIENCE_SCOPE, audience_entry)

    async def _page(self, selector: dict, cursor: str | None, limit: int, scope: str, view) -> dict[str, Any]:
        after = decode_cursor(cursor, scope)
        docs = await self.read(lambda: self.members.page(selector, after, limit + 1))
        return page_of(docs, limit, scope=scope, view=view)

    async def mark_dormant(self, now: int | None = None) -> int:
        """Flag members without activity for `dormant_after_days` (published for win-back campaigns)."""
        now = now or now_ms()
        days = self.settings.dormant_after_days
        candidates = await self.read(lambda: self.members.dormant_candidates(now - days * DAY_MS))
        marked = 0
        for candidate in candidates:
            if await self.mongo.transaction(lambda s, member_id=candidate["_id"]: self._doze(s, member_id, now)):
                marked += 1
        if marked:
            metrics.DORMANT.inc(marked)
        return marked

    async def _doze(self, session, member_id: str, now: int) -> bool:
        days = self.settings.dormant_after_days
        member = await self.members.get(member_id, session)
        if member is None or member.get("dormant") or member.get("status") != "active" or \
                not member_rules.is_dormant(member.get("last_activity_ms", 0), now, days):
            return False
        await self.members.set_fields(member_id, {"dormant": True}, session)
        await self.outbox.record(session, MemberDormant(
            member_id=member_id, last_activity_at=rfc3339(member.get("last_activity_ms", 0)),
            dormant_after_days=days, phone=member.get("phone"), email=member.get("email"),
            locale=member.get("locale") or "zh-CN", marketing_consent=bool(member.get("marketing_consent"))),
            subject=member_id)
        return True


class Scans(UseCase):
    """A shopper scanned a store's, an assistant's or a campaign's QR code: tags, first-touch binding, coupon.

    A member scanning as themselves gets the campaign coupon and a scan token (their checkout names it to credit
    this QR). Staff naming a shopper's channel identity at the counter are counted per hour, audited, change no
    consent and take no coupon for the shopper (a made-up identity must not farm them)."""

    def __init__(self, *args, members: Members, coupons: Coupons) -> None:
        super().__init__(*args)
        self.registrations = members
        self.wallets = coupons
        self.scans = ScanRepository(self.mongo)

    async def scan(self, code: str, *, member_id: str | None, identity: tuple[str, str] | None, locale: str,
                   marketing_consent: bool | None, staff_id: str | None = None) -> dict[str, Any]:
        """As the logged-in member, or (staff) as the channel identity, registered if new."""
        qr = await self.read(lambda: self.coupons.qr(code))
        if qr is None or qr.get("status", "active") != "active":
            raise MembershipError("qr-code-not-found", f"QR code {code} is unknown or retired", kind=NOT_FOUND)
        by_staff = member_id is None
        if by_staff:
            if marketing_consent is not None:
                raise MembershipError("consent-by-member-only", "marketing consent is given or withdrawn only by "
                                                                "the member, in their app", kind=FORBIDDEN)
            await self._count_staff_scan(staff_id or "unknown")

        async def unit(session):
            now = now_ms()
            member, created = await self._scanner(session, qr, member_id, identity, locale, marketing_consent,
                                                  staff_id)
            campaign = await self.coupons.campaign(qr["campaign_id"], session) if qr.get("campaign_id") else None
            outcome = member_rules.scan(member, qr, campaign, now, self.settings.binding_days)
            if by_staff:
                outcome = member_rules.for_staff_scan(outcome)
            await self.members.add_tags(member["_id"], outcome.tags, session)
            bound = outcome.bind and await self.members.bind_if_unbound(member["_id"], now, {
                "bound_store_id": outcome.store_id, "bound_staff_id": outcome.staff_id,
                "bound_campaign_id": outcome.campaign_id, "bound_until_ms": outcome.bound_until_ms}, session)
            if marketing_consent is not None and not created:
                await self.members.set_fields(member["_id"], {"marketing_consent": marketing_consent,
                                                              "marketing_consent_at_ms": now}, session)
            issued, skipped = [], None
            if outcome.grant_campaign_id and not await self.coupons.granted(campaign["_id"], member["_id"], session):
                issued, skipped = await self._grant(session, member, campaign, now)
            elif by_staff and campaign is not None and campaign.get("coupon_template_id"):
                skipped = member_rules.NOT_PRESENT
            token, expires_at = None, None
            if by_staff:
                await self._audit(session, staff_id, identity, member["_id"], created, qr, now)
            else:
                token, expires_at = await self._scan_token(session, member["_id"], qr, now)
            fresh = await self.members.get(member["_id"], session)
            return {"member_id": fresh["_id"], "created": created, "bound_now": bool(bound),
                    "tags": fresh.get("tags", []), "attribution": attribution_of(fresh, now),
                    "coupons_issued": issued, "coupon_skipped": skipped, "scan_token": token,
                    "scan_token_expires_at": rfc3339(expires_at) if expires_at else None}

        answer = await self.mongo.transaction(unit)
        outcome = "bound" if answer["bound_now"] else "tagged"
        self.mongo.after_commit(lambda: metrics.SCANS.labels(qr.get("kind", "store"), outcome).inc())
        return answer

    async def _count_staff_scan(self, staff_id: str) -> None:
        """At most `staff_identity_scans_per_hour` identity scans per staff member (counted before judged)."""
        now = now_ms()
        taken = await self.mongo.transaction(lambda s: self.scans.take_scan(
            staff_id, member_rules.hour_window(now), self.settings.staff_identity_scans_per_hour, s))
        if not taken:
            metrics.STAFF_IDENTITY_SCANS.labels("limited").inc()
            log.warning("membership.staff_identity_scan_limited", staff_id=staff_id)
            raise MembershipError("identity-scan-limit", "too many identity scans by this staff member this hour",
                                  kind=LIMITED, retry_after_s=member_rules.retry_after_s(now))

    async def _audit(self, session, staff_id: str | None, identity: tuple[str, str], member_id: str, created: bool,
                     qr: dict, now: int) -> None:
        """Who named which identity (its digest: the audit is not a second copy of openids), for whom, where."""
        await self.scans.record({"_id": new_id("isc"), "action": "scanned", "staff_id": staff_id,
                                 "kind": identity[0], "value_digest": token_digest(identity[1]),
                                 "member_id": member_id, "created": created, "qr_code": qr["_id"],
                                 "store_id": qr.get("store_id"), "at_ms": now}, session)
        log.info("membership.staff_identity_scan", staff_id=staff_id, identity_kind=identity[0], member_id=member_id,
                 created=created, qr_code=qr["_id"])
        self.mongo.after_commit(lambda: metrics.STAFF_IDENTITY_SCANS.labels("registered" if created else "known").inc())

    async def _scan_token(self, session, member_id: str, qr: dict, now: int) -> tuple[str, int]:
        """A short-lived token, issued to this member for this scan: the only way a checkout credits a QR."""
        token = secrets.token_urlsafe(24)
        expires_at = now + self.settings.scan_token_ttl_s * 1000
        await self.scans.add_token({"_id": token_digest(token), "member_id": member_id, "code": qr["_id"],
                                    "store_id": qr.get("store_id"), "staff_id": qr.get("staff_id"),
                                    "campaign_id": qr.get("campaign_id"), "expires_at_ms": expires_at}, session)
        self.mongo.after_commit(lambda: metrics.SCAN_TOKENS.labels("issued").inc())
        return token, expires_at

    async def _scanner(self, session, qr: dict, member_id: str | None, identity: tuple[str, str] | None,
                       locale: str, marketing_consent: bool | None, staff_id: str | None) -> tuple[dict, bool]:
        """(the scanning member, registered now)."""
        if member_id is not None:
            return await self.live_member(member_id, session), False
        kind, value = identity
        known = await self.members.member_id_for(kind, value, session)
        member = await self.members.get_live(known, session) if known else None
        if member is not None:
            return member, False
        return await self.registrations.register_in(session, source="scan", locale=locale,
                                                    identity=(kind, value, False),
                                                    marketing_consent=bool(marketing_consent), qr=qr,
                                                    named_by=f"staff:{staff_id}"), True

    async def _grant(self, session, member: dict, campaign: dict, now: int) -> tuple[list[dict], str | None]:
        """The campaign's coupon, once per member, within the template's caps: (issued, why skipped)."""
        template = await self.coupons.template(campaign["coupon_template_id"], session)
        reason = await self.wallets.why_not_issuable(template, member["_id"], now, session)
        if reason is not None:
            return [], reason
        try:
            coupon = await self.wallets.issue_in(session, member, template, now, campaign_id=campaign["_id"])
        except MembershipError as exc:
            # The cap ran out between the check and the guarded take (another transaction took it):
            # run the scan again; the check then skips the coupon instead of failing the scan.
            raise ConcurrencyConflict(exc.code) from exc
        await self.coupons.record_grant(campaign["_id"], member["_id"], coupon["_id"], session)
        return [public_coupon(coupon)], None


class QrCodes(UseCase):
    """Store, assistant and campaign QR codes: what a scan attributes to."""

    async def create(self, qr: dict[str, Any], replace: bool = False) -> dict[str, Any]:
        exists = ("qr-code-exists", f"QR code {qr['_id']} exists")

        async def unit(session):
            if qr.get("campaign_id") and await self.coupons.campaign(qr["campaign_id"], session) is None:
                raise MembershipError("unknown-campaign", f"no campaign {qr['campaign_id']}", kind=INVALID)
            if qr.get("staff_id"):
                staff = await self.staff.get(qr["staff_id"], session)
                if staff is None or qr.get("store_id") not in staff.get("store_ids", []):
                    raise MembershipError("unknown-staff",
                                          f"staff {qr['staff_id']} does not work at store {qr.get('store_id')}",
                                          kind=INVALID)
            if not replace and await self.coupons.qr(qr["_id"], session) is not None:
                raise MembershipError(*exists)
            with refuse_duplicates(*exists):
                await self.coupons.put_qr(qr, session, replace=replace)
            return public_qr(qr)

        return await self.mongo.transaction(unit)

    async def list(self, store_id: str | None, stores: set[str] | None) -> list[dict[str, Any]]:
        """QR codes (of one store); `stores` limits them to those stores (None: all)."""
        docs = await self.read(lambda: self.coupons.qr_list(store_id))
        return [public_qr(d) for d in docs if stores is None or d.get("store_id") in stores]


class Merges(UseCase):
    """Two members found to be one person: the older survives and keeps every point and coupon exactly once."""

    def __init__(self, *args, codes: Codes, tokens: Tokens, tiers: Tiers) -> None:
        super().__init__(*args)
        self.codes, self.tokens, self.tiers_flow = codes, tokens, tiers

    async def merge(self, first_id: str, second_id: str, reason: str) -> dict[str, Any]:
        async def unit(session):
            first = await self.members.get_live(first_id, session)
            second = await self.members.get_live(second_id, session)
            if first is None or second is None:
                raise member_not_found()
            if first["_id"] == second["_id"]:
                raise MembershipError("same-member", "a member cannot be merged with itself", kind=INVALID)
            return await self._merge(session, first, second, reason)

        answer = await self.mongo.transaction(unit)
        self.mongo.after_commit(metrics.MEMBERS_MERGED.inc)
        return answer

    async def link_phone(self, member_id: str, phone: str, code: str) -> dict[str, Any]:
        """Verify a phone for the member; when it belongs to another member, the two are merged."""
        phone = otp_rules.normalize_phone(phone)

        async def unit(session):
            refusal = await self.codes.use_in(session, phone, code)
            if refusal is not None:
                return refusal
            member = await self.live_member(member_id, session)
            owner_id = await self.members.member_id_for("phone", phone, session)
            if owner_id is None:
                await self.members.add_identity(member["_id"], "phone", phone, True, session)
                if not member.get("phone"):
                    await self.members.set_fields(member["_id"], {"phone": phone}, session)
                return {"member_id": member["_id"], "merged": False}
            owner = await self.members.get_live(owner_id, session)
            if owner["_id"] == member["_id"]:
                return {"member_id": member["_id"], "merged": False}
            merge = await self._merge(session, member, owner, reason="verified-phone")
            return {"member_id": merge["member_id"], "merged": True, "merged_member_id": merge["merged_member_id"]}

        result = await self.mongo.transaction(unit)
        if isinstance(result, MembershipError):
            raise result
        if result["merged"]:
            metrics.MEMBERS_MERGED.inc()
        result["token"] = self.tokens.for_member(result["member_id"])
        return result

    async def _merge(self, session, first: dict, second: dict, reason: str) -> dict[str, Any]:
        survivor, absorbed = member_rules.choose_survivor(first, second)
        now = now_ms()
        points_moved = await self.ledger.move(absorbed["_id"], survivor["_id"], session)
        coupons_moved = await self.coupons.move_owner(absorbed["_id"], survivor["_id"], session)
        await self.members.move_identities(absorbed["_id"], survivor["_id"], session)
        await self.coupons.move_grants(absorbed["_id"], survivor["_id"], session)
        await self.holds.move_member(absorbed["_id"], survivor["_id"], session)
        await self.purchases.move_member(absorbed["_id"], survivor["_id"], session)
        await self._merge_stats(session, survivor["_id"], absorbed["_id"])
        merged = member_rules.merge(survivor, absorbed, now)
        # The balance is the ledger's sum by definition; recompute it rather than trusting two counters.
        merged["points_balance"] = await self.ledger.sum_for(survivor["_id"], session)
        if not merged.get("phone") and absorbed.get("phone"):
            merged["phone"] = absorbed["phone"]
        await self.members.save(merged, session)
        await self.members.save({**absorbed, "status": "merged", "merged_into": survivor["_id"], "points_balance": 0,
                                 "merged_at_ms": now, "merge_reason": reason}, session)
        await self.outbox.record(session, MemberMerged(
            member_id=survivor["_id"], merged_member_id=absorbed["_id"], points_moved=absorbed.get("points_balance", 0),
            coupons_moved=coupons_moved, points_balance=merged["points_balance"]), subject=survivor["_id"])
        await self.tiers_flow.retier(session, survivor["_id"])
        return {"member_id": survivor["_id"], "merged_member_id": absorbed["_id"],
                "points_balance": merged["points_balance"], "ledger_entries_moved": points_moved,
                "coupons_moved": coupons_moved}

    async def _merge_stats(self, session, survivor_id: str, absorbed_id: str) -> None:
        absorbed = await self.members.stats_of(absorbed_id, session)
        if absorbed is None:
            return
        survivor = await self.members.stats_of(survivor_id, session) or {"_id": survivor_id, "order_count": 0,
                                                                        "spend": 0, "categories": {},
                                                                        "last_purchase_ms": 0}
        survivor["order_count"] += absorbed.get("order_count", 0)
        survivor["spend"] += absorbed.get("spend", 0)
        survivor["last_purchase_ms"] = max(survivor.get("last_purchase_ms", 0), absorbed.get("last_purchase_ms", 0))
        categories = dict(survivor.get("categories") or {})
        for category, units in (absorbed.get("categories") or {}).items():
            categories[category] = categories.get(category, 0) + units
        survivor["categories"] = categories
        await self.members.put_stats(survivor, session)
        await self.members.delete_stats(absorbed_id, session)


MEMBERS = web.AppKey("members", Members)
SCANS = web.AppKey("scans", Scans)
QR_CODES = web.AppKey("qr_codes", QrCodes)
MERGES = web.AppKey("merges", Merges)
__all__ = ["MEMBERS", "MERGES", "QR_CODES", "SCANS", "Members", "Merges", "QrCodes", "Scans"]
