"""The split of a completed sale between HQ, channel, payment provider, store, franchisee and shop assistant.

Per line, on the line's net (what the customer paid for it):
- channel fee: `channel_fee_bps[channel]` of the net (e.g. marketplace commission) -> channel:<name>;
- payment fee: the provider's actual fee from the payment event (else `payment_fee_bps` of the order net,
  rounded half up), spread over the lines by net -> provider:<name>;
- assistant commission: `staff_commission_bps` of the net when the sale is attributed to a shop assistant
  (QR binding or selling in store) -> staff:<id>;
- fulfilling location: a franchise store's franchisee earns retail minus wholesale (net - cost x qty x
  (1 + markup), never below zero) -> franchisee:<id>; a direct store earns the fulfilment fee of the order's
  fulfilment type (percent of the net, or a fixed amount per order spread over the lines by net)
  -> store:<id>; a warehouse earns nothing;
- HQ: the rest (negative when the fees exceed the net).
Each line's shares are rounded with the largest-remainder rule (money.py) to add up to the line's net, so
an order's shares add up to its net amount and a returned line reverses exactly its own share.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction

from services.settlement.domain import accounts
from services.settlement.domain.money import BPS, allocate, rate_of, round_half_up, round_to_total
from services.settlement.domain.orders import LocationInfo, OrderFacts
from services.settlement.domain.rules import SplitRule


@dataclass(frozen=True)
class LineSplit:
    index: int
    sku_id: str
    qty: int
    net: int
    shares: tuple[tuple[str, int], ...]  # (account, fen), adding up to `net`

    def to_dict(self) -> dict:
        return {"index": self.index, "sku_id": self.sku_id, "qty": self.qty, "net": self.net,
                "shares": [{"account": account, "amount": amount} for account, amount in self.shares]}

    @classmethod
    def from_dict(cls, doc: dict) -> LineSplit:
        return cls(index=doc["index"], sku_id=doc["sku_id"], qty=doc["qty"], net=doc["net"],
                   shares=tuple((share["account"], share["amount"]) for share in doc["shares"]))


@dataclass(frozen=True)
class SaleSplit:
    """How one sale's net amount is shared among the parties, line by line, under one rule version."""

    order_id: str
    rule_version: int
    net_total: int
    lines: tuple[LineSplit, ...]

    def by_account(self) -> dict[str, int]:
        totals: dict[str, int] = defaultdict(int)
        for line in self.lines:
            for account, amount in line.shares:
                totals[account] += amount
        return dict(totals)


def payment_fee(order: OrderFacts, rule: SplitRule) -> int:
    if order.payment.fee is not None:
        return order.payment.fee
    return round_half_up(rate_of(order.net_total, rule.payment_bps(order.payment.provider)))


def _store_earning(location: LocationInfo | None) -> bool:
    return location is not None and location.kind == "store" and not _franchisee_of(location)


def _franchisee_of(location: LocationInfo | None) -> str | None:
    return location.franchisee_id if location is not None and location.ownership == "franchise" else None


