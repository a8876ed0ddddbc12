"""A short-lived cache of verified bearer tokens, so a client's burst of calls costs one signature check.

Keyed by the exact token string; an entry lives until the token's own `exp` or `ttl_s`, whichever is first,
so a key retired from the JWKS stops being honoured within `ttl_s` even for tokens seen before. Bounded in
size (least recently used dropped). Pure (the clock is injected).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from libs.auth import Principal


class VerifiedTokens:
    def __init__(self, ttl_s: float = 30.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, token: str) -> Principal | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        valid_until, principal = entry
        if self.clock() >= valid_until:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return principal

    def put(self, token: str, principal: Principal) -> None:
        if self.ttl_s <= 0:
            return
        now = self.clock()
        expires = principal.claims.get("exp")
        valid_until = now + self.ttl_s
        if isinstance(expires, (int, float)):
            valid_until = min(valid_until, float(expires))
        if valid_until <= now:
            return
        self._entries[token] = (valid_until, principal)
        self._entries.move_to_end(token)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
