"""Gateway benchmark: the same authenticated GET through the gateway (JWT verified, rate limits and
metrics on) and straight to the backend, in the same run; and through nginx when nginx is installed."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

import aiohttp

from tests.support import free_port
from tests.bench.load import closed_loop
from tests.bench.suite_env import private_suite

PATH = "/catalog/products/prd_tee_classic"


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
        return result
