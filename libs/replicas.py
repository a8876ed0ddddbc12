"""The replicas of one upstream service, and in which order to try them. Pure (the clock is injected), so the
balancing, skipping and recovery are unit-tested without I/O.

A service's URL setting (`<SERVICE>_URL`) may list several replicas separated by commas
(`http://127.0.0.1:8083,http://127.0.0.1:9083`). Calls are spread round-robin over the replicas that are up;
a replica that refused a connection (or that a health probe found down) is skipped for `down_s` seconds,
then tried again. When every replica is marked down they are all tried anyway, the least recently failed
first: marking is a hint to save a wasted connect, never a reason to refuse a call.
"""
from __future__ import annotations

import time
from collections.abc import Callable

# Methods a caller may send again to another replica after the first one broke off mid-request: repeating
# them cannot change the outcome. A POST is retried only when the connection was never made.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def split_urls(value: str) -> list[str]:
    """`"http://a:1, http://b:2/"` -> `["http://a:1", "http://b:2"]` (order kept, duplicates dropped)."""
    urls: list[str] = []
    for part in value.split(","):
        url = part.strip().rstrip("/")
        if url and url not in urls:
            urls.append(url)
    return urls


class ReplicaPool:
    def __init__(self, name: str, urls: list[str] | str, down_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.urls = split_urls(urls) if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError(f"no URL for {name}")
        self.down_s = down_s
        self.clock = clock
        self._next = 0
        self._down_until: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.urls)

    def is_down(self, url: str) -> bool:
        return self._down_until.get(url, 0.0) > self.clock()

    def candidates(self) -> list[str]:
        """Every replica, in the order to try them for one call: the up ones round-robin, then the down ones."""
        start = self._next % len(self.urls)
        self._next = (start + 1) % len(self.urls)
        rotated = self.urls[start:] + self.urls[:start]
        up = [url for url in rotated if not self.is_down(url)]
        down = sorted((url for url in rotated if self.is_down(url)), key=lambda url: self._down_until[url])
        return up + down

    def mark_down(self, url: str) -> None:
        self._down_until[url] = self.clock() + self.down_s

    def mark_up(self, url: str) -> None:
        self._down_until.pop(url, None)

    def states(self) -> dict[str, str]:
        return {url: "down" if self.is_down(url) else "up" for url in self.urls}
