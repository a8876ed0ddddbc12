"""`make demo`: a narrated walk through the closed loop on the suite `make run` started.

A shopper scans an assistant's QR code in the Jing'an store and becomes a member; buys online for pickup
with the welcome coupon; collects with the code that reached her phone; returns one item at the Xujiahui
store; a second member orders for delivery and a store ships it; finally the stores' and the assistant's
statement lines. Every step prints what happened and where to look.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import uuid

import aiohttp

GATEWAY = os.environ.get("O2O_GATEWAY", "http://127.0.0.1:8080")
API = GATEWAY + "/api/v1"
BOLD, DIM, GREEN, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = RESET = ""


def step(n: int, text: str) -> None:
    print(f"\n{BOLD}{n}. {text}{RESET}")


def note(text: str) -> None:
    print(f"   {text}")


def look(text: str) -> None:
    print(f"   {DIM}look: {text}{RESET}")


class Client:
    def __init__(self, http: aiohttp.ClientSession, token: str | None = None) -> None:
        self.http, self.token = http, token

    async def call(self, method: str, path: str, body=None, expect=(200, 201, 202)):
        headers = {"Idempotency-Key": uuid.uuid4().hex} if method == "POST" else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with self.http.request(method, API + path, json=body, headers=headers) as response:
            data = await response.json(content_type=None)
            if response.status not in expect:
                raise SystemExit(f"{method} {path} answered {response.status}: {json.dumps(data, ensure_ascii=False)}")
            return data

    async def member(self, phone: str) -> "Client":
        otp = await self.call("POST", "/auth/member/otp", {"phone": phone})
        if "dev_code" not in otp:
            raise SystemExit("the suite is not in dev mode (no dev_code); start it with `make run`")
        token = await self.call("POST", "/auth/member/token", {"phone": phone, "code": otp["dev_code"]})
        return Client(self.http, token["access_token"])

    async def staff(self, username: str, password: str) -> "Client":
        token = await self.call("POST", "/auth/staff/token", {"username": username, "password": password})
        return Client(self.http, token["access_token"])


async def until(check, timeout: float = 30.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for an asynchronous effect; see `make logs`")
        await asyncio.sleep(interval)


def yuan(fen: int) -> str:
    return f"¥{fen / 100:.2f}"


async def main() -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        try:
            async with http.get(GATEWAY + "/healthz") as response:
                health = await response.json()
        except aiohttp.ClientError:
            raise SystemExit(f"nothing answers at {GATEWAY}; run `make run` first")
        if health.get("status") != "ok":
            raise SystemExit(f"the suite is not healthy yet: {health}")
        anonymous = Client(http)
        admin = await anonymous.staff("hq.admin", "hq-admin-pass")
        jingan = await anonymous.staff("jingan.staff", "jingan-staff-pass")
        xujiahui = await anonymous.staff("xujiahui.manager", "xujiahui-manager-pass")

        phone = "+86135" + str(uuid.uuid4().int)[:8]
        step(1, f"A shopper ({phone}) scans assistant stf_jingan_01's QR code in the Jing'an store")
        shopper = await anonymous.member(phone)
        scan = await shopper.call("POST", "/members/scan", {"code": "qr_staff_jingan_01"})
        note(f"member {scan['member_id']} bound to {scan['attribution']['store_id']} / "
             f"{scan['attribution']['staff_id']} until {scan['attribution']['bound_until'][:10]}")
        note(f"tags: {', '.join(scan['tags'])}")
        coupon = (await shopper.call("GET", "/members/me/coupons"))["items"][0]
        note(f"campaign coupon {coupon['code']}: {coupon['name']}")
        look("GET /api/v1/members/me, /members/me/coupons")

        step(2, "She orders a tee and jeans online for pickup at Jing'an, with the coupon, and pays")
        order = await shopper.call("POST", "/orders", {
            "channel": "app", "lines": [{"sku_id": "sku_tee_classic_whi_m", "qty": 1},
                                        {"sku_id": "sku_jeans_slim_ind_30", "qty": 1}],
            "fulfilment": {"type": "pickup", "location_id": "loc_sh_jingan"},
            "coupon_codes": [coupon["code"]], "points": 0})
        totals = order["totals"]
        note(f"order {order['id']}: subtotal {yuan(totals['subtotal'])}, coupon -{yuan(totals['discount'])}, "
             f"total {yuan(totals['total'])}; stock reserved at Jing'an")
        paid = await shopper.call("POST", f"/orders/{order['id']}/pay", {"card_number": "4242424242424242"})
        note(f"paid with the sandbox card: status {paid['status']} ({paid['payment']['payment_id']})")
        look(f"GET /api/v1/orders/{order['id']} (timeline), /stock/levels?location_id=loc_sh_jingan")

        step(3, "Jing'an staff pick the goods and mark the order ready; the code reaches her phone")
        await jingan.call("POST", f"/orders/{order['id']}/ready-for-pickup", {})

        async def pickup_message():
            page = await shopper.call("GET", "/notifications/deliveries?type=orders.order.ready_for_pickup")
            # Sent: the log shows the text with its code once it went out (dev mode; masked before).
            return next((d for d in page["items"] if order["id"] in (d.get("body") or "")
                         and re.search(r"\b\d{6}\b", d["body"])), None)
        message = await until(pickup_message)
        code = re.search(r"\b(\d{6})\b", message["body"]).group(1)
        note(f"{message['channel']} message: {message['body']}")
        look("GET /api/v1/notifications/deliveries (the delivery log, every attempt)")

        step(4, "At the counter, staff verify the code and hand the goods over")
        done = await jingan.call("POST", f"/orders/{order['id']}/pickup", {"code": code})
        note("timeline: " + " -> ".join(t["status"] for t in done["timeline"]))

        async def earned():
            points = await shopper.call("GET", "/members/me/points")
            return points if points["balance"] > 0 else None
        points = await until(earned)
        note(f"she earned {points['balance']} points (1 per yuan paid)")

        step(5, "Next day she returns the jeans at the Xujiahui store")
        returned = await shopper.call("POST", f"/orders/{order['id']}/returns",
                                      {"lines": [{"sku_id": "sku_jeans_slim_ind_30", "qty": 1}], "reason": "too long"})
        # Another store than the seller: its manager takes it, with the return code her app shows.
        code = await shopper.call("POST", f"/orders/{order['id']}/return-code", {})
        note(f"her app shows return code {code['return_code']} (valid until {code['expires_at']})")
        received = await xujiahui.call("POST", f"/orders/{order['id']}/returns/{returned['return']['id']}/receive",
                                       {"location_id": "loc_sh_xujiahui",
                                        "proof": {"return_code": code["return_code"]}})
        refund = received["refunds"][-1]
        note(f"refunded {yuan(refund['amount'])}; the jeans are back in Xujiahui's stock")

        async def clawed():
            now = await shopper.call("GET", "/members/me/points")
            return now if now["balance"] < points["balance"] else None
        after = await until(clawed)
        note(f"points clawed back for the returned line: {points['balance']} -> {after['balance']}")
        look("GET /api/v1/stock/movements?location_id=loc_sh_xujiahui (the ledger explains the number)")

        step(6, "Another member orders for delivery; stock routes it to the closest store that can ship")
        lin = await anonymous.member("+8613800000001")
        ship = await lin.call("POST", "/orders", {
            "channel": "mini_program", "lines": [{"sku_id": "sku_tee_classic_bla_l", "qty": 1}],
            "fulfilment": {"type": "ship", "address": {"name": "Lin Xiaomei", "line1": "99 Tianyaoqiao Rd",
                                                       "city": "Shanghai", "lat": 31.1930, "lng": 121.4390}},
            "coupon_codes": [], "points": 0})
        store = ship["allocations"][0]["location_id"]
        note(f"order {ship['id']} routed to {store}")
        await lin.call("POST", f"/orders/{ship['id']}/pay", {"card_number": "4242424242424242"})
        shipper = xujiahui if store == "loc_sh_xujiahui" else admin

        async def allocated():
            current = await lin.call("GET", f"/orders/{ship['id']}")
            return current if current["status"] == "allocated" else None
        await until(allocated)
        await shipper.call("POST", f"/orders/{ship['id']}/ship", {"carrier": "SF Express", "tracking_number": "SF1029384756"})
        final = await lin.call("POST", f"/orders/{ship['id']}/complete", {})
        note("timeline: " + " -> ".join(t["status"] for t in final["timeline"]))

        step(7, "Settlement: what the stores and the assistant earned from these sales")
        for order_id in (order["id"], ship["id"]):
            async def sale(order_id=order_id):
                page = await admin.call("GET", f"/settlement/orders/{order_id}/postings")
                return page["items"] if any(p["kind"] == "sale" for p in page["items"]) else None
            for posting in await until(sale):
                shares = ", ".join(f"{e['account']} {'+' if e['credit'] else '-'}{yuan(e['credit'] or e['debit'])}"
                                   for e in posting["entries"] if e["account"] != "deferred_revenue")
                note(f"{order_id} {posting['kind']:<8} {shares}")
        today = "today"  # the current business day in settlement's time zone (a UTC date is wrong after 16:00 UTC)
        for account in ("store:loc_sh_jingan", "store:" + store, "staff:stf_jingan_01"):
            statement = await admin.call("GET", f"/settlement/statements?account={account}&date={today}&granularity=day")
            for item in statement["items"][:1]:
                note(f"{account:<24} statement of {item['local_date']} ({item['time_zone']}, {item['status']}): opening {yuan(item['opening'])}, "
                     f"+{yuan(item['total_credits'])} -{yuan(item['total_debits'])}, closing {yuan(item['closing'])}, "
                     f"{item['entry_count']} entries")
        look("GET /api/v1/settlement/statements?account=staff:stf_jingan_01&date=" + today + "&granularity=day")
        print(f"\n{GREEN}The loop is closed.{RESET} Prometheus: http://127.0.0.1:9090 (if installed); logs: make logs")


if __name__ == "__main__":
    asyncio.run(main())
