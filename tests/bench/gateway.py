"""Gateway benchmark: the same authenticated GET through the gateway (JWT verified, rate limits and
metrics on) and straight to the backend, in the same run; and through nginx when nginx is installed.

Two backends: the real catalog (`catalog_*` figures), and a cheap one (`cheap_backend`): a tiny aiohttp app
whose answer costs almost nothing, so what is left is the proxy's own cost. For the cheap backend the figures
are the peak rate (closed loop) direct, through the gateway and through nginx, the gateway's CPU per request,
and the p99 each proxy adds over direct at half of the gateway's peak rate (open loop, fixed arrival rate;
a latency counts from the request's scheduled time, so a stall is not hidden by the generator waiting).
Targets: gateway rate >= 0.5 of nginx's, <= 5 ms p99 added at half load.

`BENCH_GATEWAY_ROOT=/path/to/other/checkout` runs the cheap-backend gateway from another tree (A/B).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.support import free_port
from tests.bench.load import closed_loop, percentile
from tests.bench.suite_env import private_suite

PATH = "/catalog/products/prd_tee_classic"
ROOT = Path(__file__).resolve().parents[2]
CHEAP_BODY = b'{"id": "prd_cheap", "name": "cheap"}'


def _cheap_backend_main(port: int) -> None:
    """`python -m tests.bench.gateway cheap-backend PORT`: the answer costs almost nothing."""
    from aiohttp import web
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover
        pass

    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=CHEAP_BODY, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def open_loop(url: str, headers_for, rate: float, seconds: float = 6.0) -> dict:
    """Requests at a fixed arrival rate; latency from each request's scheduled start."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def one(n: int, scheduled: float) -> None:
            try:
                async with http.get(url, headers=headers_for(n % 32, n)) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
            except aiohttp.ClientError:
                statuses[0] = statuses.get(0, 0) + 1
            latencies.append(time.perf_counter() - scheduled)

        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for n in range(total):
            scheduled = start + n / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, scheduled)))
        await asyncio.gather(*tasks)
    return {"rate": round(rate, 1), "requests": len(latencies), "p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "p99_ms": round(percentile(latencies, 99) * 1000, 2), "statuses": statuses}


async def _tokens(gateway: str, count: int) -> list[str]:
    async with aiohttp.ClientSession() as http:
        async def one(i: int) -> str:
            headers = {"X-Forwarded-For": f"10.9.{i // 250}.{i % 250 + 1}"}
            phone = f"+86137{i:08d}"
            async with http.post(gateway + "/api/v1/auth/member/otp", json={"phone": phone}, headers=headers) as r:
                code = (await r.json())["dev_code"]
            async with http.post(gateway + "/api/v1/auth/member/token", json={"phone": phone, "code": code},
                                 headers=headers) as r:
                body = await r.json()
                if "access_token" not in body:
                    raise RuntimeError(f"member login refused: {body}")
                return body["access_token"]
        return list(await asyncio.gather(*(one(i) for i in range(count))))


def _nginx(backend_port: int) -> tuple[subprocess.Popen, int, str] | None:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        return None
    port = free_port()
    folder = tempfile.mkdtemp(prefix="o2o-nginx-")
    conf = Path(folder) / "nginx.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {folder}/nginx.pid; error_log {folder}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off;
  upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port};
    location /api/v1/ {{ proxy_pass http://backend/; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
    process = subprocess.Popen([binary, "-c", str(conf), "-p", folder], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    return process, port, folder


async def _cheap_path(suite, headers) -> dict:
    """Direct, gateway and nginx in front of the same cheap backend, in the same run."""
    processes: list[subprocess.Popen] = []
    folder = None
    try:
        backend_port = free_port()
        processes.append(subprocess.Popen([sys.executable, "-m", "tests.bench.gateway", "cheap-backend",
                                           str(backend_port)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}))
        gateway_root = os.environ.get("BENCH_GATEWAY_ROOT", str(ROOT))
        gateway_port = free_port()
        env = {**suite.env("gateway"), "PYTHONPATH": gateway_root, "GATEWAY_PORT": str(gateway_port),
               "CATALOG_URL": f"http://127.0.0.1:{backend_port}"}
        gateway = subprocess.Popen([sys.executable, "-m", "services.gateway"], cwd=gateway_root, env=env,
                                   stdout=subprocess.DEVNULL)
        processes.append(gateway)
        await _wait_port(backend_port)
        await _wait_port(gateway_port)
        direct_url = f"http://127.0.0.1:{backend_port}{PATH}"
        gateway_url = f"http://127.0.0.1:{gateway_port}/api/v1{PATH}"
        await closed_loop(gateway_url, headers, seconds=2)  # warm-up (JWKS, pools)
        result: dict = {"gateway_root": gateway_root} if gateway_root != str(ROOT) else {}
        result["direct"] = await closed_loop(direct_url, headers)
        cpu_before = _cpu_s(gateway.pid)
        result["through_gateway"] = await closed_loop(gateway_url, headers)
        result["gateway_cpu_ms_per_request"] = round(
            (_cpu_s(gateway.pid) - cpu_before) * 1000 / max(1, result["through_gateway"]["requests"]), 3)
        result["ratio_vs_direct"] = round(result["through_gateway"]["req_per_s"] / result["direct"]["req_per_s"], 3)
        nginx = _nginx(backend_port)
        nginx_url = None
        if nginx is None:
            result["nginx"] = "not installed (apt-get install nginx-light to compare)"
        else:
            process, port, folder = nginx
            processes.append(process)
            await _wait_port(port)
            nginx_url = f"http://127.0.0.1:{port}/api/v1{PATH}"
            result["through_nginx"] = await closed_loop(nginx_url, headers)
            result["gateway_rate_vs_nginx"] = round(
                result["through_gateway"]["req_per_s"] / result["through_nginx"]["req_per_s"], 3)
        half = result["through_gateway"]["req_per_s"] / 2
        half_load = {"direct": await open_loop(direct_url, headers, half),
                     "through_gateway": await open_loop(gateway_url, headers, half)}
        if nginx_url is not None:
            half_load["through_nginx"] = await open_loop(nginx_url, headers, half)
        result["half_load"] = half_load
        result["gateway_p99_added_ms_at_half_load"] = round(
            half_load["through_gateway"]["p99_ms"] - half_load["direct"]["p99_ms"], 2)
        if nginx_url is not None:
            result["nginx_p99_added_ms_at_half_load"] = round(
                half_load["through_nginx"]["p99_ms"] - half_load["direct"]["p99_ms"], 2)
        return result
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


async def run(mongo_url: str, namespace: str) -> dict:
    async with private_suite(mongo_url, GATEWAY_RATE_PRINCIPAL_PER_S="100000", GATEWAY_RATE_PRINCIPAL_BURST="100000",
                             GATEWAY_RATE_IP_PER_S="100000", GATEWAY_RATE_IP_BURST="100000") as suite:
        gateway, backend = suite.url("gateway"), suite.url("catalog")
        tokens = await _tokens(gateway, 32)

        def headers(n: int, i: int) -> dict:
            return {"Authorization": f"Bearer {tokens[n % len(tokens)]}", "X-Forwarded-For": f"10.8.0.{n + 1}"}

        await closed_loop(gateway + "/api/v1" + PATH, headers, seconds=2)  # warm-up (JWKS, pools)
        direct = await closed_loop(backend + PATH, headers)
        through = await closed_loop(gateway + "/api/v1" + PATH, headers)
        result = {"path": PATH, "concurrency": 32, "backend_direct": direct, "through_gateway": through,
                  "ratio_vs_backend": round(through["req_per_s"] / direct["req_per_s"], 3)}
        nginx = _nginx(suite.ports["catalog"])
        if nginx is None:
            result["nginx"] = "not installed (apt-get install nginx to compare)"
        else:
            process, port, folder = nginx
            try:
                await asyncio.sleep(0.5)
                proxied = await closed_loop(f"http://127.0.0.1:{port}/api/v1" + PATH, headers)
                result["through_nginx"] = proxied
                result["ratio_vs_nginx"] = round(through["req_per_s"] / proxied["req_per_s"], 3)
            finally:
                process.terminate()
                shutil.rmtree(folder, ignore_errors=True)
        result["cheap_backend"] = await _cheap_path(suite, headers)
        return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["cheap-backend"]:
        _cheap_backend_main(int(sys.argv[2]))
