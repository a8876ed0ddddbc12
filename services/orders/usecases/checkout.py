"""Placing an order: the checkout saga. The intent is recorded first (status pending, every planned step
written down), then stock is reserved and the member's coupons and points are held, then the order is
placed and waits for payment. A refusal or a sibling down on the way rejects it and undoes what started;
a crash on the way leaves the intent for the stuck-checkout sweeper to undo."""
from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from aiohttp import web
from pymongo.errors import DuplicateKeyError

from libs.clients import UpstreamError
from libs.clock import to_ms, utcnow
from libs.idempotency import PROCESS_OWNER, owner_is_dead
from libs.ids import new_id
from libs.logging import get_logger
from libs.principal import Principal
from libs.problems import Problem
from libs.refusal import CONFLICT, FORBIDDEN, INVALID, LIMITED, UNAVAILABLE, UPSTREAM_TIMEOUT, Refusal
from services.orders import metrics
from services.orders.domain import order as domain
from services.orders.domain import limits as limit_rules
from services.orders.domain import saga
from services.orders.domain.access import is_staff
from services.orders.domain.lifecycle import PENDING, OrderError
from services.orders.domain.pricing import apply_discounts, price_lines
from services.orders.domain.requests import RequestKey, key_in_progress, stored_answer
from services.orders.usecases.base import OrderFlow, actor_of, passed_on
from services.orders.views import public_order

log = get_logger("orders")
NAMED_REFUSALS = ("sold-out", "coupon-unavailable", "insufficient-points", "not-in-store", "checkout-busy")


def rejection_reason(error: Exception) -> str:
    """A bounded label for the rejected-checkouts metric: the business refusals by name, the client's
    mistakes as "invalid", a sibling down or slow as "upstream", anything unexpected as "other"."""
    if isinstance(error, Refusal):
        if error.code in NAMED_REFUSALS:
            return error.code
        return "upstream" if error.kind in (UNAVAILABLE, UPSTREAM_TIMEOUT) else "invalid"
    if isinstance(error, Problem):
        return error.type if error.type in NAMED_REFUSALS else ("upstream" if error.status >= 500 else "invalid")
    return "other"


