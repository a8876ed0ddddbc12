"""Journal accounts: one per party, named `<kind>:<id>`, plus the house accounts of HQ's books."""
from __future__ import annotations

HQ = "hq"
PAYMENT_CLEARING = "payment_clearing"  # captured money the payment provider still owes HQ
DEFERRED_REVENUE = "deferred_revenue"  # paid, not yet completed: not revenue yet, nobody's share yet
BANK = "bank"  # money leaving HQ in payouts
HOUSE_ACCOUNTS = (HQ, PAYMENT_CLEARING, DEFERRED_REVENUE, BANK)
PARTY_KINDS = ("store", "franchisee", "staff", "channel", "provider")
# Parties HQ pays out to; channels and payment providers keep their fees at source.
PAYABLE_KINDS = ("store", "franchisee", "staff")


def store(location_id: str) -> str:
    return f"store:{location_id}"


def franchisee(franchisee_id: str) -> str:
    return f"franchisee:{franchisee_id}"


def staff(staff_id: str) -> str:
    return f"staff:{staff_id}"


def channel(name: str) -> str:
    return f"channel:{name}"


def provider(name: str) -> str:
    return f"provider:{name}"


def party_of(account: str) -> tuple[str, str | None]:
    """(kind, id) of an account: ("store", "loc_x"), ("hq", None)."""
    kind, _, party_id = account.partition(":")
    return kind, party_id or None


def is_valid(account: str) -> bool:
    kind, party_id = party_of(account)
    if party_id is None:
        return account in HOUSE_ACCOUNTS
    return kind in PARTY_KINDS and 0 < len(party_id) <= 100 and "." not in party_id and "$" not in party_id
