"""`make bench`: run the benchmarks, write bench-results/results.json and summary.md, print the ratios.

Each figure is a ratio against a raw baseline measured in the same run on the same machine, so the
numbers compare across machines better than absolute rates do.
"""
from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.support import NxServer, delete_bus_namespace, new_namespace

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench-results"


def machine() -> str:
    cpus = os.cpu_count()
    try:
        mem_kb = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
        mem = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        mem = "?"
    return f"{platform.system()} {platform.machine()}, {cpus} cores, {mem}, Python {platform.python_version()}"


async def main(selected: list[str]) -> dict:
    from tests.bench import bus, flash_sale, gateway
    results: dict = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    external = os.environ.get("MONGO_URL")  # e.g. a real replica set; else a private nx-27017
    server = None if external else NxServer().start()
    mongo_url = external or server.url
    results["database"] = "MongoDB at MONGO_URL" if external else "nx-27017 (local wire server)"
    namespace = new_namespace()
    try:
        if not selected or "bus" in selected:
            started = time.perf_counter()
            results["bus"] = await bus.run(mongo_url, namespace)
            results["bus"]["seconds"] = round(time.perf_counter() - started, 1)
            print("bus", json.dumps(results["bus"]), flush=True)
        if not selected or "gateway" in selected:
            started = time.perf_counter()
            results["gateway"] = await gateway.run(mongo_url, namespace)
            results["gateway"]["seconds"] = round(time.perf_counter() - started, 1)
            print("gateway", json.dumps(results["gateway"]), flush=True)
        if not selected or "flash_sale" in selected:
            started = time.perf_counter()
            results["flash_sale"] = await flash_sale.run(mongo_url, namespace)
            results["flash_sale"]["seconds"] = round(time.perf_counter() - started, 1)
            print("flash_sale", json.dumps(results["flash_sale"]), flush=True)
    finally:
        await delete_bus_namespace(namespace)
        if server is not None:
            server.stop()
    return results


def summary(results: dict) -> str:
    lines = [f"# Benchmarks ({results['measured_at']})", "", f"Machine: {results['machine']}",
             f"Database: {results['database']}", ""]
    if "bus" in results:
        b = results["bus"]
        lines += ["## Bus: outbox -> relay -> consumer with inbox", "",
                  f"- pipeline: {b['pipeline_per_s']} events/s ({b['events']} events, {b['producers']} producers, "
                  f"outbox in the aggregate); with the transactional outbox: {b['pipeline_transactional_outbox_per_s']}/s",
                  f"- pipeline with producer and consumer in their own processes (as deployed): "
                  f"{b['pipeline_two_processes_per_s']} events/s, ratio vs pipelined raw publish "
                  f"**{b['ratio_two_processes_vs_raw_publish_pipelined']}**",
                  f"- consumer alone (batched inbox): {b['consumer_per_s']} events/s",
                  f"- raw aio-pika confirmed publish: pipelined {b['raw_publish_pipelined_per_s']}/s, sequential "
                  f"{b['raw_publish_sequential_per_s']}/s; raw consume (manual ack, prefetch 256): {b['raw_consume_per_s']}/s",
                  f"- **ratio vs pipelined raw publish: {b['ratio_vs_raw_publish_pipelined']}**; consumer vs raw consume: "
                  f"**{b['consumer_ratio_vs_raw_consume']}**", ""]
    if "gateway" in results:
        g = results["gateway"]
        lines += ["## Gateway (auth + rate limits + metrics on)", ""]
        for key, value in g.items():
            if key != "cheap_backend":
                lines.append(f"- {key}: {value}")
        cheap = g.get("cheap_backend")
        if cheap:
            rate = lambda name: cheap.get(name, {}).get("req_per_s", "-")  # noqa: E731
            lines += ["", "### Cheap backend (the proxy's own cost)", "",
                      f"- peak req/s: direct {rate('direct')}, through the gateway {rate('through_gateway')}, "
                      f"through nginx {rate('through_nginx')}",
                      f"- **gateway rate vs nginx: {cheap.get('gateway_rate_vs_nginx', cheap.get('nginx'))}** "
                      f"(target >= 0.5); vs direct: {cheap.get('ratio_vs_direct')}",
                      f"- gateway CPU per request: {cheap.get('gateway_cpu_ms_per_request')} ms",
                      f"- **p99 added at half the gateway's peak: gateway "
                      f"{cheap.get('gateway_p99_added_ms_at_half_load')} ms** (target <= 5), nginx "
                      f"{cheap.get('nginx_p99_added_ms_at_half_load', '-')} ms"]
            for name, figures in cheap.get("half_load", {}).items():
                lines.append(f"  - half load, {name}: {figures}")
        lines.append("")
    if "flash_sale" in results:
        f = results["flash_sale"]
        lines += ["## Flash sale through the gateway", ""]
        for key, value in f.items():
            lines.append(f"- {key}: {value}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    selected = sys.argv[1:]
    results = asyncio.run(main(selected))
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    text = summary(results)
    (OUT / "summary.md").write_text(text)
    print(text)
