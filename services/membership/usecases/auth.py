"""Authentication: signing keys and JWKS, access and refresh tokens, one-time codes, staff accounts."""
from __future__ import annotations

import asyncio
import contextlib
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from libs.auth import SERVICE_GRANTS, TokenVerifier, service_audience
from libs.clock import now_ms, utcnow
from libs.ids import new_id
from libs.mongo import refuse_duplicates
from libs.sealing import seal
from services.membership import metrics
from services.membership.domain import logins as login_rules
from services.membership.domain import otp as otp_rules
from services.membership.domain import tokens as token_rules
from services.membership.domain.errors import FORBIDDEN, INVALID, LIMITED, NOT_FOUND, UNAUTHENTICATED, MembershipError
from services.membership.events import OtpRequested
from services.membership.keys import KeyRing
from services.membership.usecases.base import UseCase
from services.membership.usecases.views import public_staff

if TYPE_CHECKING:
    from services.membership.usecases.members import Members


def _unauthenticated(code: str, detail: str) -> MembershipError:
    return MembershipError(code, detail, kind=UNAUTHENTICATED)


class Keys:
    """The signing key ring shared by every replica, and this service's own verifier that trusts it."""

    def __init__(self, ring: KeyRing, verifier: TokenVerifier) -> None:
        self.ring = ring
        self.verifier = verifier

    async def start(self) -> None:
        """Load (or create, once for all replicas) the ring; this service verifies its tokens from memory."""
        await self.ring.ensure()
        self.verifier.load_jwks(self.ring.jwks())

    def jwks(self) -> dict[str, Any]:
        return self.ring.jwks()

    def sign(self, claims: dict[str, Any]) -> str:
        return self.ring.sign(claims)

    async def rotate(self) -> dict[str, Any]:
        """A new current key; the previous one stays published so tokens signed just before keep verifying."""
        kid = await self.ring.rotate()
        self.verifier.load_jwks(self.ring.jwks())
        return {"kid": kid, "jwks": self.ring.jwks()}

    async def refresh(self) -> None:
        """Pick up a rotation done by another replica."""
        await self.ring.refresh()
        self.verifier.load_jwks(self.ring.jwks())


