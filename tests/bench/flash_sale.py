"""Flash-sale benchmark through the gateway: 5,000 buyers race for 500 units of one SKU at one store.

Reports confirmed (paid) orders/s over the race and the p99 of the sold-out answer, as a ratio of raw
findAndModify on one hot document in the same database (the floor any correct design stands on).
Oversold must be 0.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
from pymongo import AsyncMongoClient, ReturnDocument

from tests.bench.load import percentile
from tests.bench.suite_env import private_suite

SKU = "sku_tee_limited_red_m"
STORE = "loc_sh_jingan"
BUYERS = 5000
UNITS = 500
IN_FLIGHT = 200


async def raw_find_and_modify(mongo_url: str, attempts: int = BUYERS, units: int = UNITS) -> dict:
    client = AsyncMongoClient(mongo_url)
    collection = client[f"o2o_bench_{uuid.uuid4().hex[:6]}"]["hot"]
    try:
        await collection.insert_one({"_id": "sku", "available": units})
        semaphore = asyncio.Semaphore(200)
        wins = 0

        async def take():
            nonlocal wins
            async with semaphore:
                doc = await collection.find_one_and_update({"_id": "sku", "available": {"$gte": 1}},
                                                           {"$inc": {"available": -1}},
                                                           return_document=ReturnDocument.AFTER)
                wins += doc is not None

        started = time.perf_counter()
        await asyncio.gather(*(take() for _ in range(attempts)))
        elapsed = time.perf_counter() - started
        left = (await collection.find_one({"_id": "sku"}))["available"]
        return {"ops_per_s": round(attempts / elapsed, 1), "wins": wins, "left": left}
    finally:
        await client.drop_database(collection.database.name)
        await client.close()


async def run(mongo_url: str, namespace: str) -> dict:
    raw = await raw_find_and_modify(mongo_url)
    async with private_suite(mongo_url, GATEWAY_RATE_IP_PER_S="100000", GATEWAY_RATE_IP_BURST="100000") as suite:
        api = suite.url("gateway") + "/api/v1"
        connector = aiohttp.TCPConnector(limit=400)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as http:
            rate_limited = {"retried": 0}

            async def post(path, body, token=None, ip="10.0.0.1", key=None, retry_limited=False):
                headers = {"X-Forwarded-For": ip, "Idempotency-Key": key or uuid.uuid4().hex}
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                for _ in range(20):
                    async with http.post(api + path, json=body, headers=headers) as response:
                        status, answer = response.status, await response.json(content_type=None)
                        retry_after = response.headers.get("Retry-After")
                    if status != 429 or not retry_limited:
                        return status, answer
                    # As an app does: told to slow down, wait as asked and send the same request again.
                    rate_limited["retried"] += 1
                    await asyncio.sleep(min(float(retry_after or 1), 5.0))
                return status, answer

            status, admin = await post("/auth/staff/token", {"username": "hq.admin", "password": "hq-admin-pass"})
            admin = admin["access_token"]
            async with http.get(api + f"/stock/levels?location_id={STORE}&sku_id={SKU}",
                                headers={"Authorization": f"Bearer {admin}"}) as response:
                start = (await response.json())["items"][0]
            async with http.get(api + "/stock/locations", headers={"Authorization": f"Bearer {admin}"}) as response:
                safety = next(l for l in (await response.json())["items"] if l["id"] == STORE).get("safety_stock", 0)
            top_up = UNITS + safety - start["available"]
            if top_up > 0:
                await post("/stock/movements", {"kind": "receive", "key": f"bench-{uuid.uuid4().hex}",
                                                "location_id": STORE, "sku_id": SKU, "qty": top_up}, admin)

            login_semaphore = asyncio.Semaphore(50)  # membership on a shared machine: fewer at once, retried longer
            login_failures: list[str] = []

            async def login(i: int) -> tuple[str, str]:
                ip = f"10.{i // 62500 + 20}.{(i // 250) % 250}.{i % 250 + 1}"
                phone = f"+86136{i:08d}"
                async with login_semaphore:
                    for attempt in range(12):  # as an app would: retry a login the server could not answer
                        _, otp = await post("/auth/member/otp", {"phone": phone}, ip=ip)
                        if "dev_code" in otp:
                            _, token = await post("/auth/member/token", {"phone": phone, "code": otp["dev_code"]},
                                                  ip=ip)
                            if "access_token" in token:
                                return token["access_token"], ip
                            login_failures.append(str(token.get("type", token))[-40:])
                        else:
                            login_failures.append(str(otp.get("type", otp))[-40:])
                        await asyncio.sleep(min(0.5 * (attempt + 1), 5.0))
                raise RuntimeError(f"member {phone} could not log in: {login_failures[-3:]}")

            started = time.perf_counter()
            buyers = await asyncio.gather(*(login(i) for i in range(BUYERS)))
            login_s = time.perf_counter() - started

            body = {"channel": "app", "lines": [{"sku_id": SKU, "qty": 1}],
                    "fulfilment": {"type": "pickup", "location_id": STORE}, "coupon_codes": [], "points": 0}
            sold_out_latency: list[float] = []
            outcomes = {"confirmed": 0, "sold_out": 0, "other": 0}
            other_statuses: dict[str, int] = {}
            # The crowd: every buyer taps "buy" once; at most IN_FLIGHT requests are open at any moment
            # (connections a mobile network, CDN and load balancer actually hold open towards one site).
            in_flight = asyncio.Semaphore(IN_FLIGHT)

            async def buy(token: str, ip: str):
                async with in_flight:
                    await buy_once(token, ip)

            async def buy_once(token: str, ip: str):
                t0 = time.perf_counter()
                status, order = await post("/orders", body, token, ip, retry_limited=True)
                if status == 409 and str(order.get("type", "")).endswith("sold-out"):
                    sold_out_latency.append(time.perf_counter() - t0)
                    outcomes["sold_out"] += 1
                    return
                if status != 201:
                    outcomes["other"] += 1
                    label = f"order:{status}:{str(order.get('type', '')).rsplit('/', 1)[-1]}"
                    other_statuses[label] = other_statuses.get(label, 0) + 1
                    return
                status, paid = await post(f"/orders/{order['id']}/pay", {"card_number": "4242424242424242"}, token, ip,
                                          retry_limited=True)
                if status == 200 and paid.get("status") == "confirmed":
                    outcomes["confirmed"] += 1
                else:
                    outcomes["other"] += 1
                    label = f"pay:{status}:{str(paid.get('type', paid.get('status', ''))).rsplit('/', 1)[-1]}"
                    other_statuses[label] = other_statuses.get(label, 0) + 1

            started = time.perf_counter()
            await asyncio.gather(*(buy(token, ip) for token, ip in buyers))
            race_s = time.perf_counter() - started
            async with http.get(api + f"/stock/levels?location_id={STORE}&sku_id={SKU}",
                                headers={"Authorization": f"Bearer {admin}"}) as response:
                final = (await response.json())["items"][0]
    confirmed_per_s = outcomes["confirmed"] / race_s
    return {
        "buyers": BUYERS, "units": UNITS, "in_flight": IN_FLIGHT, **outcomes, "other_statuses": other_statuses, "oversold": max(0, outcomes["confirmed"] - UNITS),
        "final_available": final["available"], "safety_stock": safety,
        "rate_limited_retried": rate_limited["retried"], "race_s": round(race_s, 1), "login_s": round(login_s, 1), "login_retries": len(login_failures),
        "confirmed_orders_per_s": round(confirmed_per_s, 1),
        "sold_out_p50_ms": round(percentile(sold_out_latency, 50) * 1000, 1),
        "sold_out_p99_ms": round(percentile(sold_out_latency, 99) * 1000, 1),
        "raw_find_and_modify": raw,
        "ratio_confirmed_vs_raw_fam": round(confirmed_per_s / raw["ops_per_s"], 4),
        "ratio_all_answers_vs_raw_fam": round((BUYERS / race_s) / raw["ops_per_s"], 4),
    }
