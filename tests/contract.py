"""Contract helpers for tests that see real bus traffic (the end-to-end tests, integration tests).

    async with EventCapture(namespace) as capture:      # binds a private queue to every routing key
        ... drive the suite ...
    capture.assert_valid()                               # every captured event against the AsyncAPI document

`validate_event(envelope)` (re-exported from scripts/asyncapi.py) checks one envelope and its data.
"""
from __future__ import annotations

from collections import Counter

from tests.support import EventTap
from scripts.asyncapi import ContractViolation, validate_event

__all__ = ["ContractViolation", "EventCapture", "validate_event"]


class EventCapture(EventTap):
    """Collects every event published on `<namespace>o2o.events` while the block runs (an exclusive,
    auto-deleted queue bound to `#`, so it takes nothing away from the services' own queues)."""

    def __init__(self, namespace: str) -> None:
        super().__init__(namespace, "#")

    def of_type(self, event_type: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == event_type]

    def types_seen(self) -> Counter:
        return Counter(e.get("type") for e in self.events)

    def assert_valid(self) -> Counter:
        """Validate every captured event; raise one AssertionError listing every violation. Returns the
        count of events per type, so a caller can also assert which types were seen."""
        problems = [f"unparsable message body: {body[:200]!r}" for body in self.unparsable]
        for envelope in self.events:
            try:
                validate_event(envelope)
            except ContractViolation as exc:
                problems.append(str(exc))
        if problems:
            raise AssertionError(f"{len(problems)} of {len(self.events) + len(self.unparsable)} captured events "
                                 "violate deploy/asyncapi/asyncapi.yaml:\n  " + "\n  ".join(problems[:50]))
        return self.types_seen()