class Tokens(UseCase):
    """Access tokens (member, staff, service) and single-use refresh tokens grouped in login families."""

    def __init__(self, *args, keys: Keys) -> None:
        super().__init__(*args)
        self.keys = keys

    def issue(self, identity: dict[str, Any], ttl_s: int, kind: str, audience: str | None = None,
              sid: str | None = None) -> dict[str, Any]:
        issued = now_ms()
        body = token_rules.claims(now_s=issued // 1000, issued_ms=issued, ttl_s=ttl_s, issuer=self.settings.jwt_issuer,
                                  audience=audience or self.settings.jwt_audience, sid=sid, **identity)
        metrics.TOKENS_ISSUED.labels(kind).inc()
        return token_rules.token_answer(self.keys.sign(body), ttl_s)

    def for_member(self, member_id: str, sid: str | None = None) -> dict[str, Any]:
        return self.issue(token_rules.member_identity(member_id), self.settings.member_token_ttl_s, "member", sid=sid)

    def for_staff(self, staff: dict[str, Any], sid: str | None = None) -> dict[str, Any]:
        return self.issue(token_rules.staff_identity(staff), self.settings.staff_token_ttl_s, "staff", sid=sid)

    def for_service(self, client_id: str, client_secret: str, audience: str) -> dict[str, Any]:
        """A token of a known client (checked against its own secret) for calling one service, carrying the
        scopes the client holds there."""
        expected = self.settings.client_secrets().get(client_id)
        # Compare even for an unknown client, so the answer time does not tell which ids exist.
        secret_ok = secrets.compare_digest(client_secret.encode(), (expected or secrets.token_hex(32)).encode())
        if not (expected and secret_ok):
            metrics.LOGIN_FAILURES.labels("service", "bad_credentials").inc()
            raise _unauthenticated("invalid-client", "unknown client or wrong secret")
        scopes = SERVICE_GRANTS.get(client_id, {}).get(audience)
        if not scopes:
            metrics.LOGIN_FAILURES.labels("service", "no_grant").inc()
            raise MembershipError("no-grant", f"{client_id} may not call {audience}", kind=FORBIDDEN)
        return self.issue(token_rules.service_identity(client_id, scopes), self.settings.service_token_ttl_s,
                          "service", audience=service_audience(audience))

    async def _new_refresh(self, session, kind: str, subject_id: str, family_id: str) -> str:
        token = secrets.token_urlsafe(32)
        await self.refresh_tokens.add({"_id": token_rules.refresh_digest(token), "family_id": family_id,
                                       "kind": kind, "subject_id": subject_id, "used": False, "revoked": False,
                                       "expires_at_ms": now_ms() + self.settings.refresh_token_ttl_s * 1000,
                                       "created_at": utcnow()}, session)
        return token

    def _access_for(self, kind: str, subject: dict[str, Any] | str, sid: str) -> dict[str, Any]:
        return self.for_member(subject, sid) if kind == "member" else self.for_staff(subject, sid)  # type: ignore[arg-type]

    async def start_session(self, kind: str, subject: dict[str, Any] | str) -> dict[str, Any]:
        """A login: an access token naming its session (`sid`, the refresh family) and the first refresh token."""
        sid = new_id("rtf")
        subject_id = subject if isinstance(subject, str) else subject["_id"]
        answer = self._access_for(kind, subject, sid)
        token = await self.mongo.transaction(lambda s: self._new_refresh(s, kind, subject_id, sid))
        return {**answer, "refresh_token": token, "refresh_expires_in": self.settings.refresh_token_ttl_s}

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Trade a refresh token for a new access token and the next refresh token.

        A refresh token works once. Presenting a used one means it was stolen (or replayed): the whole family
        is revoked, so neither the thief nor the owner can continue without logging in again. The refusal is
        returned from the unit of work (not raised) so that the revocation commits.
        """
        digest = token_rules.refresh_digest(refresh_token)
        result = await self.mongo.transaction(lambda session: self._refresh(session, digest, now_ms()))
        if isinstance(result, MembershipError):
            metrics.LOGIN_FAILURES.labels("refresh", result.code).inc()
            raise result
        return result

    async def _refresh(self, session, digest: str, now: int) -> dict[str, Any] | MembershipError:
        stored = await self.refresh_tokens.get(digest, session)
        if stored is None or stored["revoked"] or stored["expires_at_ms"] <= now:
            return _unauthenticated("invalid-refresh-token", "refresh token unknown or expired")
        if not await self.refresh_tokens.use(digest, session):
            await self._end_session(session, stored["family_id"])
            return _unauthenticated("refresh-token-reused", "this refresh token was already used; log in again")
        sid = stored["family_id"]
        if stored["kind"] == "member":
            member = await self.members.get_live(stored["subject_id"], session)
            if member is None:
                return _unauthenticated("invalid-refresh-token", "member no longer exists")
            answer, subject = self.for_member(member["_id"], sid), member["_id"]
        else:
            staff = await self.staff.get(stored["subject_id"], session)
            if staff is None or staff.get("status", "active") != "active":
                return _unauthenticated("invalid-refresh-token", "staff account is not active")
            answer, subject = self.for_staff(staff, sid), staff["_id"]
        following = await self._new_refresh(session, stored["kind"], subject, sid)
        return {**answer, "refresh_token": following, "refresh_expires_in": self.settings.refresh_token_ttl_s}

    def _keep_until_ms(self, now: int) -> int:
        """A revocation matters until every access token issued before it has expired."""
        return now + max(self.settings.member_token_ttl_s, self.settings.staff_token_ttl_s) * 1000

    async def _end_session(self, session, sid: str) -> None:
        await self.refresh_tokens.revoke_family(sid, session)
        now = now_ms()
        await self.revocations.end_session(sid, now, self._keep_until_ms(now), session)

    async def end_tokens_of(self, session, kind: str, subject_id: str, refresh_too: bool = True) -> None:
        """Every access token of an account issued until now stops counting at the gateway; with `refresh_too`
        its refresh tokens end as well (password change, disable, reset), else refreshing picks up the
        account's new roles (a role change)."""
        now = now_ms()
        if refresh_too:
            await self.refresh_tokens.revoke_subject(kind, subject_id, session)
        await self.revocations.end_tokens_before(subject_id, now, now, self._keep_until_ms(now), session)

    async def logout(self, refresh_token: str) -> None:
        """End a login: its refresh tokens stop working and its access tokens are refused at the gateway."""
        digest = token_rules.refresh_digest(refresh_token)

        async def unit(session):
            stored = await self.refresh_tokens.get(digest, session)
            if stored is not None:
                await self._end_session(session, stored["family_id"])

        await self.mongo.transaction(unit)

    async def revocations_since(self, since_ms: int) -> dict[str, Any]:
        """What the gateway polls: sessions ended and accounts whose earlier tokens stopped counting."""
        now = now_ms()
        found = await self.read(lambda: self.revocations.since(since_ms, now))
        items = [{k: doc.get(k) for k in ("kind", "sid", "subject", "not_before_ms", "at_ms", "expires_at_ms")}
                 for doc in found]
        return {"items": items, "now_ms": now}


