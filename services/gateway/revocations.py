"""Sessions and accounts whose tokens the gateway no longer honours, as membership publishes them. Pure.

Membership records a revocation when a login ends (logout, a reused refresh token: the token's `sid`) and when
an account's earlier tokens must stop counting (password change or reset, disabled account, new roles: every
token of that `sub` issued before `not_before_ms`, read from its `iat_ms`, else `iat`). The gateway polls them and refuses such tokens even though
their signature and `exp` are fine. An entry is dropped once every token it could match has expired.
"""
from __future__ import annotations

from typing import Any

from libs.principal import Principal


class Revocations:
    def __init__(self) -> None:
        self._sessions: dict[str, int] = {}            # sid -> expires_at_ms
        self._subjects: dict[str, tuple[int, int]] = {}  # sub -> (not_before_ms, expires_at_ms)
        self.latest_ms = 0                             # the newest `at_ms` seen (the poll's cursor)

    def add(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self.latest_ms = max(self.latest_ms, int(item.get("at_ms") or 0))
            expires = int(item.get("expires_at_ms") or 0)
            if item.get("kind") == "session" and item.get("sid"):
                self._sessions[item["sid"]] = max(expires, self._sessions.get(item["sid"], 0))
            elif item.get("kind") == "subject" and item.get("subject"):
                before, _ = self._subjects.get(item["subject"], (0, 0))
                self._subjects[item["subject"]] = (max(before, int(item.get("not_before_ms") or 0)), expires)

    def prune(self, now_ms: int) -> None:
        self._sessions = {sid: until for sid, until in self._sessions.items() if until > now_ms}
        self._subjects = {sub: entry for sub, entry in self._subjects.items() if entry[1] > now_ms}

    def revoked(self, principal: Principal) -> bool:
        sid = principal.claims.get("sid")
        if isinstance(sid, str) and sid in self._sessions:
            return True
        entry = self._subjects.get(principal.subject)
        if entry is None:
            return False
        issued_ms = principal.claims.get("iat_ms")
        if not isinstance(issued_ms, (int, float)):
            issued = principal.claims.get("iat")
            issued_ms = issued * 1000 if isinstance(issued, (int, float)) else None
        return issued_ms is None or issued_ms < entry[0]

    def __len__(self) -> int:
        return len(self._sessions) + len(self._subjects)
