"""Units of work of membership: each loads aggregates, applies the pure rules, and writes the changes and
their events in one transaction. HTTP handlers and bus consumers are thin wrappers around these."""
from __future__ import annotations

import asyncio
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pymongo.errors import DuplicateKeyError

from libs.mongo import ConcurrencyConflict, Mongo
from libs.outbox import Outbox
from services.membership import metrics
from services.membership.domain import coupons as coupon_rules
from services.membership.domain import members as member_rules
from services.membership.domain import otp as otp_rules
from services.membership.domain import points as points_rules
from services.membership.domain import tokens as token_rules
from services.membership.domain.errors import CONFLICT, INVALID, LIMITED, NOT_FOUND, UNAUTHENTICATED, MembershipError
from services.membership.domain.tiers import multiplier_of, tier_for, tier_ladder
from services.membership.events import (CouponIssued, MemberDormant, MemberMerged, MemberRegistered, OtpRequested,
                                        PointsChanged, TierChanged)
from services.membership.keys import KeyRing
from services.membership.repository import (CouponRepository, HoldRepository, LedgerRepository, MemberRepository,
                                            OtpRepository, PurchaseRepository, RefreshTokenRepository,
                                            StaffRepository, now_ms, utcnow)
from services.membership.settings import MembershipSettings

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


async def with_unique_retry(run, attempts: int = 4):
    """Re-run a unit that lost an insert race (a unique key taken concurrently): it then sees the winner."""
    for attempt in range(attempts):
        try:
            return await run()
        except DuplicateKeyError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.005 * (attempt + 1))


def public_member(m: dict[str, Any], identities: list[dict] | None = None) -> dict[str, Any]:
    body = {
        "id": m["_id"], "status": m["status"], "name": m.get("name"), "phone": m.get("phone"),
        "email": m.get("email"), "locale": m.get("locale"), "marketing_consent": bool(m.get("marketing_consent")),
        "tags": m.get("tags", []), "tier": m.get("tier", "member"), "points_balance": m.get("points_balance", 0),
        "dormant": bool(m.get("dormant")), "created_at": rfc3339(m.get("created_at_ms")),
        "attribution": attribution_of(m),
    }
    if m.get("status") == "merged":
        body["merged_into"] = m.get("merged_into")
    if identities is not None:
        body["identities"] = [{"kind": i["kind"], "value": i["value"], "verified": i.get("verified", False)}
                              for i in identities]
    return body


def attribution_of(m: dict[str, Any], now: int | None = None) -> dict[str, Any]:
    active = member_rules.binding_is_active(m, now if now is not None else now_ms())
    return {"member_id": m["_id"],
            "store_id": m.get("bound_store_id") if active else None,
            "staff_id": m.get("bound_staff_id") if active else None,
            "campaign_id": m.get("bound_campaign_id") if active else None,
            "bound_until": rfc3339(m.get("bound_until_ms")) if active else None}


def public_coupon(c: dict[str, Any]) -> dict[str, Any]:
    return {"code": c["_id"], "template_id": c["template_id"], "name": c.get("name"), "state": c["state"],
            "kind": c["kind"], "threshold": c.get("threshold", 0), "amount_off": c.get("amount_off"),
            "percent_off": c.get("percent_off"), "max_off": c.get("max_off"),
            "scope": {"type": c["scope_type"], "values": c.get("scope_values", [])}, "channel": c["channel"],
            "valid_from": rfc3339(c["valid_from_ms"]), "valid_until": rfc3339(c["valid_until_ms"]),
            "campaign_id": c.get("campaign_id"), "order_id": c.get("order_id")}


def public_template(t: dict[str, Any]) -> dict[str, Any]:
    return {"id": t["_id"], "name": t.get("name"), "kind": t["kind"], "threshold": t.get("threshold", 0),
            "amount_off": t.get("amount_off"), "percent_off": t.get("percent_off"), "max_off": t.get("max_off"),
            "scope": {"type": t["scope_type"], "values": t.get("scope_values", [])}, "channel": t["channel"],
            "valid_days": t.get("valid_days"), "valid_from": rfc3339(t.get("valid_from_ms")),
            "valid_until": rfc3339(t.get("valid_until_ms")), "per_member_limit": t.get("per_member_limit", 1),
            "total_cap": t["total_cap"], "issued_count": t.get("issued_count", 0), "status": t.get("status", "active")}


def public_campaign(c: dict[str, Any]) -> dict[str, Any]:
    return {"id": c["_id"], "name": c.get("name"), "tag": c.get("tag"),
            "coupon_template_id": c.get("coupon_template_id"), "status": c.get("status", "active")}


def public_qr(q: dict[str, Any]) -> dict[str, Any]:
    return {"code": q["_id"], "kind": q["kind"], "store_id": q.get("store_id"), "staff_id": q.get("staff_id"),
            "campaign_id": q.get("campaign_id"), "status": q.get("status", "active")}


def public_staff(s: dict[str, Any]) -> dict[str, Any]:
    return {"id": s["_id"], "username": s["username"], "name": s.get("name"), "roles": s["roles"],
            "store_ids": s.get("store_ids", []), "franchisee_id": s.get("franchisee_id"),
            "status": s.get("status", "active")}


def public_entry(e: dict[str, Any]) -> dict[str, Any]:
    return {"id": e["_id"], "kind": e["kind"], "amount": e["amount"], "order_id": e.get("order_id"),
            "at": rfc3339(e["at_ms"]), "expires_at": rfc3339(e.get("expires_at_ms"))}


