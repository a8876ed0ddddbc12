"""Which upstream serves a public path: pure, so it is unit-tested without I/O."""
from __future__ import annotations

API_PREFIX = "/api/v1"

# First path segment after /api/v1 -> owning service.
SEGMENT_OWNERS = {
    "catalog": "catalog",
    "stock": "stock",
    "orders": "orders",
    "auth": "membership",
    "members": "membership",
    "membership": "membership",
    "notifications": "notifications",
    "settlement": "settlement",
}


def resolve(path: str) -> tuple[str, str] | None:
    """Map `/api/v1/<segment>/...` to (service, upstream path) or None when nothing serves it."""
    if not path.startswith(API_PREFIX + "/"):
        return None
    rest = path[len(API_PREFIX):]
    segment = rest.split("/", 2)[1]
    service = SEGMENT_OWNERS.get(segment)
    if service is None:
        return None
    return service, rest