class Codes(UseCase):
    """One-time login codes sent to a phone: issuing limits, attempt limits, and the member login they allow."""

    def __init__(self, *args, tokens: Tokens, members: Members) -> None:
        super().__init__(*args)
        self.tokens = tokens
        self.registrations = members

    def _digest(self, phone: str, code: str) -> str:
        return otp_rules.code_digest(phone, code, self.settings.otp_pepper)

    async def request(self, phone: str, locale: str) -> dict[str, Any]:
        """Send a code: the event tells notifications to send one, and notifications fetches the code itself
        (code_to_send) when it delivers the SMS. Codes per phone per window are limited."""
        phone = otp_rules.normalize_phone(phone)
        code = otp_rules.new_code(secrets.randbelow)
        now = now_ms()

        async def unit(session):
            existing = await self.otp.get(phone, session) or {}
            start, count = otp_rules.next_request_window(existing.get("window_start_ms", 0),
                                                         existing.get("requests", 0), now, self.otp_policy)
            await self.otp.put({"_id": phone, "digest": self._digest(phone, code), "attempts": 0, "used": False,
                                "code_sealed": seal(self.settings.otp_pepper, otp_rules.SEALED_FOR, phone, code),
                                "expires_at_ms": now + self.otp_policy.ttl_s * 1000, "window_start_ms": start,
                                "requests": count, "locale": locale}, session)
            await self.outbox.record(session, OtpRequested(phone=phone, locale=locale,
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

    async def code_to_send(self, phone: str) -> dict[str, Any]:
        """The pending code of a phone, for notifications' SMS (an internal call with its service token)."""
        phone = otp_rules.normalize_phone(phone)
        challenge = await self.read(lambda: self.otp.get(phone))
        return {"phone": phone, "code": otp_rules.code_to_send(challenge, phone, now_ms(), self.otp_policy,
                                                               self.settings.otp_pepper)}

    async def use_in(self, session, phone: str, code: str) -> MembershipError | None:
        """Count the attempt, then judge it. A refusal is returned (not raised) so the count commits."""
        counted = await self.otp.count_attempt(phone, self.otp_policy.max_attempts, session)
        challenge = await self.otp.get(phone, session)
        if not counted:
            if challenge is None or challenge.get("used"):
                return _unauthenticated("otp-invalid", "no code is pending for this phone")
            return MembershipError("otp-attempts-exceeded", "too many wrong codes; request a new code", kind=LIMITED)
        try:
            otp_rules.check_code(challenge, self._digest(phone, code), now_ms(), self.otp_policy)
        except MembershipError as refusal:
            return refusal
        if not await self.otp.burn(phone, self._digest(phone, code), session):
            return _unauthenticated("otp-invalid", "the code was already used")
        return None

    async def login(self, phone: str, code: str, locale: str | None) -> dict[str, Any]:
        """A member's tokens for a phone and its one-time code; a phone not known yet registers a member."""
        phone = otp_rules.normalize_phone(phone)

        async def unit(session):
            refusal = await self.use_in(session, phone, code)
            if refusal is not None:
                return refusal
            challenge = await self.otp.get(phone, session)
            member_id = await self.members.member_id_for("phone", phone, session)
            if member_id is not None:
                return (await self.members.get_live(member_id, session))["_id"]
            member = await self.registrations.register_in(session, source="otp", phone=phone,
                                                          locale=locale or challenge.get("locale") or "zh-CN")
            return member["_id"]

        result = await self.mongo.transaction(unit)
        if isinstance(result, MembershipError):
            metrics.LOGIN_FAILURES.labels("member", result.code).inc()
            raise result
        return await self.tokens.start_session("member", result)


def _verify_password(hasher: PasswordHasher, stored_hash: str, password: str) -> bool:
    try:
        return hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class PasswordHashing:
    """argon2id in a bounded pool: each hash takes `memory_kib`, so at most `concurrency` run at once and
    `waiting` more queue; a call beyond that is refused at once (429), before anything is hashed."""

    def __init__(self, concurrency: int, waiting: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="argon2")
        self.limit = max(1, concurrency) + max(0, waiting)
        self.pending = 0

    @contextlib.contextmanager
    def slot(self):
        if self.pending >= self.limit:
            metrics.LOGIN_FAILURES.labels("staff", "busy").inc()
            raise MembershipError("login-busy", "too many logins are being checked right now; try again shortly",
                                  kind=LIMITED, retry_after_s=1)
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    async def run(self, fn, *args):
        """In the bounded pool, waiting for a worker (for HQ's and the demo loader's hashes, never refused)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def call(self, fn, *args):
        """In the bounded pool, or refused (429) when it is full."""
        with self.slot():
            return await self.run(fn, *args)


class StaffAccounts(UseCase):
    """Staff, managers, franchisees and HQ: accounts (argon2id passwords), logins throttled per username and
    per username and requester (domain/logins.py)."""

    def __init__(self, *args, tokens: Tokens) -> None:
        super().__init__(*args)
        self.tokens = tokens
        self.passwords = PasswordHasher(time_cost=self.settings.password_time_cost,
                                        memory_cost=self.settings.password_memory_kib)
        self.hashing = PasswordHashing(self.settings.password_hash_concurrency, self.settings.password_hash_waiting)
        # Verified against when the username is unknown, so a wrong username costs as much as a wrong password.
        self._dummy_hash = self.passwords.hash("not-a-real-password")
        settings = self.settings
        self.throttles = (
            login_rules.LoginThrottle(settings.staff_login_username_free_failures, settings.staff_login_first_delay_s,
                                      settings.staff_login_username_max_delay_s, settings.staff_login_forget_after_s),
            login_rules.LoginThrottle(settings.staff_login_requester_free_failures,
                                      settings.staff_login_first_delay_s, settings.staff_login_requester_max_delay_s,
                                      settings.staff_login_forget_after_s))

    async def _count_attempt(self, session, keys: list[str], now: int) -> None:
        """Count the attempt as a failure before judging it (a right password clears the count afterwards), or
        refuse it while a delay earned by earlier failures runs."""
        records = await self.staff.failure_records(keys, session)
        standings = [login_rules.standing(records.get(key), now, throttle)
                     for key, throttle in zip(keys, self.throttles)]
        wait_ms = max(wait for _, wait in standings)
        if wait_ms > 0:
            raise MembershipError("too-many-login-failures", "too many failed logins; wait before trying again",
                                  kind=LIMITED, retry_after_s=max(1, -(-wait_ms // 1000)))
        for key, (failures, _) in zip(keys, standings):
            await self.staff.count_failure(key, records.get(key), failures + 1, now, session)

    async def login(self, username: str, password: str, requester: str = "unknown") -> dict[str, Any]:
        """A staff token and its refresh token. Refused with 429 while this username (from this requester, or
        from anywhere) is in a delay earned by failures, or when too many hashes are running already."""
        keys = [f"user|{username}", f"user|{username}|from|{requester}"]
        with self.hashing.slot():
            try:
                await self.mongo.transaction(lambda s: self._count_attempt(s, keys, now_ms()))
            except MembershipError:
                metrics.LOGIN_FAILURES.labels("staff", "delayed").inc()
                raise
            staff = await self.read(lambda: self.staff.by_username(username))
            active = staff is not None and staff.get("status", "active") == "active"
            stored_hash = staff["password_hash"] if active else self._dummy_hash
            ok = await self.hashing.run(_verify_password, self.passwords, stored_hash, password)
        if not (ok and active):
            metrics.LOGIN_FAILURES.labels("staff", "bad_credentials").inc()
            raise _unauthenticated("invalid-credentials", "wrong username or password")
        await self.mongo.transaction(lambda s: self.staff.clear_failures(keys, s))
        answer = await self.tokens.start_session("staff", staff)
        if staff.get("password_change_required"):
            answer["password_change_required"] = True
        return answer

    async def create(self, staff: dict[str, Any], password: str) -> dict[str, Any]:
        """A new staff account (HQ). The password is stored as an argon2id hash only."""
        password_hash = await self.hashing.run(self.passwords.hash, password)  # HQ's call: it may wait its turn
        exists = ("staff-exists", "a staff account with this id or username exists")

        async def unit(session):
            if await self.staff.get(staff["_id"], session) is not None or \
                    await self.staff.by_username(staff["username"], session) is not None:
                raise MembershipError(*exists)
            with refuse_duplicates(*exists):
                await self.staff.insert({**staff, "password_hash": password_hash, "status": "active"}, session)
            return public_staff(staff)

        return await self.mongo.transaction(unit)

    async def ensure(self, staff: dict[str, Any], password: str) -> None:
        """The demo loader's account: created once, never reset (keeps whatever password was set since)."""
        if await self.read(lambda: self.staff.get(staff["_id"])) is not None:
            return
        password_hash = await self.hashing.run(self.passwords.hash, password)
        doc = {**staff, "password_hash": password_hash, "status": "active"}
        await self.mongo.transaction(lambda s: self.staff.upsert(doc, s))

    async def change_password(self, staff_id: str, current: str, new: str) -> None:
        """Change one's own password; every refresh token of the account stops working."""
        staff = await self.read(lambda: self.staff.get(staff_id))
        if staff is None or not await self.hashing.call(_verify_password, self.passwords,
                                                                              staff["password_hash"], current):
            raise _unauthenticated("invalid-credentials", "the current password is not correct")
        if current == new:
            raise MembershipError("password-unchanged", "the new password must differ from the current one",
                                  kind=INVALID)
        password_hash = await self.hashing.call(self.passwords.hash, new)

        async def unit(session):
            await self.staff.set_password(staff_id, password_hash, session)
            await self.tokens.end_tokens_of(session, "staff", staff_id)

        await self.mongo.transaction(unit)

    async def _change(self, staff_id: str, fields: dict[str, Any], refresh_too: bool,
                      password: str | None = None) -> dict[str, Any]:
        """HQ changes an account; every access token issued before stops counting at the gateway."""
        if password is not None:
            fields = {**fields, "password_hash": await self.hashing.run(self.passwords.hash, password),
                      "password_change_required": True}

        async def unit(session):
            if not await self.staff.set_fields(staff_id, fields, session):
                raise MembershipError("staff-not-found", "no staff account with this id", kind=NOT_FOUND)
            await self.tokens.end_tokens_of(session, "staff", staff_id, refresh_too=refresh_too)
            return public_staff(await self.staff.get(staff_id, session))

        return await self.mongo.transaction(unit)

    async def disable(self, staff_id: str) -> dict[str, Any]:
        """The account can no longer log in or refresh, and its tokens are refused."""
        return await self._change(staff_id, {"status": "disabled"}, refresh_too=True)

    async def enable(self, staff_id: str) -> dict[str, Any]:
        return await self._change(staff_id, {"status": "active"}, refresh_too=True)

    async def change_access(self, staff_id: str, roles: list[str], store_ids: list[str],
                            franchisee_id: str | None) -> dict[str, Any]:
        """New roles and stores: tokens carrying the old ones stop counting; a refresh gets the new ones."""
        return await self._change(staff_id, {"roles": sorted(set(roles)), "store_ids": sorted(set(store_ids)),
                                             "franchisee_id": franchisee_id}, refresh_too=False)

    async def force_reset(self, staff_id: str, temporary_password: str) -> dict[str, Any]:
        """HQ sets a temporary password: every login ends, and the next one is told to change it."""
        return await self._change(staff_id, {}, refresh_too=True, password=temporary_password)

    async def list(self) -> list[dict[str, Any]]:
        return [public_staff(d) for d in await self.read(self.staff.list)]


KEYS = web.AppKey("keys", Keys)
TOKENS = web.AppKey("tokens", Tokens)
CODES = web.AppKey("codes", Codes)
STAFF = web.AppKey("staff", StaffAccounts)
__all__ = ["CODES", "KEYS", "STAFF", "TOKENS", "Codes", "Keys", "StaffAccounts", "Tokens"]
