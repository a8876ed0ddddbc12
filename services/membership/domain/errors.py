"""Domain errors: a stable code (the problem type) and the kind of failure (mapped to an HTTP status)."""
from __future__ import annotations

INVALID = "invalid"            # the request cannot be honoured as asked (422)
CONFLICT = "conflict"          # the state of things forbids it now (409)
UNAUTHENTICATED = "unauthenticated"  # bad credentials (401)
LIMITED = "limited"            # too many attempts (429)
NOT_FOUND = "not_found"        # (404)


class MembershipError(Exception):
    def __init__(self, kind: str, code: str, detail: str, **extensions) -> None:
        super().__init__(detail)
        self.kind = kind
        self.code = code
        self.detail = detail
        self.extensions = extensions