class Checkout(OrderFlow):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._sold_out: dict[tuple, float] = {}          # demand -> refused from memory until (monotonic)
        self._probes: dict[tuple, asyncio.Future] = {}   # demand -> the one reservation asking again
        self._warming: set[asyncio.Task] = set()
        self._reservation_gate = asyncio.Semaphore(self.settings.max_reservations_in_flight)

    async def place(self, principal: Principal, request, key: RequestKey | None = None) -> tuple[int, dict, bool]:
        """Run the saga for `request` (the parsed order request). Returns (status, body, replayed). With an
        Idempotency-Key (`key`) the order itself is the claim (its insert, unique by the key) and keeps the
        answer: a retry is answered from it, and no transaction ever joins the two."""
        probing = await self.refuse_if_known_sold_out(request)  # before any claim or write
        started = time.perf_counter()
        outcome = "placed"
        try:
            if key is not None:
                replay = await self._replay(key)
                if replay is not None:
                    outcome = "replayed"
                    return (*replay, True)
            return (*await self._place(principal, request, key), False)
        except Exception as error:
            outcome = rejection_reason(error)
            metrics.CHECKOUTS_REJECTED.labels(outcome).inc()
            raise
        finally:
            if probing is not None:  # this request was the probe and ended before stock answered: its
                self._settle_probe(probing, False)  # waiters ask stock themselves
            if outcome != "replayed":
                metrics.CHECKOUT_DURATION.labels("placed" if outcome == "placed" else "rejected").observe(
                    time.perf_counter() - started)

    async def _replay(self, key: RequestKey) -> tuple[int, dict] | None:
        """The order this key created, answered again; a checkout left half-way by a dead process is
        rejected (what it started is undone, its key given back) so that this retry carries the request on."""
        earlier = await self.repo.by_checkout_key(key.digest)
        if earlier is None:
            return None
        if earlier["status"] == PENDING and earlier.get("checkout_request", {}).get("body_hash") == key.body_hash:
            owner = {"owner": earlier.get("checkout_owner"), "claimed_ms": earlier.get("created_at_ms")}
            if not await owner_is_dead(self.mongo, owner, to_ms(utcnow())):
                raise key_in_progress()
            await self._reject(earlier["_id"], "checkout interrupted", earlier["saga"]["started"])
            return None
        return stored_answer(earlier.get("checkout_request"), key)

    async def _place(self, principal: Principal, request, key: RequestKey | None) -> tuple[int, dict]:
        fulfilment = request.fulfilment.model_dump(exclude_none=True)
        member_id = self._buyer(principal, fulfilment)
        coupon_codes, points = list(request.coupon_codes), request.points
        if member_id is None and (coupon_codes or points):
            raise OrderError("member-required", "coupons and points need a member", kind=INVALID)
        requested = [line.model_dump() for line in request.lines]
        if not requested:  # scan and pay: the codes scanned in store are the basket
            requested = await self._scanned_lines(fulfilment.get("scanned_codes") or [])
        await self._check_limits(member_id, requested)
        lines = price_lines(requested, await self._quote(request.channel, requested))
        order = domain.new_order(new_id("ord"), member_id=member_id, channel=request.channel, fulfilment=fulfilment,
                                 lines=lines, requested_lines=requested, coupon_codes=coupon_codes, points=points,
                                 attribution={}, created_by=actor_of(principal), now=utcnow())
        planned = saga.checkout_steps(coupon_codes, points)
        # Every planned step is written down before the first call, so a crash at any point leaves an
        # order that the stuck-checkout sweeper can compensate (releases are idempotent at stock/membership).
        order["saga"] = {"steps": planned, "started": planned}
        if key is not None:
            order["checkout_key"] = key.digest
            order["checkout_request"] = {"body_hash": key.body_hash}
        order["totals"] = apply_discounts(lines, 0, 0)[1]
        if fulfilment["type"] == "in_store" and member_id is not None:
            await self._require_store_session(member_id, fulfilment["location_id"], request.attribution)
        if member_id and not (request.attribution and request.attribution.scan_token):
            # The member's binding is fetched while stock decides (and kept per member): not one more hop
            # on the buyer's wait. A refused checkout only warmed the cache.
            self._warm_binding(member_id)
        reservation = await self._reserve(order)
        current = await self._still_running(order["_id"], [saga.RESERVE_STOCK])
        benefits = await self._hold_benefits(order) if saga.HOLD_BENEFITS in planned else None
        if benefits is not None:
            current = await self._still_running(order["_id"], [saga.RESERVE_STOCK, saga.HOLD_BENEFITS])
        try:
            priced, totals = apply_discounts(lines, int((benefits or {}).get("coupon_discount", 0)),
                                             int((benefits or {}).get("points_discount", 0)),
                                             coupons=(benefits or {}).get("coupons"))
        except OrderError as error:
            await self._reject(order["_id"], error.code, [saga.RESERVE_STOCK, saga.HOLD_BENEFITS])
            raise
        # Attribution is looked up only once stock is secured: in a flash sale the losers never cost
        # membership a call.
        attribution = await self._attribution(principal, member_id, fulfilment, request.attribution)
        expires_at = utcnow() + timedelta(seconds=self.settings.payment_window_s)

        def place(doc):
            doc["attribution"] = attribution
            change = domain.place(doc, lines=priced, totals=totals, reservation=reservation, benefits=benefits,
                                  expires_at=expires_at, now=utcnow())
            if doc.get("checkout_request") is not None:  # the answer a retry with the same key gets
                doc["checkout_request"] = {**doc["checkout_request"], "status": 201, "body": public_order(doc)}
            return change

        # One atomic write of the order with its `placed` event: no transaction on the hot path.
        placed, _ = await self.mutate_alone(order["_id"], place, loaded=current)
        metrics.ORDERS_PLACED.labels(request.channel, fulfilment["type"]).inc()
        metrics.ORDER_VALUE.labels(request.channel).observe(totals["total"])
        return 201, public_order(placed)

    async def _check_limits(self, member_id: str | None, requested: list[dict]) -> None:
        """Limited SKUs: per order always; per member against the member's recorded orders (two requests of
        one member in the same instant can both pass; each is still bounded by the per-order limit)."""
        limits = self.settings.limited_skus
        if not limits or not any(line["sku_id"] in limits for line in requested):
            return
        limit_rules.check_per_order(requested, limits)
        if member_id is not None and any("per_member" in (limits.get(l["sku_id"]) or {}) for l in requested):
            limit_rules.check_per_member(requested, limits, await self.repo.of_member(member_id))

    async def _reserve(self, order: dict) -> dict:
        """Record the intent, then reserve. A bounded number of reservations in flight per process:
        backpressure on stock, and in a flash sale the buyers queued here learn "sold out" from the first
        refusal instead of each asking stock."""
        fulfilment, lines = order["fulfilment"], order["lines"]
        kind = fulfilment["type"]
        demand = demand_of(kind, fulfilment.get("location_id"), lines)
        try:  # a checkout that cannot get a slot in time is told to retry, before anything is written
            await asyncio.wait_for(self._reservation_gate.acquire(), timeout=self.settings.checkout_queue_limit_s)
        except TimeoutError:
            raise Refusal("checkout-busy", "too many checkouts at this moment; please try again", kind=LIMITED,
                          retry_after_s=1) from None
        try:
            self._answer_recent_sold_out(demand)
            # The process running this checkout; the sweeper leaves it alone while this process is alive.
            order["checkout_owner"] = PROCESS_OWNER
            try:  # the intent, and the Idempotency-Key's claim: one insert, no transaction (group commit)
                await self.repo.insert_alone(order, [])
            except DuplicateKeyError:
                raise key_in_progress() from None
            reservation = await self._saga_step(order["_id"], [], demand=demand, call=lambda: self.upstreams.reserve(
                order["_id"], kind, [{"sku_id": l["sku_id"], "qty": l["qty"]} for l in lines],
                location_id=fulfilment.get("location_id"),
                destination=({"lat": fulfilment["address"]["lat"], "lng": fulfilment["address"]["lng"]}
                             if kind == "ship" else None),
                ttl_s=self.settings.payment_window_s + self.settings.reservation_margin_s))
        finally:
            self._reservation_gate.release()
        self._settle_probe(demand, False)
        return reservation

    async def _hold_benefits(self, order: dict) -> dict:
        """Hold the coupons and points for as long as stock holds the goods: the payment window plus the
        margin. An abandoned checkout whose release never reaches membership then lets go by itself."""
        return await self._saga_step(order["_id"], [saga.RESERVE_STOCK], call=lambda: self.upstreams.hold_benefits({
            "order_id": order["_id"], "member_id": order["member_id"], "channel": order["channel"],
            "coupon_codes": order["coupon_codes"], "points": order.get("points_requested", order["points"]),
            "lines": [{"sku_id": l["sku_id"], "category": l["category"], "qty": l["qty"],
                       "unit_price": l["unit_price"]} for l in order["lines"]],
            "ttl_s": self.settings.payment_window_s + self.settings.reservation_margin_s}))

    async def _scanned_lines(self, codes: list[str]) -> list[dict]:
        """Scan and pay: each code scanned in store is one unit of its SKU."""
        lines, unknown = [], []
        for code in codes:
            try:
                sku_id = await self.upstreams.sku_for_code(code)
            except UpstreamError as exc:
                raise passed_on(exc) from None
            if sku_id is None:
                unknown.append(code)
            else:
                lines.append({"sku_id": sku_id, "qty": 1})
        if unknown:
            raise OrderError("unknown-code", f"no product has the code(s) {', '.join(unknown)}", kind=INVALID,
                             codes=unknown)
        return lines

    @staticmethod
    def _buyer(principal: Principal, fulfilment: dict) -> str | None:
        """Members order for themselves; store staff may ring up an in-store (guest) sale at their store."""
        kind = fulfilment["type"]
        if principal.member_id and "customer" in principal.roles:
            return principal.member_id
        if is_staff(principal) and kind == "in_store":
            if fulfilment.get("location_id") not in principal.store_ids:
                raise OrderError("forbidden", "staff sell in store only at their own store", kind=FORBIDDEN)
            return None
        raise OrderError("forbidden", "only members order online; store staff may create in_store orders",
                         kind=FORBIDDEN)

    async def _quote(self, channel: str, requested: list[dict]) -> dict[str, dict]:
        sku_ids = list(dict.fromkeys(line["sku_id"] for line in requested))
        try:
            quotes = await self.upstreams.quote(channel, sku_ids)
        except UpstreamError as exc:
            raise passed_on(exc) from None
        inactive = [s for s in sku_ids if s not in quotes or quotes[s].get("status", "active") != "active"]
        if inactive:
            raise OrderError("sku-not-sellable", f"not sellable: {', '.join(inactive)}", kind=INVALID,
                             sku_ids=inactive)
        return quotes

    async def _attribution(self, principal: Principal, member_id: str | None, fulfilment: dict, requested) -> dict:
        """The QR this member scanned (the scan token membership issued to them, still fresh) first, else the
        member's binding; in store, the sale is that store's. Attribution never blocks a sale: an unreachable
        membership means none."""
        attribution = {"store_id": None, "staff_id": None, "campaign_id": None, "code": None}
        token = requested.scan_token if requested is not None else None
        binding = await self._binding(member_id, token) if member_id else {}
        scanned = binding.get("scan")
        if scanned:
            attribution.update({k: scanned.get(k) for k in ("store_id", "staff_id", "campaign_id", "code")})
        elif member_id and _still_bound(binding.get("bound_until")):
            attribution.update({k: binding.get(k) for k in ("store_id", "staff_id", "campaign_id")})
        if fulfilment["type"] == "in_store":
            store = fulfilment["location_id"]
            if attribution["store_id"] != store:
                attribution["staff_id"] = None
            attribution["store_id"] = store
            if is_staff(principal) and principal.staff_id:
                attribution["staff_id"] = principal.staff_id
        return attribution

    async def _require_store_session(self, member_id: str, store_id: str, requested) -> None:
        """A member pays in store only while there: their checkout names the scan token of a QR code of that
        store they scanned a moment ago (the store session). Refused before anything is reserved."""
        token = requested.scan_token if requested is not None else None
        scanned = (await self._binding(member_id, token)).get("scan") if token else None
        if not scanned or scanned.get("store_id") != store_id:
            raise OrderError("not-in-store", f"scan a QR code of store {store_id} there to pay in store "
                                             "(attribution.scan_token)", kind=FORBIDDEN)

    def _warm_binding(self, member_id: str) -> None:
        task = asyncio.ensure_future(self._binding(member_id))
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    async def _binding(self, member_id: str, scan_token: str | None = None) -> dict:
        try:
            return await self.upstreams.attribution(member_id, scan_token)
        except (UpstreamError, Problem) as exc:
            log.warning("orders.attribution_unavailable", error=str(exc))
            return {}

    async def refuse_if_known_sold_out(self, request) -> tuple | None:
        """Before anything is claimed or written: a demand stock refused as sold-out a moment ago is refused
        again from memory (never accepted from memory). A refusal then costs no transaction at all. When the
        memory of a demand has just run out, ONE request asks stock again and the others wait for its
        answer (single flight), instead of all of them racing to record a checkout. Returns the demand
        when this request is that probe."""
        if not request.lines:
            return None
        demand = demand_of(request.fulfilment.type, getattr(request.fulfilment, "location_id", None),
                           [line.model_dump() for line in request.lines])
        while True:
            until = self._sold_out.get(demand)
            if until is None:
                return None
            if time.monotonic() < until:
                raise self._sold_out_from_memory()
            probe = self._probes.get(demand)
            if probe is None:  # this request asks stock again; its reservation settles the probe
                self._probes[demand] = asyncio.get_running_loop().create_future()
                self._sold_out.pop(demand, None)
                return demand
            try:
                await asyncio.wait_for(asyncio.shield(probe), timeout=self.settings.upstream_timeout_s)
            except TimeoutError:
                return None  # the probe is slow: ask stock as before
            if not probe.result():
                return None  # stock had some again (or the probe ended early): try for it

    @staticmethod
    def _sold_out_from_memory() -> Refusal:
        metrics.SOLD_OUT_SHORTCUTS.inc()
        return sold_out()

    def _answer_recent_sold_out(self, demand: tuple) -> None:
        """Stock said sold-out for exactly this demand a moment ago (the memo filled while this request
        waited at the reservation gate): answer so at once, without asking stock again."""
        until = self._sold_out.get(demand)
        if until is not None and time.monotonic() < until:
            raise self._sold_out_from_memory()

    def _settle_probe(self, demand: tuple, sold_out_now: bool) -> None:
        probe = self._probes.pop(demand, None)
        if probe is not None and not probe.done():
            probe.set_result(sold_out_now)

    async def _saga_step(self, order_id: str, done_before: list[str], call, demand: tuple | None = None):
        """Run one forward step; on failure reject the order and compensate what may have taken effect."""
        try:
            return await call()
        except UpstreamError as exc:
            # A definite refusal: this step did not take effect, only earlier ones need undoing.
            sold = exc.problem_type == "sold-out"
            if demand is not None and sold and self.settings.sold_out_memory_s > 0:
                if len(self._sold_out) > 10_000:
                    self._sold_out.clear()
                self._sold_out[demand] = time.monotonic() + self.settings.sold_out_memory_s
            if demand is not None:
                self._settle_probe(demand, sold)
            await self._reject(order_id, exc.problem_type or "upstream-error", done_before)
            # Sold out is said in so many words: where else it is, and how many, is not the buyer's to map.
            raise (sold_out() if sold else passed_on(exc)) from None
        except Problem as problem:
            # Unavailable or timed out: the step may have taken effect; undo it as well.
            current = saga.RESERVE_STOCK if not done_before else saga.HOLD_BENEFITS
            await self._reject(order_id, problem.type, [*done_before, current])
            raise

    async def _still_running(self, order_id: str, done: list[str]) -> dict:
        """After each step: if the order was rejected meanwhile, undo what this checkout did and stop.
        Returns the order as it is now."""
        current = await self.repo.get_committed(order_id)
        if current is not None and current["status"] == PENDING:
            return current
        await self.mutate(order_id, lambda o: domain.undo_late_steps(o, done))
        metrics.CHECKOUTS_REJECTED.labels("overtaken").inc()
        raise OrderError("checkout-rejected", "this checkout took too long and was cancelled; nothing is held "
                                              "or charged, please order again", kind=CONFLICT)

    async def _reject(self, order_id: str, reason: str, started: list[str]) -> None:
        def change(order):
            order["saga"]["started"] = started
            return domain.reject(order, reason, utcnow())
        try:
            await self.mutate_alone(order_id, change)
        except Refusal as refusal:  # already rejected by the stuck-checkout sweeper
            log.warning("orders.reject_failed", order_id=order_id, error=refusal.detail)


def _still_bound(bound_until: str | None) -> bool:
    if not bound_until:
        return True
    try:
        until = datetime.fromisoformat(bound_until.replace("Z", "+00:00"))
    except ValueError:
        return False
    return (until if until.tzinfo else until.replace(tzinfo=UTC)) > utcnow()


CHECKOUT = web.AppKey("orders.checkout", Checkout)


def sold_out() -> Refusal:
    """The one sold-out answer: no locations, no quantities (stock's refusal carries them; we do not)."""
    return Refusal("sold-out", "sold out: not enough stock to serve this order", kind=CONFLICT)


def demand_of(kind: str, location_id: str | None, lines: list[dict]) -> tuple:
    """What a sold-out memo is keyed on: the fulfilment, the place and the quantities asked."""
    merged: dict[str, int] = {}
    for line in lines:  # the same SKU on two lines is one demand, as the charged lines merge them
        merged[line["sku_id"]] = merged.get(line["sku_id"], 0) + int(line["qty"])
    return kind, location_id, tuple(sorted(merged.items()))