def split_sale(order: OrderFacts, rule: SplitRule) -> SaleSplit:
    nets = [line.net for line in order.lines]
    fee_by_line = allocate(payment_fee(order, rule), nets)
    fulfilment_fee = rule.fulfilment_fee(order.fulfilment_type)
    # A fixed fulfilment fee is per order and per fulfilling direct store, spread over that store's lines.
    fixed_by_line = [0] * len(nets)
    if fulfilment_fee.kind == "fixed":
        stores = {line.location.id for line in order.lines if _store_earning(line.location)}
        for store_id in sorted(stores):
            indexes = [i for i, line in enumerate(order.lines) if _store_earning(line.location)
                       and line.location.id == store_id]
            for i, amount in zip(indexes, allocate(fulfilment_fee.amount, [nets[i] for i in indexes])):
                fixed_by_line[i] = amount
    channel_bps = rule.channel_fee_bps.get(order.channel, 0)

    lines = []
    for index, line in enumerate(order.lines):
        exact: list[tuple[str, Fraction]] = [
            (accounts.channel(order.channel), rate_of(line.net, channel_bps)),
            (accounts.provider(order.payment.provider), Fraction(fee_by_line[index])),
        ]
        if order.staff_id:
            exact.append((accounts.staff(order.staff_id), rate_of(line.net, rule.staff_commission_bps)))
        franchisee_id = _franchisee_of(line.location)
        if franchisee_id:
            wholesale = Fraction(line.cost_price * line.qty * (BPS + rule.franchise_wholesale_markup_bps), BPS)
            exact.append((accounts.franchisee(franchisee_id), max(Fraction(0), line.net - wholesale)))
        elif _store_earning(line.location):
            earned = rate_of(line.net, fulfilment_fee.bps) if fulfilment_fee.kind == "percent" \
                else Fraction(fixed_by_line[index])
            exact.append((accounts.store(line.location.id), earned))
        exact.append((accounts.HQ, line.net - sum(share for _, share in exact)))
        rounded = round_to_total([share for _, share in exact], line.net)
        totals: dict[str, int] = defaultdict(int)
        for (account, _), amount in zip(exact, rounded):
            totals[account] += amount
        shares = tuple((account, amount) for account, amount in totals.items() if amount != 0)
        lines.append(LineSplit(index=index, sku_id=line.sku_id, qty=line.qty, net=line.net, shares=shares))
    return SaleSplit(order_id=order.order_id, rule_version=rule.version, net_total=order.net_total,
                     lines=tuple(lines))


def share_of_units(line: LineSplit, units: int) -> dict[str, int]:
    """The share of the first `units` of a line: exact for the whole line, largest remainder otherwise.

    Used cumulatively (share of all units returned so far minus the share already reversed), so that
    returning a line in several parts reverses exactly the line's share once everything is back.
    """
    if not 0 <= units <= line.qty:
        raise ValueError(f"{units} units of a line of {line.qty}")
    if units == line.qty:
        return dict(line.shares)
    exact = [Fraction(amount * units, line.qty) for _, amount in line.shares]
    total = (line.net * units) // line.qty
    return {account: amount for (account, _), amount in zip(line.shares, round_to_total(exact, total))}


@dataclass(frozen=True)
class Reversal:
    units_by_line: dict[int, int]  # sale line index -> units returned by this refund
    by_account: dict[str, int]  # share reversed per account (positive: taken back from the party)
    unmatched: tuple[tuple[str, int], ...]  # (sku_id, qty) refunded beyond what was sold


def reverse_lines(sale: SaleSplit, refunded_before: dict[int, int], requested: list[tuple[str, int]] | None
                  ) -> Reversal:
    """The reversal of `requested` (sku_id, qty) returns, or of everything not yet returned when None."""
    remaining = {line.index: line.qty - refunded_before.get(line.index, 0) for line in sale.lines}
    units_by_line: dict[int, int] = defaultdict(int)
    unmatched = []
    if requested is None:
        requested = [(line.sku_id, remaining[line.index]) for line in sale.lines if remaining[line.index] > 0]
    for sku_id, qty in requested:
        for line in sale.lines:
            if line.sku_id != sku_id or qty == 0:
                continue
            take = min(qty, remaining[line.index])
            remaining[line.index] -= take
            units_by_line[line.index] += take
            qty -= take
        if qty:
            unmatched.append((sku_id, qty))
    by_account: dict[str, int] = defaultdict(int)
    for line in sale.lines:
        units = units_by_line.get(line.index, 0)
        if not units:
            continue
        before = refunded_before.get(line.index, 0)
        after = share_of_units(line, before + units)
        earlier = share_of_units(line, before)
        for account in after:
            by_account[account] += after[account] - earlier[account]
    return Reversal(units_by_line={k: v for k, v in units_by_line.items() if v},
                    by_account={k: v for k, v in by_account.items() if v}, unmatched=tuple(unmatched))