class Membership:
    def __init__(self, settings: MembershipSettings, mongo: Mongo, outbox: Outbox, keys: KeyRing) -> None:
        self.settings = settings
        self.mongo = mongo
        self.outbox = outbox
        self.keys = keys
        self.staff = StaffRepository(mongo)
        self.otp = OtpRepository(mongo)
        self.refresh_tokens = RefreshTokenRepository(mongo)
        self.members = MemberRepository(mongo)
        self.ledger = LedgerRepository(mongo)
        self.coupons = CouponRepository(mongo)
        self.holds = HoldRepository(mongo)
        self.purchases = PurchaseRepository(mongo)
        self.otp_policy = otp_rules.OtpPolicy(settings.otp_ttl_s, settings.otp_max_attempts, settings.otp_max_requests,
                                              settings.otp_request_window_s)
        self.points_policy = points_rules.PointsPolicy(settings.points_per_yuan_earned,
                                                       settings.points_per_yuan_redeemed,
                                                       settings.points_max_redeem_share_pct,
                                                       settings.points_validity_days)
        self.passwords = PasswordHasher(time_cost=settings.password_time_cost,
                                        memory_cost=settings.password_memory_kib)
        # Verified against when the username is unknown, so a wrong username costs as much as a wrong password.
        self._dummy_hash = self.passwords.hash("not-a-real-password")
        self.tiers = tier_ladder(settings.tier_thresholds_fen, settings.tier_multipliers)

    async def _run(self, unit, remember=None, status=lambda answer: 201):
        """Run `unit` in one transaction; with `remember` (Idempotency-Key) the answer is stored in it too."""
        async def whole(session):
            answer = await unit(session)
            if remember is not None and not isinstance(answer, MembershipError):
                await remember(session, status(answer), answer)
            return answer

        return await with_unique_retry(lambda: self.mongo.transaction(whole))

    # == tokens ==================================================================================
    def _issue(self, identity: dict[str, Any], ttl_s: int, kind: str) -> dict[str, Any]:
        body = token_rules.claims(now_s=now_ms() // 1000, ttl_s=ttl_s, issuer=self.settings.jwt_issuer,
                                  audience=self.settings.jwt_audience, **identity)
        metrics.TOKENS_ISSUED.labels(kind).inc()
        return token_rules.token_answer(self.keys.sign(body), ttl_s)

    def member_token(self, member_id: str) -> dict[str, Any]:
        return self._issue(token_rules.member_identity(member_id), self.settings.member_token_ttl_s, "member")

    async def _new_refresh_token(self, session, kind: str, subject_id: str, family_id: str | None = None) -> str:
        token = secrets.token_urlsafe(32)
        await self.refresh_tokens.add({"_id": token_rules.refresh_digest(token), "family_id": family_id or new_id("rtf"),
                                       "kind": kind, "subject_id": subject_id, "used": False, "revoked": False,
                                       "expires_at_ms": now_ms() + self.settings.refresh_token_ttl_s * 1000,
                                       "created_at": utcnow()}, session)
        return token

    async def with_refresh(self, answer: dict[str, Any], kind: str, subject_id: str) -> dict[str, Any]:
        """Add a refresh token to a login answer (members and staff; services just ask again)."""
        token = await self.mongo.transaction(lambda s: self._new_refresh_token(s, kind, subject_id))
        return {**answer, "refresh_token": token, "refresh_expires_in": self.settings.refresh_token_ttl_s}

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Trade a refresh token for a new access token and the next refresh token.

        A refresh token works once. Presenting a used one means it was stolen (or replayed): the whole family
        is revoked, so neither the thief nor the owner can continue without logging in again.
        """
        digest = token_rules.refresh_digest(refresh_token)
        now = now_ms()

        async def unit(session):
            stored = await self.refresh_tokens.get(digest, session)
            if stored is None or stored["revoked"] or stored["expires_at_ms"] <= now:
                return MembershipError(UNAUTHENTICATED, "invalid-refresh-token", "refresh token unknown or expired")
            if not await self.refresh_tokens.use(digest, session):
                await self.refresh_tokens.revoke_family(stored["family_id"], session)
                return MembershipError(UNAUTHENTICATED, "refresh-token-reused",
                                       "this refresh token was already used; log in again")
            if stored["kind"] == "member":
                member = await self.members.get_live(stored["subject_id"], session)
                if member is None:
                    return MembershipError(UNAUTHENTICATED, "invalid-refresh-token", "member no longer exists")
                answer = self.member_token(member["_id"])
                subject = member["_id"]
            else:
                staff = await self.staff.get(stored["subject_id"], session)
                if staff is None or staff.get("status", "active") != "active":
                    return MembershipError(UNAUTHENTICATED, "invalid-refresh-token", "staff account is not active")
                answer = self._issue(token_rules.staff_identity(staff), self.settings.staff_token_ttl_s, "staff")
                subject = staff["_id"]
            following = await self._new_refresh_token(session, stored["kind"], subject, stored["family_id"])
            return {**answer, "refresh_token": following, "refresh_expires_in": self.settings.refresh_token_ttl_s}

        result = await self.mongo.transaction(unit)
        if isinstance(result, MembershipError):
            metrics.LOGIN_FAILURES.labels("refresh", result.code).inc()
            raise result
        return result

    async def logout(self, refresh_token: str) -> None:
        digest = token_rules.refresh_digest(refresh_token)

        async def unit(session):
            stored = await self.refresh_tokens.get(digest, session)
            if stored is not None:
                await self.refresh_tokens.revoke_family(stored["family_id"], session)

        await self.mongo.transaction(unit)

    def service_token(self, client_id: str, client_secret: str) -> dict[str, Any]:
        known = client_id in self.settings.service_clients
        # Compare even for an unknown client, so the answer time does not tell which ids exist.
        secret_ok = secrets.compare_digest(client_secret.encode(), self.settings.service_client_secret.encode())
        if not (known and secret_ok):
            metrics.LOGIN_FAILURES.labels("service", "bad_credentials").inc()
            raise MembershipError(UNAUTHENTICATED, "invalid-client", "unknown client or wrong secret")
        return self._issue(token_rules.service_identity(client_id), self.settings.service_token_ttl_s, "service")

    async def staff_token(self, username: str, password: str) -> dict[str, Any]:
        now = now_ms()
        window = await self.mongo.read_committed(lambda: self.staff.failure_window(username))
        window_ms = self.settings.staff_login_window_s * 1000
        if window and now - window["window_start_ms"] < window_ms and \
                window["failures"] >= self.settings.staff_login_max_failures:
            metrics.LOGIN_FAILURES.labels("staff", "locked").inc()
            raise MembershipError(LIMITED, "too-many-login-failures",
                                  "too many failed logins for this user; try again later",
                                  retry_after_s=max(1, (window["window_start_ms"] + window_ms - now) // 1000))
        staff = await self.mongo.read_committed(lambda: self.staff.by_username(username))
        stored_hash = staff["password_hash"] if staff and staff.get("status", "active") == "active" else self._dummy_hash
        ok = await asyncio.to_thread(_verify_password, self.passwords, stored_hash, password)
        if not ok or staff is None or staff.get("status", "active") != "active":
            start, failures = (window["window_start_ms"], window["failures"] + 1) \
                if window and now - window["window_start_ms"] < window_ms else (now, 1)
            await self.mongo.transaction(lambda s: self.staff.record_failure(username, start, failures, s))
            metrics.LOGIN_FAILURES.labels("staff", "bad_credentials").inc()
            raise MembershipError(UNAUTHENTICATED, "invalid-credentials", "wrong username or password")
        if window:
            await self.mongo.transaction(lambda s: self.staff.clear_failures(username, s))
        return self._issue(token_rules.staff_identity(staff), self.settings.staff_token_ttl_s, "staff")

    async def create_staff(self, staff: dict[str, Any], password: str, remember=None) -> dict[str, Any]:
        """A new staff account (HQ). The password is stored as an argon2id hash only."""
        password_hash = await asyncio.to_thread(self.passwords.hash, password)

        async def unit(session):
            if await self.staff.get(staff["_id"], session) is not None or \
                    await self.staff.collection.find_one({"username": staff["username"]}, session=session):
                raise MembershipError(CONFLICT, "staff-exists", "a staff account with this id or username exists")
            await self.staff.upsert({**staff, "password_hash": password_hash, "status": "active"}, session)
            return public_staff(staff)

        return await self._run(unit, remember)

    async def change_staff_password(self, staff_id: str, current: str, new: str) -> None:
        """Change one's own password; every refresh token of the account stops working."""
        staff = await self.mongo.read_committed(lambda: self.staff.get(staff_id))
        if staff is None or not await asyncio.to_thread(_verify_password, self.passwords, staff["password_hash"],
                                                         current):
            raise MembershipError(UNAUTHENTICATED, "invalid-credentials", "the current password is not correct")
        if current == new:
            raise MembershipError(INVALID, "password-unchanged", "the new password must differ from the current one")
        password_hash = await asyncio.to_thread(self.passwords.hash, new)

        async def unit(session):
            await self.staff.collection.update_one({"_id": staff_id}, {"$set": {"password_hash": password_hash}},
                                                   session=session)
            await self.refresh_tokens.collection.update_many({"kind": "staff", "subject_id": staff_id},
                                                             {"$set": {"revoked": True}}, session=session)

        await self.mongo.transaction(unit)

    # == one-time codes ==========================================================================
    def _digest(self, phone: str, code: str) -> str:
        return otp_rules.code_digest(phone, code, self.settings.service_client_secret)

    async def request_otp(self, phone: str, locale: str) -> dict[str, Any]:
        phone = otp_rules.normalize_phone(phone)
        code = otp_rules.new_code(secrets.randbelow)
        now = now_ms()

        async def unit(session):
            existing = await self.otp.get(phone, session) or {}
            start, count = otp_rules.next_request_window(existing.get("window_start_ms", 0),
                                                         existing.get("requests", 0), now, self.otp_policy)
            await self.otp.put({"_id": phone, "digest": self._digest(phone, code), "attempts": 0, "used": False,
                                "expires_at_ms": now + self.otp_policy.ttl_s * 1000, "window_start_ms": start,
                                "requests": count, "locale": locale}, session)
            await self.outbox.record(session, OtpRequested(phone=phone, code=code, locale=locale,
                                                           expires_in=self.otp_policy.ttl_s), subject=phone)

        try:
            await self.mongo.transaction(unit)
        except MembershipError:
            metrics.OTP_REQUESTS.labels("rate_limited").inc()
            raise
        metrics.OTP_REQUESTS.labels("sent").inc()
        answer: dict[str, Any] = {"phone": phone, "expires_in": self.otp_policy.ttl_s}
        if self.settings.dev_mode:
            answer["dev_code"] = code
        return answer

    async def _use_code(self, session, phone: str, code: str) -> MembershipError | None:
        """Count the attempt, then judge it. A refusal is returned (not raised) so the count commits."""
        counted = await self.otp.count_attempt(phone, self.otp_policy.max_attempts, session)
        challenge = await self.otp.get(phone, session)
        if not counted:
            if challenge is None or challenge.get("used"):
                return MembershipError(UNAUTHENTICATED, "otp-invalid", "no code is pending for this phone")
            return MembershipError(LIMITED, "otp-attempts-exceeded", "too many wrong codes; request a new code")
        try:
            otp_rules.check_code(challenge, self._digest(phone, code), now_ms(), self.otp_policy)
        except MembershipError as refusal:
            return refusal
        if not await self.otp.burn(phone, self._digest(phone, code), session):
            return MembershipError(UNAUTHENTICATED, "otp-invalid", "the code was already used")
        return None

    async def login_with_code(self, phone: str, code: str, locale: str | None) -> tuple[dict[str, Any], str, bool]:
        """(token answer, member id, registered now) for a phone and its one-time code; registers a new member."""
        phone = otp_rules.normalize_phone(phone)

        async def unit(session):
            refusal = await self._use_code(session, phone, code)
            if refusal is not None:
                return refusal
            challenge = await self.otp.get(phone, session)
            member_id = await self.members.member_id_for("phone", phone, session)
            if member_id is not None:
                member = await self.members.get_live(member_id, session)
                return member["_id"], False
            member = await self._register(session, source="otp", phone=phone,
                                          locale=locale or challenge.get("locale") or "zh-CN")
            return member["_id"], True

        result = await with_unique_retry(lambda: self.mongo.transaction(unit))
        if isinstance(result, MembershipError):
            metrics.LOGIN_FAILURES.labels("member", result.code).inc()
            raise result
        member_id, created = result
        return self.member_token(member_id), member_id, created

    # == members =================================================================================
    async def _register(self, session, *, source: str, phone: str | None = None, locale: str = "zh-CN",
                        identity: tuple[str, str, bool] | None = None, name: str | None = None,
                        email: str | None = None, marketing_consent: bool = False,
                        member_id: str | None = None, qr: dict | None = None, created_ms: int | None = None) -> dict:
        now = created_ms or now_ms()
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
            await self.members.add_identity(doc["_id"], identity[0], identity[1], identity[2], session)
        qr = qr or {}
        await self.outbox.record(session, MemberRegistered(
            member_id=doc["_id"], phone=phone, email=email, locale=locale, source=source,
            store_id=qr.get("store_id"), staff_id=qr.get("staff_id"), campaign_id=qr.get("campaign_id"),
            marketing_consent=marketing_consent), subject=doc["_id"])
        self.mongo.after_commit(lambda: metrics.MEMBERS_REGISTERED.labels(source).inc())
        doc["version"] = 1
        return doc

    async def get_member(self, member_id: str) -> dict[str, Any]:
        member = await self.mongo.read_committed(lambda: self.members.get_live(member_id))
        if member is None:
            raise MembershipError(NOT_FOUND, "member-not-found", "member not found")
        return member

    async def member_view(self, member_id: str) -> dict[str, Any]:
        member = await self.get_member(member_id)
        identities = await self.mongo.read_committed(lambda: self.members.identities_of(member["_id"]))
        return public_member(member, identities)

    async def update_profile(self, member_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        async def unit(session):
            member = await self.members.get_live(member_id, session)
            if member is None:
                raise MembershipError(NOT_FOUND, "member-not-found", "member not found")
            fields = {k: v for k, v in changes.items() if k in ("name", "email", "locale")}
            if "marketing_consent" in changes:
                fields["marketing_consent"] = bool(changes["marketing_consent"])
                fields["marketing_consent_at_ms"] = now_ms()
            if fields:
                await self.members.set_fields(member["_id"], fields, session)
            return member["_id"]

        return await self.member_view(await self.mongo.transaction(unit))

    # == QR scans ================================================================================
    async def scan(self, code: str, *, member_id: str | None, identity: tuple[str, str] | None, locale: str,
                   marketing_consent: bool | None, remember=None) -> dict[str, Any]:
        qr = await self.mongo.read_committed(lambda: self.coupons.qr(code))
        if qr is None or qr.get("status", "active") != "active":
            raise MembershipError(NOT_FOUND, "qr-code-not-found", f"QR code {code} is unknown or retired")

        async def unit(session):
            now = now_ms()
            campaign = await self.coupons.campaign(qr["campaign_id"], session) if qr.get("campaign_id") else None
            created = False
            if member_id is not None:
                member = await self.members.get_live(member_id, session)
                if member is None:
                    raise MembershipError(NOT_FOUND, "member-not-found", "member not found")
            else:
                kind, value = identity
                known = await self.members.member_id_for(kind, value, session)
                member = await self.members.get_live(known, session) if known else None
                if member is None:
                    member = await self._register(session, source="scan", locale=locale, identity=(kind, value, False),
                                                  marketing_consent=bool(marketing_consent), qr=qr)
                    created = True
            outcome = member_rules.scan(member, qr, campaign, now, self.settings.binding_days)
            await self.members.add_tags(member["_id"], outcome.tags, session)
            bound = False
            if outcome.bind:
                bound = await self.members.bind_if_unbound(member["_id"], now, {
                    "bound_store_id": outcome.store_id, "bound_staff_id": outcome.staff_id,
                    "bound_campaign_id": outcome.campaign_id, "bound_until_ms": outcome.bound_until_ms}, session)
            if marketing_consent is not None and not created:
                await self.members.set_fields(member["_id"], {"marketing_consent": marketing_consent,
                                                              "marketing_consent_at_ms": now}, session)
            issued, skipped = [], None
            if outcome.grant_campaign_id and not await self.coupons.granted(campaign["_id"], member["_id"], session):
                template = await self.coupons.template(campaign["coupon_template_id"], session)
                reason = await self._cannot_issue(template, member["_id"], now, session)
                if reason is None:
                    try:
                        coupon = await self._issue_coupon(session, member, template, now, campaign_id=campaign["_id"])
                    except MembershipError as exc:
                        # The cap ran out between the check and the guarded take (another transaction took it):
                        # run the scan again; the check then skips the coupon instead of failing the scan.
                        raise ConcurrencyConflict(exc.code) from exc
                    await self.coupons.record_grant(campaign["_id"], member["_id"], coupon["_id"], session)
                    issued.append(public_coupon(coupon))
                else:
                    skipped = reason
            fresh = await self.members.get(member["_id"], session)
            return {"member_id": fresh["_id"], "created": created, "bound_now": bound, "tags": fresh.get("tags", []),
                    "attribution": attribution_of(fresh, now), "coupons_issued": issued,
                    "coupon_skipped": skipped}

        answer = await self._run(unit, remember, status=lambda a: 201 if a["created"] else 200)
        metrics.SCANS.labels(qr.get("kind", "store"), "bound" if answer["bound_now"] else "tagged").inc()
        return answer

    # == coupons =================================================================================
    async def _cannot_issue(self, template: dict | None, member_id: str, now: int, session) -> str | None:
        """Why a coupon of `template` cannot be issued to the member now (None when it can)."""
        if template is None:
            return "template-missing"
        try:
            coupon_rules.check_issuable(template, now)
        except MembershipError as exc:
            return exc.code
        if template.get("issued_count", 0) >= template["total_cap"]:
            return "coupon-cap-reached"
        count = await self.coupons.member_counts.find_one({"_id": f"{template['_id']}:{member_id}"}, session=session)
        if count and count["count"] >= template.get("per_member_limit", 1):
            return "coupon-limit-reached"
        return None

    async def _issue_coupon(self, session, member: dict, template: dict, now: int,
                            campaign_id: str | None = None) -> dict:
        coupon_rules.check_issuable(template, now)
        if not await self.coupons.take_from_cap(template["_id"], template["total_cap"], session):
            raise MembershipError(CONFLICT, "coupon-cap-reached", f"coupon template {template['_id']} is exhausted")
        if not await self.coupons.take_member_allowance(template["_id"], member["_id"],
                                                        template.get("per_member_limit", 1), session):
            raise MembershipError(CONFLICT, "coupon-limit-reached",
                                  f"member already holds the maximum of template {template['_id']}")
        start, until = coupon_rules.coupon_validity(template, now)
        coupon = {"_id": new_id("cpn"), "template_id": template["_id"], "name": template.get("name"),
                  "member_id": member["_id"], "state": coupon_rules.ISSUED, "kind": template["kind"],
                  "threshold": template.get("threshold", 0), "amount_off": template.get("amount_off"),
                  "percent_off": template.get("percent_off"), "max_off": template.get("max_off"),
                  "scope_type": template["scope_type"], "scope_values": template.get("scope_values", []),
                  "channel": template["channel"], "valid_from_ms": start, "valid_until_ms": until,
                  "campaign_id": campaign_id, "order_id": None, "issued_at": utcnow(), "issued_at_ms": now}
        await self.coupons.add(coupon, session)
        await self.outbox.record(session, CouponIssued(
            member_id=member["_id"], coupon_code=coupon["_id"], template_id=template["_id"],
            name=template.get("name") or template["_id"], campaign_id=campaign_id, valid_until=rfc3339(until),
            phone=member.get("phone"), email=member.get("email"), locale=member.get("locale") or "zh-CN"),
            subject=member["_id"])
        self.mongo.after_commit(lambda: metrics.COUPONS.labels("issued").inc())
        return coupon

    async def issue_coupon(self, member_id: str, template_id: str, remember=None) -> dict[str, Any]:
        async def unit(session):
            member = await self.members.get_live(member_id, session)
            if member is None:
                raise MembershipError(NOT_FOUND, "member-not-found", "member not found")
            template = await self.coupons.template(template_id, session)
            if template is None:
                raise MembershipError(INVALID, "unknown-coupon-template", f"no coupon template {template_id}")
            return public_coupon(await self._issue_coupon(session, member, template, now_ms()))

        return await self._run(unit, remember)

    async def create_template(self, template: dict[str, Any], remember=None, replace: bool = False) -> dict[str, Any]:
        coupon_rules.validate_template(template)

        async def unit(session):
            if replace:
                await self.coupons.upsert_template(template, session)
            elif await self.coupons.template(template["_id"], session) is not None:
                raise MembershipError(CONFLICT, "coupon-template-exists", f"template {template['_id']} exists")
            else:
                await self.coupons.put_template({**template, "issued_count": 0}, session)
            return public_template(await self.coupons.template(template["_id"], session))

        return await self._run(unit, remember)

    async def create_campaign(self, campaign: dict[str, Any], remember=None, replace: bool = False) -> dict[str, Any]:
        async def unit(session):
            if campaign.get("coupon_template_id") and \
                    await self.coupons.template(campaign["coupon_template_id"], session) is None:
                raise MembershipError(INVALID, "unknown-coupon-template",
                                      f"no coupon template {campaign['coupon_template_id']}")
            if not replace and await self.coupons.campaign(campaign["_id"], session) is not None:
                raise MembershipError(CONFLICT, "campaign-exists", f"campaign {campaign['_id']} exists")
            await self.coupons.put_campaign(campaign, session, replace=replace)
            return public_campaign(campaign)

        return await self._run(unit, remember)

    async def create_qr(self, qr: dict[str, Any], remember=None, replace: bool = False) -> dict[str, Any]:
        async def unit(session):
            if qr.get("campaign_id") and await self.coupons.campaign(qr["campaign_id"], session) is None:
                raise MembershipError(INVALID, "unknown-campaign", f"no campaign {qr['campaign_id']}")
            if qr.get("staff_id"):
                staff = await self.staff.get(qr["staff_id"], session)
                if staff is None or qr.get("store_id") not in staff.get("store_ids", []):
                    raise MembershipError(INVALID, "unknown-staff",
                                          f"staff {qr['staff_id']} does not work at store {qr.get('store_id')}")
            if not replace and await self.coupons.qr(qr["_id"], session) is not None:
                raise MembershipError(CONFLICT, "qr-code-exists", f"QR code {qr['_id']} exists")
            await self.coupons.put_qr(qr, session, replace=replace)
            return public_qr(qr)

        return await self._run(unit, remember)

    async def member_coupons(self, member_id: str, state: str | None = None) -> list[dict[str, Any]]:
        member = await self.get_member(member_id)
        docs = await self.mongo.read_committed(lambda: self.coupons.of_member(member["_id"], state))
        now = now_ms()
        for doc in docs:  # an issued coupon past its end shows as expired even before the sweeper ran
            if doc["state"] == coupon_rules.ISSUED and doc["valid_until_ms"] <= now:
                doc["state"] = coupon_rules.EXPIRED
        return [public_coupon(d) for d in docs]

    # == points ==================================================================================
    async def _post_points(self, session, member: dict, delta: int, kind: str, *, order_id: str | None = None,
                           at_ms: int | None = None, note: str | None = None) -> int:
        """Append one ledger entry and move the guarded balance counter with it; returns the new balance."""
        if delta == 0:
            return member.get("points_balance", 0)
        if not await self.members.change_points(member["_id"], delta, session):
            current = await self.members.get(member["_id"], session)
            points_rules.ensure_covered(current.get("points_balance", 0), -delta)
            raise ConcurrencyConflict("points balance moved")  # covered now: retry the whole unit
        at = at_ms or now_ms()
        entry = {"_id": f"pts_{at:013d}{secrets.token_hex(5)}", "member_id": member["_id"], "amount": delta,
                 "kind": kind, "order_id": order_id, "at": utcnow(), "at_ms": at, "note": note}
        if kind in points_rules.LOT_KINDS and delta > 0:
            entry["expires_at_ms"] = points_rules.lot_expiry_ms(at, self.points_policy)
        await self.ledger.append(entry, session)
        balance = (await self.members.get(member["_id"], session))["points_balance"]
        await self.outbox.record(session, PointsChanged(
            member_id=member["_id"], delta=delta, balance=balance, reason=kind, order_id=order_id,
            phone=member.get("phone"), locale=member.get("locale") or "zh-CN"), subject=member["_id"])
        self.mongo.after_commit(lambda: metrics.POINTS.labels(kind).inc(abs(delta)))
        return balance

    async def points_view(self, member_id: str, cursor: str | None, limit: int) -> dict[str, Any]:
        member = await self.get_member(member_id)
        entries = await self.mongo.read_committed(lambda: self.ledger.page(member["_id"], cursor, limit + 1))
        more = len(entries) > limit
        entries = entries[:limit]
        all_entries = await self.mongo.read_committed(lambda: self.ledger.entries(member["_id"]))
        soon = now_ms() + 30 * DAY_MS
        return {"member_id": member["_id"], "balance": member.get("points_balance", 0),
                "expiring_within_30_days": points_rules.expiring_now(all_entries, soon),
                "items": [public_entry(e) for e in entries],
                "next_cursor": entries[-1]["_id"] if more and entries else None}

    async def adjust_points(self, member_id: str, delta: int, note: str, remember=None) -> dict[str, Any]:
        async def unit(session):
            member = await self.members.get_live(member_id, session)
            if member is None:
                raise MembershipError(NOT_FOUND, "member-not-found", "member not found")
            balance = await self._post_points(session, member, delta, points_rules.ADJUST, note=note)
            return {"member_id": member["_id"], "delta": delta, "balance": balance}

        return await self._run(unit, remember)

    async def expire_points(self, now: int | None = None) -> int:
        """Expire what is left of lots past their validity, first in first out. Returns points expired."""
        now = now or now_ms()
        member_ids = await self.mongo.read_committed(lambda: self.ledger.members_with_lots_expiring(now))
        total = 0
        for member_id in member_ids:
            async def unit(session, member_id=member_id):
                member = await self.members.get(member_id, session)
                if member is None or member.get("status") != "active":
                    return 0
                due = points_rules.expiring_now(await self.ledger.entries(member_id, session), now)
                if due > 0:
                    await self._post_points(session, member, -due, points_rules.EXPIRE, at_ms=now)
                return due

            total += await self.mongo.transaction(unit)
        return total

    # == checkout holds (orders' synchronous contract) ===========================================
    async def hold(self, order_id: str, member_id: str, channel: str, coupon_codes: list[str], points: int,
                   lines: list[dict[str, Any]], remember=None) -> dict[str, Any]:
        codes = list(dict.fromkeys(coupon_codes))

        async def unit(session):
            existing = await self.holds.get(order_id, session)
            if existing is not None:
                return self._replay_hold(existing, member_id)
            now = now_ms()
            member = await self.members.get_live(member_id, session)
            if member is None:
                raise MembershipError(INVALID, "unknown-member", f"member {member_id} does not exist")
            coupons = []
            for code in codes:
                coupon = await self.coupons.get(code, session)
                if coupon is None or coupon["member_id"] != member["_id"]:
                    raise MembershipError(CONFLICT, "coupon-unavailable", f"coupon {code} is not available to this member",
                                          coupon_code=code)
                coupons.append(coupon)
            applied = coupon_rules.apply_coupons(coupons, lines, channel, now)
            subtotal = sum(line["unit_price"] * line["qty"] for line in lines)
            coupon_discount = sum(d for _, d in applied)
            points_used, points_discount = points_rules.redemption(points, subtotal - coupon_discount,
                                                                   self.points_policy)
            for code, _ in applied:
                if not await self.coupons.move_state(code, coupon_rules.ISSUED, {
                        "state": coupon_rules.LOCKED, "order_id": order_id, "locked_at_ms": now}, session):
                    raise MembershipError(CONFLICT, "coupon-unavailable", f"coupon {code} was taken by another order",
                                          coupon_code=code)
            if points_used:
                await self._post_points(session, member, -points_used, points_rules.HOLD, order_id=order_id, at_ms=now)
            answer = {"order_id": order_id, "member_id": member["_id"], "coupon_discount": coupon_discount,
                      "points_discount": points_discount, "points_used": points_used,
                      "coupons": [{"code": c, "discount": d} for c, d in applied]}
            await self.holds.add({"_id": order_id, "member_id": member["_id"], "requested_member_id": member_id,
                                  "state": "held", "coupon_codes": [c for c, _ in applied], "points_used": points_used,
                                  "points_returned": 0,
                                  "response": answer, "created_at": utcnow(), "created_at_ms": now}, session)
            for _ in applied:
                self.mongo.after_commit(lambda: metrics.COUPONS.labels("locked").inc())
            return answer

        try:
            answer = await self._run(unit, remember)
        except MembershipError as refusal:
            metrics.HOLDS.labels(refusal.code).inc()
            raise
        metrics.HOLDS.labels("held").inc()
        metrics.HOLD_DISCOUNT.observe(answer["coupon_discount"] + answer["points_discount"])
        return answer

    @staticmethod
    def _replay_hold(existing: dict, member_id: str) -> dict:
        if member_id not in (existing["member_id"], existing.get("requested_member_id")):
            raise MembershipError(CONFLICT, "hold-exists", "this order already holds benefits of another member")
        return existing["response"]

    async def commit_hold(self, order_id: str) -> dict[str, Any]:
        async def unit(session):
            return await self._commit_hold(session, order_id)

        return await self.mongo.transaction(unit)

    async def _commit_hold(self, session, order_id: str, missing_ok: bool = False) -> dict[str, Any] | None:
        hold = await self.holds.get(order_id, session)
        if hold is None:
            if missing_ok:
                return None
            raise MembershipError(NOT_FOUND, "hold-not-found", f"no checkout hold for order {order_id}")
        if hold["state"] in ("released", "refunded"):
            raise MembershipError(CONFLICT, "hold-released", "the hold was released (order cancelled or refunded)")
        if hold["state"] == "held":
            for code in hold["coupon_codes"]:
                coupon = await self.coupons.get(code, session)
                coupon_rules.transition(coupon, coupon_rules.REDEEMED)
                if coupon.get("order_id") != order_id or not await self.coupons.move_state(
                        code, coupon_rules.LOCKED, {"state": coupon_rules.REDEEMED, "redeemed_at_ms": now_ms()}, session):
                    raise ConcurrencyConflict(f"coupon {code} moved under the hold")
                self.mongo.after_commit(lambda: metrics.COUPONS.labels("redeemed").inc())
            await self.holds.move_state(order_id, "held", "committed", session, committed_at_ms=now_ms())
        return {"order_id": order_id, "state": "committed", "coupon_codes": hold["coupon_codes"],
                "points_used": hold["points_used"]}

    async def release_hold(self, order_id: str, missing_ok: bool = False) -> dict[str, Any] | None:
        async def unit(session):
            return await self._release_hold(session, order_id, missing_ok)

        return await self.mongo.transaction(unit)

    async def _release_hold(self, session, order_id: str, missing_ok: bool = False) -> dict[str, Any] | None:
        """Give an order's coupons and points back (order cancelled, paid or not). Idempotent."""
        hold = await self.holds.get(order_id, session)
        if hold is None:
            if missing_ok:
                return None
            raise MembershipError(NOT_FOUND, "hold-not-found", f"no checkout hold for order {order_id}")
        if hold["state"] in ("held", "committed"):
            from_state = coupon_rules.LOCKED if hold["state"] == "held" else coupon_rules.REDEEMED
            for code in hold["coupon_codes"]:
                if await self.coupons.move_state(code, from_state, {"state": coupon_rules.ISSUED, "order_id": None},
                                                 session):
                    self.mongo.after_commit(lambda: metrics.COUPONS.labels("released").inc())
            back = hold["points_used"] - hold.get("points_returned", 0)
            if back > 0:
                member = await self.members.get_live(hold["member_id"], session)
                await self._post_points(session, member, back, points_rules.RELEASE, order_id=order_id)
            if not await self.holds.move_state(order_id, hold["state"], "released", session,
                                               released_at_ms=now_ms(), points_returned=hold["points_used"]):
                raise ConcurrencyConflict(f"hold {order_id} moved")
        return {"order_id": order_id, "state": "released", "coupon_codes": hold["coupon_codes"],
                "points_returned": hold["points_used"]}

    # == order events ============================================================================
    async def on_order_completed(self, session, data: dict[str, Any], occurred_ms: int) -> None:
        """Earn points, count the purchase for tiers and analytics, reactivate a dormant member."""
        order_id, member_id = data.get("order_id"), data.get("member_id")
        if not member_id or not order_id:
            return
        existing = await self.purchases.get(order_id, session)
        if existing is not None and existing.get("amount") is not None:
            return  # already counted
        member = await self.members.get_live(member_id, session)
        if member is None:
            return
        hold = await self.holds.get(order_id, session)
        if hold is not None and hold["state"] == "held":
            await self._commit_hold(session, order_id)  # safety net: a completed order was paid
        paid = _paid_amount(data)
        multiplier = multiplier_of(member.get("tier", self.tiers[0].name), self.tiers)
        earned = points_rules.earned_points(paid, multiplier, self.points_policy)
        purchase = {"_id": order_id, "member_id": member["_id"], "amount": paid, "refunded": 0, "earned": earned,
                    "clawed_back": 0, "at_ms": occurred_ms}
        if existing is None:
            await self.purchases.add(purchase, session)
        else:
            await self.purchases.replace(purchase, session)
        if earned:
            member["points_balance"] = await self._post_points(session, member, earned, points_rules.EARN,
                                                               order_id=order_id, at_ms=occurred_ms)
        if existing is not None and existing.get("pending_refund"):
            # The refund overtook the completion on the bus: apply it now that there is something to undo.
            await self._claw_back(session, member, purchase, existing["pending_refund"])
        order_count = await self._update_stats(session, member["_id"], data, paid, occurred_ms)
        # order_count is kept on the member too, so store analytics can count buyers with a plain filter.
        await self.members.set_fields(member["_id"], {"last_activity_ms": max(member.get("last_activity_ms", 0),
                                                                              occurred_ms), "dormant": False,
                                                      "order_count": order_count}, session)
        await self._retier(session, member["_id"])

    async def on_order_refunded(self, session, data: dict[str, Any]) -> None:
        """Claw back earned points and give back spent points, in proportion; coupons back on a full refund."""
        order_id = data.get("order_id")
        if not order_id:
            return
        purchase = await self.purchases.get(order_id, session)
        hold = await self.holds.get(order_id, session)
        member_id = (purchase or {}).get("member_id") or (hold or {}).get("member_id") or data.get("member_id")
        member = await self.members.get_live(member_id, session) if member_id else None
        if member is None:
            return
        completed = purchase is not None and purchase.get("amount") is not None
        paid = purchase["amount"] if completed else _paid_amount(data)
        before = purchase.get("refunded", 0) if completed else (purchase or {}).get("pending_refund", 0)
        refunded = min(paid, before + _refund_amount(data, paid)) if paid > 0 else before + _refund_amount(data, paid)
        if completed:
            await self._claw_back(session, member, purchase, refunded)
        elif purchase is None:
            await self.purchases.add({"_id": order_id, "member_id": member["_id"], "amount": None,
                                      "pending_refund": refunded, "at_ms": now_ms()}, session)
        else:
            await self.purchases.set_fields(order_id, {"pending_refund": refunded}, session)
        if hold is not None:
            full = paid <= 0 or refunded >= paid
            await self._give_back_spent(session, hold, paid, refunded, full)
        await self._retier(session, member["_id"])

    async def _claw_back(self, session, member: dict, purchase: dict, refunded: int) -> None:
        claw = points_rules.clawback(purchase["earned"], purchase["amount"], refunded, purchase.get("clawed_back", 0))
        current = (await self.members.get(member["_id"], session)).get("points_balance", 0)
        claw = min(claw, current)  # what the member already spent stays spent; the balance never goes negative
        if claw:
            await self._post_points(session, member, -claw, points_rules.CLAWBACK, order_id=purchase["_id"])
        await self.purchases.set_fields(purchase["_id"], {"refunded": refunded,
                                                          "clawed_back": purchase.get("clawed_back", 0) + claw},
                                        session)

    async def _give_back_spent(self, session, hold: dict, paid: int, refunded: int, full: bool) -> None:
        if hold["state"] == "held":
            await self._release_hold(session, hold["_id"])
            return
        if hold["state"] != "committed":
            return  # released or refunded already
        back = hold["points_used"] - hold.get("points_returned", 0) if full else \
            points_rules.spent_points_to_return(hold["points_used"], paid, refunded, hold.get("points_returned", 0))
        if back > 0:
            member = await self.members.get_live(hold["member_id"], session)
            await self._post_points(session, member, back, points_rules.REFUND, order_id=hold["_id"])
        fields = {"points_returned": hold.get("points_returned", 0) + back}
        if full:
            for code in hold["coupon_codes"]:
                if await self.coupons.move_state(code, coupon_rules.REDEEMED, {"state": coupon_rules.ISSUED,
                                                                               "order_id": None}, session):
                    self.mongo.after_commit(lambda: metrics.COUPONS.labels("returned").inc())
            fields["state"] = "refunded"
        await self.holds.set_fields(hold["_id"], fields, session)

    async def on_order_cancelled(self, session, data: dict[str, Any]) -> None:
        """Safety net: a cancelled order gives its coupons and points back (if orders did not already)."""
        if data.get("order_id"):
            await self._release_hold(session, data["order_id"], missing_ok=True)

    async def _update_stats(self, session, member_id: str, data: dict, paid: int, at_ms: int) -> int:
        stats = await self.members.stats_of(member_id, session) or {"_id": member_id, "order_count": 0, "spend": 0,
                                                                     "categories": {}, "last_purchase_ms": 0,
                                                                     "stores": {}}
        stats["order_count"] += 1
        stats["spend"] += paid
        stats["last_purchase_ms"] = max(stats.get("last_purchase_ms", 0), at_ms)
        categories = dict(stats.get("categories") or {})
        for line in data.get("lines") or []:
            if line.get("category"):
                categories[line["category"]] = categories.get(line["category"], 0) + int(line.get("qty", 0))
        stats["categories"] = categories
        await self.members.put_stats(stats, session)
        return stats["order_count"]

    async def _retier(self, session, member_id: str) -> None:
        member = await self.members.get(member_id, session)
        rolling = await self.purchases.rolling_paid(member_id, now_ms() - YEAR_MS, session)
        tier = tier_for(rolling, self.tiers)
        fields: dict[str, Any] = {"rolling_paid": rolling}
        if tier.name != member.get("tier"):
            fields["tier"] = tier.name
            await self.outbox.record(session, TierChanged(
                member_id=member_id, from_tier=member.get("tier") or self.tiers[0].name, to_tier=tier.name,
                rolling_paid=rolling, phone=member.get("phone"), locale=member.get("locale") or "zh-CN"),
                subject=member_id)
            self.mongo.after_commit(lambda: metrics.TIER_CHANGES.labels(tier.name).inc())
        await self.members.set_fields(member_id, fields, session)

    # == analytics ===============================================================================
    async def member_analytics(self, member_id: str) -> dict[str, Any]:
        member = await self.get_member(member_id)
        stats = await self.mongo.read_committed(lambda: self.members.stats_of(member["_id"])) or {}
        count, spend = stats.get("order_count", 0), stats.get("spend", 0)
        return {"member_id": member["_id"], "order_count": count, "spend": spend,
                "average_basket": member_rules.average_basket(spend, count),
                "last_purchase_at": rfc3339(stats.get("last_purchase_ms")) if stats.get("last_purchase_ms") else None,
                "top_categories": member_rules.top_categories(stats.get("categories") or {}),
                "tier": member.get("tier"), "rolling_paid": member.get("rolling_paid", 0),
                "dormant": bool(member.get("dormant"))}

    async def store_analytics(self, store_id: str) -> dict[str, Any]:
        async def read():
            query = {"bound_store_id": store_id, "status": "active"}
            return (await self.members.count(query), await self.members.count({**query, "dormant": True}),
                    await self.members.count({**query, "order_count": {"$gte": 1}}),
                    await self.members.count({**query, "order_count": {"$gte": 2}}))

        acquired, dormant, buyers, repeaters = await self.mongo.read_committed(read)
        return {"store_id": store_id, "members_acquired": acquired, "active": acquired - dormant, "dormant": dormant,
                "buyers": buyers, "repeat_buyers": repeaters,
                "repeat_purchase_rate": member_rules.repeat_purchase_rate(buyers, repeaters)}

    # == dormancy ================================================================================
    async def mark_dormant(self, now: int | None = None) -> int:
        now = now or now_ms()
        days = self.settings.dormant_after_days
        candidates = await self.mongo.read_committed(
            lambda: self.members.dormant_candidates(now - days * DAY_MS))
        marked = 0
        for candidate in candidates:
            async def unit(session, member_id=candidate["_id"]):
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

            if await self.mongo.transaction(unit):
                marked += 1
        if marked:
            metrics.DORMANT.inc(marked)
        return marked

    async def retier_all(self) -> int:
        """Re-rank members above the base tier: purchases age out of the rolling 12 months. Returns changes."""
        base = self.tiers[0].name
        candidates = await self.mongo.read_committed(lambda: self.members.collection.find(
            {"status": "active", "tier": {"$in": [t.name for t in self.tiers[1:]]}}, {"_id": 1, "tier": 1}
        ).to_list(None))
        changed = 0
        for candidate in candidates:
            async def unit(session, member_id=candidate["_id"]):
                await self._retier(session, member_id)
                return (await self.members.get(member_id, session)).get("tier", base)

            if await self.mongo.transaction(unit) != candidate["tier"]:
                changed += 1
        return changed

    async def link_identity(self, member_id: str, kind: str, value: str) -> dict[str, Any]:
        """Attach a channel identity (WeChat, marketplace) to the member; one identity belongs to one member."""
        async def unit(session):
            member = await self.members.get_live(member_id, session)
            if member is None:
                raise MembershipError(NOT_FOUND, "member-not-found", "member not found")
            owner = await self.members.member_id_for(kind, value, session)
            if owner is not None:
                live = await self.members.get_live(owner, session)
                if live is not None and live["_id"] == member["_id"]:
                    return member["_id"]
                raise MembershipError(CONFLICT, "identity-taken",
                                      "this identity belongs to another member; verify your phone there to merge")
            await self.members.add_identity(member["_id"], kind, value, False, session)
            return member["_id"]

        return await self.member_view(await with_unique_retry(lambda: self.mongo.transaction(unit)))

    # == merging =================================================================================
    async def merge(self, first_id: str, second_id: str, reason: str, remember=None) -> dict[str, Any]:
        async def unit(session):
            first = await self.members.get_live(first_id, session)
            second = await self.members.get_live(second_id, session)
            if first is None or second is None:
                raise MembershipError(NOT_FOUND, "member-not-found", "member not found")
            if first["_id"] == second["_id"]:
                raise MembershipError(INVALID, "same-member", "a member cannot be merged with itself")
            return await self._merge(session, first, second, reason)

        answer = await self._run(unit, remember, status=lambda a: 200)
        metrics.MEMBERS_MERGED.inc()
        return answer

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
        await self._retier(session, survivor["_id"])
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

    async def link_phone(self, member_id: str, phone: str, code: str) -> dict[str, Any]:
        """Verify a phone for the member; when it belongs to another member, the two are merged."""
        phone = otp_rules.normalize_phone(phone)

        async def unit(session):
            refusal = await self._use_code(session, phone, code)
            if refusal is not None:
                return refusal
            member = await self.members.get_live(member_id, session)
            if member is None:
                raise MembershipError(NOT_FOUND, "member-not-found", "member not found")
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

        result = await with_unique_retry(lambda: self.mongo.transaction(unit))
        if isinstance(result, MembershipError):
            raise result
        if result["merged"]:
            metrics.MEMBERS_MERGED.inc()
        result["token"] = self.member_token(result["member_id"])
        return result


def _verify_password(hasher: PasswordHasher, stored_hash: str, password: str) -> bool:
    try:
        return hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _paid_amount(data: dict[str, Any]) -> int:
    payment = data.get("payment") or {}
    if isinstance(payment.get("amount"), int):
        return payment["amount"]
    return int((data.get("totals") or {}).get("total", 0))


def _refund_amount(data: dict[str, Any], paid: int) -> int:
    """The amount of this refund; an event without one is a full refund."""
    refund = data.get("refund") or {}
    for value in (refund.get("amount"), data.get("refund_amount"), data.get("amount")):
        if isinstance(value, int):
            return value
    return paid
