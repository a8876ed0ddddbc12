"""A small closed-loop HTTP load generator (aiohttp): fixed concurrency for a fixed time."""
from __future__ import annotations

import asyncio
import time

import aiohttp


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def closed_loop(url: str, headers_for, seconds: float = 8.0, concurrency: int = 32) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        deadline = time.perf_counter() + seconds

        async def worker(n: int):
            i = 0
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with http.get(url, headers=headers_for(n, i)) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                latencies.append(time.perf_counter() - started)
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "req_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(percentile(latencies, 50) * 1000, 2), "p99_ms": round(percentile(latencies, 99) * 1000, 2),
            "statuses": statuses}
