"""Split rules: versioned, each in force from its `effective_from` until a later version takes over."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

from libs.refusal import INVALID, Refusal
from services.settlement.domain.money import BPS


class RuleError(Refusal):
    """A split rule that cannot be used."""

    default_kind = INVALID

    def __init__(self, detail: str, code: str = "invalid-split-rule") -> None:
        super().__init__(code, detail)


FEE_KINDS = ("percent", "fixed")


@dataclass(frozen=True)
class FulfilmentFee:
    """What the fulfilling direct store earns: `bps` of each line's net, or a fixed `amount` per order."""
    kind: str = "percent"
    bps: int = 0
    amount: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FEE_KINDS:
            raise RuleError(f"fee kind must be one of {FEE_KINDS}, not {self.kind!r}")
        _check_bps("fee bps", self.bps)
        if self.amount < 0:
            raise RuleError("a fixed fee cannot be negative")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "bps": self.bps, "amount": self.amount}


def _check_bps(name: str, value: int) -> None:
    if not 0 <= value <= BPS:
        raise RuleError(f"{name} must be between 0 and {BPS} basis points, got {value}")


@dataclass(frozen=True)
class SplitRule:
    version: int
    effective_from: datetime
    ship_from_store_fee: FulfilmentFee = field(default_factory=lambda: FulfilmentFee("percent", bps=800))
    pickup_handling_fee: FulfilmentFee = field(default_factory=lambda: FulfilmentFee("fixed", amount=500))
    in_store_fee: FulfilmentFee = field(default_factory=lambda: FulfilmentFee("percent", bps=1000))
    staff_commission_bps: int = 300
    # A franchisee buys the goods it sells at wholesale = cost price marked up by this much.
    franchise_wholesale_markup_bps: int = 1000
    channel_fee_bps: Mapping[str, int] = field(default_factory=lambda: {"marketplace": 500})
    # Used only when the payment event does not carry the provider's actual fee; key "default" for the rest.
    payment_fee_bps: Mapping[str, int] = field(default_factory=lambda: {"default": 60})
    note: str = ""

    def __post_init__(self) -> None:
        if self.version < 1:
            raise RuleError("rule versions start at 1")
        if self.effective_from.tzinfo is None:
            raise RuleError("effective_from must carry a time zone")
        _check_bps("staff_commission_bps", self.staff_commission_bps)
        if not 0 <= self.franchise_wholesale_markup_bps <= 10 * BPS:
            raise RuleError("franchise_wholesale_markup_bps must be between 0 and 100000")
        for name, table in (("channel_fee_bps", self.channel_fee_bps), ("payment_fee_bps", self.payment_fee_bps)):
            for key, value in table.items():
                _check_bps(f"{name}[{key}]", value)
        object.__setattr__(self, "channel_fee_bps", MappingProxyType(dict(self.channel_fee_bps)))
        object.__setattr__(self, "payment_fee_bps", MappingProxyType(dict(self.payment_fee_bps)))

    def fulfilment_fee(self, fulfilment_type: str) -> FulfilmentFee:
        return {"ship": self.ship_from_store_fee, "pickup": self.pickup_handling_fee,
                "in_store": self.in_store_fee}.get(fulfilment_type, FulfilmentFee())

    def payment_bps(self, provider: str) -> int:
        return self.payment_fee_bps.get(provider, self.payment_fee_bps.get("default", 0))

    def to_dict(self) -> dict:
        return {"version": self.version, "effective_from": self.effective_from.astimezone(UTC),
                "ship_from_store_fee": self.ship_from_store_fee.to_dict(),
                "pickup_handling_fee": self.pickup_handling_fee.to_dict(),
                "in_store_fee": self.in_store_fee.to_dict(),
                "staff_commission_bps": self.staff_commission_bps,
                "franchise_wholesale_markup_bps": self.franchise_wholesale_markup_bps,
                "channel_fee_bps": dict(self.channel_fee_bps), "payment_fee_bps": dict(self.payment_fee_bps),
                "note": self.note}

    @classmethod
    def from_dict(cls, doc: Mapping) -> SplitRule:
        effective_from = doc["effective_from"]
        if isinstance(effective_from, str):
            effective_from = datetime.fromisoformat(effective_from.replace("Z", "+00:00"))
        if effective_from.tzinfo is None:  # stored values are UTC
            effective_from = effective_from.replace(tzinfo=UTC)
        return cls(version=int(doc["version"]), effective_from=effective_from,
                   ship_from_store_fee=FulfilmentFee(**doc["ship_from_store_fee"]),
                   pickup_handling_fee=FulfilmentFee(**doc["pickup_handling_fee"]),
                   in_store_fee=FulfilmentFee(**doc["in_store_fee"]),
                   staff_commission_bps=int(doc["staff_commission_bps"]),
                   franchise_wholesale_markup_bps=int(doc["franchise_wholesale_markup_bps"]),
                   channel_fee_bps=dict(doc["channel_fee_bps"]), payment_fee_bps=dict(doc["payment_fee_bps"]),
                   note=doc.get("note", ""))


def next_version(latest: SplitRule | None, changes: Mapping) -> SplitRule:
    """The next version: the latest rule's values with `changes` applied (RuleError when impossible)."""
    merged = {**(latest.to_dict() if latest else {}), **changes, "version": (latest.version if latest else 0) + 1}
    for name in ("ship_from_store_fee", "pickup_handling_fee", "in_store_fee"):
        merged[name] = FulfilmentFee(**merged[name]) if name in merged else FulfilmentFee()
    return SplitRule(**{key: value for key, value in merged.items() if key in SplitRule.__dataclass_fields__})


# The rule every fresh installation starts with, in force since long before any order.
DEFAULT_RULE = SplitRule(version=1, effective_from=datetime(2000, 1, 1, tzinfo=UTC), note="initial rule set")


def rule_in_force(rules: Iterable[SplitRule], at: datetime) -> SplitRule:
    """The rule in force at `at`: the latest effective_from not after `at`; the higher version on a tie."""
    candidates = [rule for rule in rules if rule.effective_from <= at]
    if not candidates:
        raise RuleError(f"no split rule is in force at {at.isoformat()}")
    return max(candidates, key=lambda rule: (rule.effective_from, rule.version))
